from __future__ import annotations

import contextlib
import csv
import io
import logging
import json
import shlex
import shutil
import socket
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hiertune.cli import main
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.training.loop import run_trial
from hiertune.novelty.records import GridPoint, ScoreFigures
from hiertune.sweep.records import FrontPoint
from hiertune.training.losses import LOSS_PARTS
from hiertune.training.records import EpochMetrics
from hiertune.sweep.results import next_steps
from hiertune.data.synth import SynthConfig, write_synthetic

SHARED = Path(__file__).resolve().parents[2] / "shared"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HIERTUNE_CACHE_DIR", str(root))
    return root


def run_cli(*argv: str) -> CliResult:
    """Run the CLI in-process, capturing what it printed (for fixtures wider than a test, which
    cannot use capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own exits
            code = exc.code
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, cache_root: Path):
    """Run the CLI in-process and capture what it printed."""

    def run(*argv: str) -> CliResult:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own exits
            code = exc.code
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_image(path: Path, seed: int, size: int = 64, mode: str = "RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=95)
    return pixels


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A valid competition-format directory: 2 superclasses × 3 subclasses × 5 images, 4 test images."""
    return write_tiny_data(tmp_path / "data")


def write_tiny_data(root: Path) -> Path:
    root.mkdir()
    write_csv(root / "superclass_mapping.csv", ["index", "class"], [[0, "bird"], [1, "dog"], [2, "novel"]])
    write_csv(root / "subclass_mapping.csv", ["index", "class"],
              [[i, f"sub{i}"] for i in range(6)] + [[6, "novel"]])
    rows = []
    for n in range(30):
        sub = n % 6
        write_image(root / "train_images" / f"{n}.jpg", n)
        rows.append([f"{n}.jpg", sub // 3, sub, f"an image of sub{sub}"])
    write_csv(root / "train_data.csv", ["image", "superclass_index", "subclass_index", "description"], rows)
    for n in range(4):
        write_image(root / "test_images" / f"{n}.jpg", 100 + n)
    return root


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> Path:
    """One small exported model directory (a cnn trained one epoch on tiny data, 32 px input,
    msp thresholds), as export-best writes it, for the tests that hand predict a model: built in
    a few seconds, without Ray. Tests copy it before changing anything in it."""
    from hiertune.training.config import TrialConfig
    from hiertune.export.predictor import Thresholds, write_model_dir, write_thresholds
    from hiertune.models.registry import Heads

    root = tmp_path_factory.mktemp("exported")
    data = write_tiny_data(root / "data")
    space = root / "space.yaml"
    space.write_text(f"family: cnn\nfixed: {{epochs: 1, cnn_width: 8, batch_size: 32, image_size: 32, threads: 1, "
                     f"data: {data}, outliers: none}}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HIERTUNE_CACHE_DIR", str(root / "cache"))
        result = run_cli("train", str(space), "--out", str(root / "run"), "--json")
    assert result.code == 0, result.err[-3000:]
    cfg = TrialConfig.from_dict(json.loads((root / "run" / "config.json").read_text()))
    model = root / "model"
    write_model_dir(model, root / "run" / "checkpoint", cfg, Heads(2, 6, (0, 0, 0, 1, 1, 1), cfg.outlier_mode == "class"),
                    ["bird", "dog"], [f"sub{i}" for i in range(6)], "msp")
    write_thresholds(model, Thresholds("msp", 0.3, 0.2))
    return model


@pytest.fixture
def tiny_outliers(tmp_path: Path) -> Path:
    root = tmp_path / "outliers"
    for k in range(4):
        for n in range(3):
            write_image(root / f"class{k}" / f"{n}.jpg", 1000 + 10 * k + n)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# A smaller synthetic set than the default, for tests that train: same generator, same format.
SMALL = SynthConfig(train_per_subclass=10, test_per_subclass=2, novel_superclass_test_images=10,
                    outlier_per_class=12)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(root, SMALL)
    return root


# The smallest trial settings that still run every path (each family, one epoch): the one set for
# every test that trains; a test overrides what it is about.
FAST = dict(epochs=1, batch_size=32, backbone="resnet10t", layover_hidden=32, cnn_width=8, threads=1)


def trial_bundle(data: Path, cache: Path, image_size: int = 64):
    """A data folder loaded as a trial of the default config loads it (split, seen_shifted group)."""
    cfg = TrialConfig(data=str(data))
    return load_bundle(cfg.data, cfg.outliers, image_size, cfg.split_config(), cache, cfg.shift_config())


@pytest.fixture(scope="session")
def small_bundle(small_data, tmp_path_factory):
    return trial_bundle(small_data, tmp_path_factory.mktemp("bundle-cache"))


@dataclass
class Trained:
    cfg: TrialConfig
    bundle: object
    metrics: EpochMetrics  # its one epoch's, as reported
    checkpoint: Path  # a copy of the checkpoint it reported with them


@pytest.fixture(scope="session")
def trained_cnn(small_bundle, small_data, tmp_path_factory) -> Trained:
    """One real epoch of a small cnn on small_data: what the checkpoint and the epoch record are read from."""
    cfg = TrialConfig(data=str(small_data), family="cnn", **FAST)
    kept = tmp_path_factory.mktemp("ckpt") / "checkpoint"

    def report(metrics: EpochMetrics, directory: Path) -> None:
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(directory, kept)

    metrics = run_trial(cfg, small_bundle, report)
    return Trained(cfg, small_bundle, metrics, kept)


# Credentials a test hands to every AWS client through the standard chain; distinctive, so a
# test can prove they never reach a log, MLflow or the stored sweep.
AWS_KEY_ID = "AKIAHIERTUNETESTKEY7"
AWS_SECRET = "hiertune/TEST+secret/u2NLmQ8rVbX1yZ4kPq"


@dataclass
class S3:
    endpoint: str
    bucket: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback, in a thread of this process (so nothing outlives the tests)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3:
    """A fresh bucket, and the environment that boto3, pyarrow, MLflow and the Ray processes this
    test starts all read: endpoint, region and credentials, and nothing from ~/.aws or EC2."""
    import uuid

    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
                        "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config")}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    bucket = S3(s3_endpoint, f"hiertune-{uuid.uuid4().hex[:10]}")
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket


def space_file(tmp_path: Path, data: Path, samples: int, max_t: int, grace: int = 1, gpus: float = 0,
               epochs: tuple[int, ...] = (), search: str = "") -> Path:
    """A small cnn space on `data`; `epochs`: choices Optuna samples each trial's epochs from
    (default: every trial runs max_t); `search` adds lines to its `search:` section."""
    path = tmp_path / "space.yaml"
    fixed_epochs = "" if epochs else f"epochs: {max_t}, "
    sampled_epochs = f"\n  epochs: {{type: categorical, choices: {list(epochs)}}}" if epochs else ""
    path.write_text(f"""
family: cnn
fixed: {{{fixed_epochs}batch_size: 32, cnn_width: 8, threads: 1, data: {data}}}
search:{sampled_epochs}
  lr: {{type: float, low: 1.0e-4, high: 3.0e-2, log: true}}
  dropout: {{type: float, low: 0.0, high: 0.5}}
  outlier_fraction: {{type: float, low: 0.2, high: 1.0}}
  novelty_score: {{type: categorical, choices: [msp, energy]}}
{search}
tune: {{num_samples: {samples}, sampler: tpe, seed: 3}}
scheduler: {{max_t: {max_t}, grace_period: {grace}, reduction_factor: 2}}
resources: {{cpus_per_trial: 1, gpus_per_trial: {gpus}}}
""")
    return path


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def one_thread():
    """Torch on one thread: these tensors are tiny, and a thread pool only adds synchronisation,
    which on a busy machine costs more than the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class FinishedSweep:
    root: Path
    storage: Path
    name: str
    cache: Path
    data: Path
    summary: dict  # what `sweep --json` printed
    next_steps: list[list[str]]  # the "next:" lines of its console summary, split as a shell would
    ran: list[tuple[list[str], CliResult]]  # each hiertune step, as printed plus --json, and what it did
    failed_export: FailedExport

    @property
    def dir(self) -> Path:
        return self.storage / self.name

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.storage / 'mlflow.db'}"


@dataclass
class FailedExport:
    """export-best run again over the exports, failing after its staging directory holds the
    retrained model and the submission; a staging directory of a killed export lay beside them."""

    error: BaseException | None
    before: dict[str, bytes]  # export 1's files before
    after: dict[str, bytes]  # ... and after
    listing: list[str]  # what the export folder held after


@contextlib.contextmanager
def local_ray(monkeypatch: pytest.MonkeyPatch):
    """A local Ray for several commands of one test or fixture, which they join as hiertune joins any
    Ray its process has initialised (hiertune.sweep.run.ray_session): one start-up for all, and
    an export's retraining tasks find the workers of the previous export warm. Its workers get
    the environment hiertune gives those of a Ray it starts."""
    import ray

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # cpus_per_trial of the spaces here
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def one_ray(monkeypatch: pytest.MonkeyPatch):
    """A local Ray that every sweep and export of the test joins (local_ray)."""
    with local_ray(monkeypatch):
        yield


TAU_SUPER_RANGE = "  tau_super: {type: float, low: 0.5, high: 1.0}"


@pytest.fixture(scope="session")
def finished_sweep(small_data: Path, tmp_path_factory) -> FinishedSweep:
    """The suite's one finished sweep, whose facts the sweep, MLflow and export tests assert: 6
    trials of a small cnn under ASHA (max_t=3), each running the 1 or 3 epochs Optuna sampled (a
    trial shorter than max_t completes; ASHA stops others), asking a GPU share this machine has
    not; then every hiertune command its summary prints as a next step, run as printed (pareto,
    export-best --top 2, ls), then an export-best that fails midway. About a minute and a half on 2
    CPUs."""
    root = tmp_path_factory.mktemp("finished")
    storage, cache = root / "store", root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the printed steps name the storage unless ./sweeps holds the sweep
        mp.setenv("HIERTUNE_CACHE_DIR", str(cache))
        with local_ray(mp):
            # A τ_super range away from 0, which the grid, the front and MLflow must all keep to.
            space = space_file(root, small_data, samples=6, max_t=3, gpus=0.25, epochs=(1, 3), search=TAU_SUPER_RANGE)
            result = run_cli("sweep", str(space), "--name", "short", "--storage", str(storage), "--json")
            assert result.code == 0, result.err[-3000:]
            summary = last_json(result.out)
            text = next_steps(summary["name"], summary["storage"], summary["mlflow_uri"],
                              summary["importance"].get("study"))
            steps = [shlex.split(line.split("#")[0]) for line in text[text.index("next:"):].splitlines()[1:]]
            ran = []
            for argv in steps:
                if "hiertune" in argv:
                    args = argv[argv.index("hiertune") + 1:]
                    ran.append((args, run_cli(*args, "--json")))
            failed = _fail_an_export(storage, "short")
    return FinishedSweep(root, storage, "short", cache, small_data, summary, steps, ran, failed)


def _fail_an_export(storage: Path, name: str) -> FailedExport:
    """export-best of the recommended point again, with another calibration split (so a new export,
    not a reuse of export 1), failing after its staging directory holds the retrained model and the
    submission (as it logs them to MLflow), with a killed export's staging beside."""
    from hiertune.export import export as export_module

    exports = storage / name / "export"
    before = {p.name: p.read_bytes() for p in files_under(exports / "1")}
    (exports / ".1.killed.tmp").mkdir(parents=True)

    def broken(*args, **kwargs):
        raise OSError("disk full (test)")

    error = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_module, "_log_to_mlflow", broken)
        try:
            run_cli("export-best", name, "--storage", str(storage), "--calibration-fraction", "0.2")
        except OSError as exc:
            error = exc
    return FailedExport(error, before, {p.name: p.read_bytes() for p in files_under(exports / "1")},
                        sorted(p.name for p in exports.iterdir()))


def front_point(trial: str, seen: float, unseen: float, score: str = "msp", params: dict | None = None,
                by_score: dict | None = None, **figures) -> FrontPoint:
    """A front point for tests of the table, the plots and the picks: its accuracies are `seen`
    and `unseen` at both levels unless `figures` says otherwise; `by_score` is {score: {figure: v}}."""
    point = GridPoint.from_figures(score, {"tau_super": 0.9, "tau_sub": 0.8, "seen_super_acc": seen,
                                           "unseen_super_acc": unseen, "seen_sub_acc": seen, "unseen_sub_acc": unseen,
                                           "seen": seen, "unseen": unseen, **figures})
    return FrontPoint(trial, f"id-{trial}", "completed", 3, params or {}, point,
                      {s: ScoreFigures.from_figures(f) for s, f in (by_score or {}).items()})


def epoch(number: int = 1, seen: float = 0.5, unseen: float = 0.5, hypervolume: float = 0.4, score: str = "msp",
          front: tuple = ()) -> EpochMetrics:
    """An epoch's metrics whose recommended point is (`seen`, `unseen`) and whose own front is
    `front` (default: that point alone), for tests of what reads them (console, scheduler, MLflow)."""
    point = GridPoint.from_figures(score, {"tau_super": 0.5, "tau_sub": 0.5, "seen": seen, "unseen": unseen})
    return EpochMetrics(epoch=number, attempt=1, train_loss=1.0, train_parts=dict.fromkeys(LOSS_PARTS, 0.25),
                        val_loss=1.0, lr_now=1e-3, recommended=point, hypervolume=hypervolume,
                        front=tuple(front) or ((seen, unseen),), by_score={score: ScoreFigures.from_figures({})},
                        closed_seen_super_acc=0.5, closed_seen_sub_acc=0.5, photos={}, point=point, train_images=10,
                        outlier_images=2, train_images_per_s=100.0, epoch_seconds=0.1, eval_forward_seconds=0.1,
                        scorer_fit_seconds=0.1, full_evaluation=True, posthoc_seconds=0.1, features_computed=0,
                        feature_seconds=0.0)
