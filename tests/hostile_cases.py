"""Hostile and careless inputs, one registry: each case builds a real instance of the input,
names the CLI call that must refuse it, and carries its row of the README's rejected-input
table. tests/test_hostile.py drives every case through the CLI and checks that the README holds
every row; `python tests/hostile_cases.py` prints the rows, `--readme` writes them into README.md.

A case's `build(ctx)` writes what it needs under ctx.tmp and returns the CLI arguments; the
test then expects exit code 2, exactly one stderr line containing `expect`, nothing new (file
or folder) anywhere under ctx.tmp, and no planted secret in any output or file. A case with
`file_limit` runs the CLI under that `ulimit -f` (bytes), as on a disk that fills up.

Cases are grouped by class; a class's first case carries its README row, and each class is
closed wherever it can enter (every command, argument, file and variable that takes it).
"""

from __future__ import annotations

import io
import os
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from PIL import Image

# Planted wherever a case hands the CLI a credential: none may appear in any output.
URI_USER, URI_PASSWORD = "hiertune-user", "pa@ss:w0rd/Zq%7"
URI_PASSWORD_ENCODED = "pa%40ss%3Aw0rd%2FZq%257"
QUERY_TOKEN = "tok3n-hiertune-q9Xv"
# Passwords written raw with every character a URI parser stops at or refuses.
RAW_PASSWORDS = {"hash": "pw#Hash-7f3k", "question": "pw?Qm-9x2z", "space": "pw Space-4q8r",
                 "quote": "pw'Quo\"te-2m", "percent": "pw%zzPct-5t", "unicode": "pässwörd€-8j",
                 "slash-hash": "a/b#c?d@e:f-6y", "backslash": "pw\\Bk-1x9c"}
TOKEN_USER = "tokuser-6w1p"  # a user with no password: a token in the user's place
DB_PASSWORD = "db#pass-3n7v"


@dataclass
class Ctx:
    tmp: Path
    data: Path  # a valid competition-format directory (conftest's tiny_data)
    outliers: Path  # a valid class-per-folder outlier directory
    space: Path  # a valid cnn search space on `data`
    outside: Path  # a file outside every folder a case reads
    model: Path | None = None  # a small exported model directory (conftest's exported_model)
    hold: Callable[[Path], None] | None = None  # lock a path as a running export-best would
    setenv: Callable[[str, str], None] | None = None  # an environment variable for this case's CLI call


@dataclass(frozen=True)
class Case:
    id: str
    row: str  # README table: the input
    message: str  # README table: the message (example)
    expect: str  # what the one stderr line must contain
    build: Callable[[Ctx], list[str]]
    file_limit: int | None = None  # RLIMIT_FSIZE in bytes during the CLI call


def _space(ctx: Ctx, text: str) -> Path:
    path = ctx.tmp / "hostile" / "space.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _sweep(ctx: Ctx, *extra: str) -> list[str]:
    return ["sweep", str(ctx.space), "--storage", str(ctx.tmp / "sweeps"), *extra]


def _train_rows(ctx: Ctx, rows: list[str]) -> list[str]:
    """train_data.csv with these image names appended (labels of subclass 0)."""
    with (ctx.data / "train_data.csv").open("a", newline="") as f:
        for name in rows:
            quoted = '"' + name.replace('"', '""') + '"'
            f.write(f"{quoted},0,0,extra\n")
    return ["data", "inspect", str(ctx.data), "--outliers", "none"]


def _link_outside(link: Path, ctx: Ctx) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(ctx.outside)


def _png(path: Path, image: Image.Image, **kwargs) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    path.write_bytes(buffer.getvalue())


def _bomb(ctx: Ctx) -> list[str]:
    # 10000x10000 1-bit pixels compress to about 12 KB; decoded to RGB they would be 300 MB.
    _png(ctx.data / "test_images" / "7.png", Image.new("1", (10_000, 10_000)))
    return ["data", "inspect", str(ctx.data), "--outliers", "none"]


def _animation(ctx: Ctx) -> list[str]:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    _png(ctx.data / "train_images" / "0.jpg", frames[0])  # a PNG named .jpg: decoders go by content
    _png(ctx.data / "train_images" / "0.jpg", frames[0], save_all=True, append_images=frames[1:])
    return ["data", "inspect", str(ctx.data), "--outliers", "none"]


def _hard_link(ctx: Ctx) -> list[str]:
    os.link(ctx.data / "train_images" / "0.jpg", ctx.data / "train_images" / "0-again.jpg")
    return _train_rows(ctx, ["0-again.jpg"])


def _model_file(ctx: Ctx, name: str, edit: Callable[[str], str]) -> list[str]:
    model = _model(ctx)
    (model / name).write_text(edit((model / name).read_text()))
    return _predict(ctx, model)


def _model(ctx: Ctx) -> Path:
    model = ctx.tmp / "model"
    if not model.exists():
        shutil.copytree(ctx.model, model)
    return model


def _predict(ctx: Ctx, model: Path | None = None, images: Path | None = None, out: Path | None = None) -> list[str]:
    return ["predict", str(model or ctx.model), str(images or ctx.data / "test_images"), "-o",
            str(out or ctx.tmp / "p.csv")]


def _model_json(ctx: Ctx, name: str, edit: Callable[[dict], object]) -> list[str]:
    import json

    def change(text: str) -> str:
        raw = json.loads(text)
        edit(raw)
        return json.dumps(raw)

    return _model_file(ctx, name, change)


def _ensemble(ctx: Ctx, edit: Callable[[dict], object]) -> list[str]:
    """An ensemble directory of one member (the small exported model) whose ensemble.json,
    valid as written here, is then changed by `edit`."""
    import json

    root = ctx.tmp / "ensemble"
    shutil.copytree(ctx.model, root / "members" / "1")
    raw = {"members": [{"dir": "members/1", "weight": 1}], "score": "msp", "thr_super": 0.3, "thr_sub": 0.2}
    edit(raw)
    (root / "ensemble.json").write_text(json.dumps(raw))
    return _predict(ctx, root)


def _model_tensors(ctx: Ctx, name: str, edit: Callable[[dict], object]) -> list[str]:
    from safetensors.torch import load_file, save_file

    model = _model(ctx)
    tensors = load_file(str(model / name))
    edit(tensors)
    save_file(tensors, str(model / name))
    return _predict(ctx, model)


def _first_float(tensors: dict, value: float) -> None:
    key = next(k for k, t in sorted(tensors.items()) if t.is_floating_point() and t.numel() > 1)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = value


def _overflow(tensors: dict) -> None:
    """Finite linear weights whose products overflow float32 on the way to the logits."""
    for key in [k for k, t in tensors.items() if t.ndim == 2]:
        tensors[key] = tensors[key] * 1e30


def _pictures(ctx: Ctx, *names: str) -> Path:
    """A copy of the test images with these extra files (copies of an image) among them."""
    pics = ctx.tmp / "pics"
    shutil.copytree(ctx.data / "test_images", pics)
    for name in names:
        shutil.copy(ctx.data / "test_images" / "0.jpg", pics / name)
    return pics


def _mlflow(ctx: Ctx, uri: str) -> list[str]:
    return _sweep(ctx, "--mlflow-uri", uri)


def _pretrained(ctx: Ctx, weights: Path) -> list[str]:
    return ["train", str(_space(ctx, f"family: dualhead\nfixed: {{epochs: 1, backbone: resnet10t, image_size: 32, "
                                     f"data: {ctx.data}, outliers: none, pretrained: {weights}}}\n")),
            "--out", str(ctx.tmp / "run")]


def _weights(ctx: Ctx, backbone: str, edit: Callable[[dict], object] | None = None) -> Path:
    import timm
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in timm.create_model(backbone, pretrained=False).state_dict().items()}
    if edit is not None:
        edit(tensors)
    path = ctx.tmp / f"{backbone}.safetensors"
    save_file(tensors, str(path))
    return path


def _nested_json(ctx: Ctx, name: str) -> list[str]:
    model = _model(ctx)
    (model / name).write_text("[" * 100_000 + "]" * 100_000)
    return _predict(ctx, model)


def _sweep_dir(ctx: Ctx, checkpoint: str | None = None, trials: str | None = None, meta: str | None = None) -> Path:
    """A finished sweep's own files, as a sweep writes them, under ctx.tmp/sweeps/done."""
    import json

    folder = ctx.tmp / "sweeps" / "done"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(meta if meta is not None else json.dumps(
        {"space": "space.yaml", "family": "cnn", "sampled_thresholds": False}))
    record = {"trial_id": "t1", "name": "trial-00", "status": "completed", "epochs": 1, "params": {},
              "checkpoint": checkpoint, "metrics": {}, "error": None, "config": {}}
    (folder / "trials.json").write_text(trials if trials is not None else json.dumps([record]))
    return folder


def _posthoc(ctx: Ctx, meta: str) -> None:
    """A sweep whose one checkpoint, inside it, holds a post-hoc file with this `meta` record."""
    import numpy as np

    checkpoint = ctx.tmp / "sweeps" / "done" / "tune" / "checkpoint_000000"
    _sweep_dir(ctx, str(checkpoint))
    checkpoint.mkdir(parents=True)
    np.savez(checkpoint / "posthoc.npz", meta=np.array(meta))


def _posthoc_out_of_range(ctx: Ctx) -> None:
    """A post-hoc file that loads, its arrays of the right shapes, with an accuracy of 1.5."""
    import json

    import numpy as np

    _posthoc(ctx, json.dumps({"scores": ["msp"], "counts": {}, "skipped": {}, "shifted_weight": 0.0}))
    path = ctx.tmp / "sweeps" / "done" / "tune" / "checkpoint_000000" / "posthoc.npz"
    s, t = 1, 2  # scores, taus per level
    arrays = {"tau_super": np.zeros(t), "tau_sub": np.zeros(t), "thr_super": np.zeros((s, t)),
              "thr_sub": np.zeros((s, t)), "grid": np.full((s, t, t, 4), 1.5), "threshold_free": np.zeros((s, 2, 3)),
              "accept_super": np.zeros((s, t)), "accept_sub": np.zeros((s, t)), "group_acc": np.zeros((s, t, t, 4, 2)),
              "group_auroc": np.zeros((s, 2)), "accept_shifted": np.zeros((s, t, t)),
              "accept_shifted_super": np.zeros((s, t)), "accept_shifted_sub": np.zeros((s, t))}
    np.savez(path, meta=np.load(path)["meta"], **arrays)


def _shifted(ctx: Ctx, edit: Callable[[Path], object]) -> list[str]:
    shifted = ctx.tmp / "shifted"
    shutil.copytree(ctx.data, shifted)
    edit(shifted)
    return ["train", str(ctx.space), "--shifted-data", str(shifted), "--out", str(ctx.tmp / "run")]


def _replace_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _warm_cache(ctx: Ctx, cache: Path) -> None:
    """The test images decoded into `cache` beforehand, so that predict writes only its CSV."""
    from hiertune.data.cache import load_images
    from hiertune.data.images import list_image_files

    folder = ctx.data / "test_images"
    load_images(folder, list_image_files(folder), 64, cache)


UNWRITABLE = Path("/proc/sys")  # not writable by anyone, root included (os.access says so)


def _other_family(text: str) -> str:
    import json

    raw = json.loads(text)
    raw["trial"] = {**raw["trial"], "family": "dualhead", "backbone": "resnet18"}
    return json.dumps(raw)


def _heads_mismatch(text: str) -> str:
    import json

    raw = json.loads(text)
    raw["heads"]["sub_to_super"] = raw["heads"]["sub_to_super"][:-1]
    return json.dumps(raw)


def _no_input(text: str) -> str:
    import json

    raw = json.loads(text)
    raw["input"] = {**raw["input"], "mean": "imagenet"}  # the pipeline predict applies, unreadable
    return json.dumps(raw)


def _export_running(ctx: Ctx) -> list[str]:
    (ctx.tmp / "sweeps" / "busy").mkdir(parents=True)
    ctx.hold(ctx.tmp / "sweeps" / "busy")
    return ["export-best", "busy", "--storage", str(ctx.tmp / "sweeps")]


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, n in zip("abcdefgh", "bcdefghi"))  # 9^9 = 387 million leaves from 300 bytes

CASES = [
    # names that become paths
    Case("name-parent", "a sweep name that is a path (`../x`, `/abs`, `a/b`), for sweep, pareto and export-best",
         "`--name '../elsewhere': must be a plain name, not a path (no '/' or '\\')`",
         "must be a plain name, not a path", lambda c: _sweep(c, "--name", "../elsewhere")),
    Case("name-absolute", "", "", "must be a plain name, not a path", lambda c: _sweep(c, "--name", str(c.tmp / "abs"))),
    Case("name-pareto", "", "", "must be a plain name, not a path",
         lambda c: ["pareto", "../elsewhere", "--storage", str(c.tmp / "sweeps")]),
    Case("name-export", "", "", "must be a plain name, not a path",
         lambda c: ["export-best", "a/b", "--storage", str(c.tmp / "sweeps")]),
    Case("name-dot", "a sweep name that is empty, `.`, `..` or hidden", "`--name '..': must not start with '.'`",
         "must not start with '.'", lambda c: _sweep(c, "--name", "..")),
    Case("name-empty", "", "", "must not be empty", lambda c: _sweep(c, "--name", " ")),
    Case("name-nul", "a sweep name with a control character (NUL, newline)",
         "`--name 'a\\x00b': must not contain control characters (NUL, newline, …)`",
         "must not contain control characters", lambda c: _sweep(c, "--name", "a\x00b")),
    Case("link-test-images", "a symlink in `test_images/` or an outlier folder pointing outside",
         "`DIR/test_images: image name '9.jpg' resolves outside test_images/`", "resolves outside test_images/",
         lambda c: (_link_outside(c.data / "test_images" / "9.jpg", c),
                    ["data", "inspect", str(c.data), "--outliers", "none"])[1]),
    Case("link-outlier-file", "", "", "resolves outside outliers/",
         lambda c: (_link_outside(c.outliers / "class0" / "9.jpg", c),
                    ["data", "inspect", str(c.data), "--outliers", str(c.outliers)])[1]),
    Case("link-outlier-class", "", "", "resolves outside outliers/",
         lambda c: (shutil.copytree(c.outliers / "class1", c.tmp / "elsewhere"),
                    (c.outliers / "class9").symlink_to(c.tmp / "elsewhere"),
                    ["data", "inspect", str(c.data), "--outliers", str(c.outliers)])[2]),
    # labels and images that disagree
    Case("labels-dot-slash", "two rows naming one file (`./a.jpg` and `a.jpg`, names differing only in case or "
         "Unicode form)", "`train_data.csv line 32: image './0.jpg' and '0.jpg' (line 2) name one file (they differ "
         "only in case, './' or Unicode form)`", "name one file", lambda c: _train_rows(c, ["./0.jpg"])),
    Case("labels-case", "", "", "name one file",
         lambda c: (shutil.copy(c.data / "train_images" / "1.jpg", c.data / "train_images" / "1.JPG"),
                    _train_rows(c, ["1.JPG"]))[1]),
    Case("labels-unicode", "", "", "name one file",
         lambda c: (shutil.copy(c.data / "train_images" / "2.jpg", c.data / "train_images" / unicodedata.normalize(
             "NFC", "é.jpg")), shutil.copy(c.data / "train_images" / "2.jpg", c.data / "train_images" /
                                           unicodedata.normalize("NFD", "é.jpg")),
                    _train_rows(c, [unicodedata.normalize("NFC", "é.jpg"), unicodedata.normalize("NFD", "é.jpg")]))[2]),
    Case("labels-hard-link", "two rows naming one file through a link", "`train_data.csv line 32: image '0-again.jpg' "
         "is the same file as '0.jpg' (train_data.csv line 2)`", "is the same file as", _hard_link),
    Case("labels-nul", "an image name with a control character (NUL, newline)",
         "`train_data.csv line 32: image name '0\\x00.jpg' contains a control character (NUL, newline, …)`",
         "contains a control character", lambda c: _train_rows(c, ["0\x00.jpg"])),
    Case("labels-newline", "", "", "contains a control character", lambda c: _train_rows(c, ["0\n.jpg"])),
    Case("labels-bom", "", "", "contains a control character", lambda c: _train_rows(c, ["\ufeff0.jpg"])),
    Case("labels-trailing-space", "", "", "has surrounding spaces", lambda c: _train_rows(c, ["0.jpg "])),
    Case("name-zero-width", "", "", "must not contain control characters", lambda c: _sweep(c, "--name", "a\u200bb")),
    # images that decode to something else than they declare
    Case("image-bomb", "an image declaring more than 50 megapixels (a 12 KB decompression bomb)",
         "`test_images/7.png: 10000x10000 pixels exceeds the 50,000,000-pixel limit (refused before decoding)`",
         "exceeds the 50,000,000-pixel limit", _bomb),
    Case("image-animation", "an animated image (APNG, WebP, GIF frames)",
         "`train_data.csv line 2: train_images/0.jpg: an animation of 2 frames, not one image`",
         "an animation of 2 frames", _animation),
    # YAML and settings
    Case("yaml-aliases", "YAML aliases (a few hundred bytes of nested aliases expand to gigabytes)",
         "`space.yaml: malformed YAML at line 2, column 8: YAML aliases (*a) are not supported; write the value out`",
         "YAML aliases (*a) are not supported", lambda c: ["train", str(_space(c, LAUGHS))]),
    Case("yaml-set-aliases", "", "", "not a valid YAML scalar", lambda c: ["train", str(c.space), "--set",
                                                                          "lr=[&a 1, *a]"]),
    Case("when-later", "a `when:` condition on a parameter declared later, or on a value it never takes",
         "`space.yaml: search.unfreeze_depth.when: 'finetune' is not sampled before unfreeze_depth (declare it "
         "earlier, and not post-hoc)`", "is not sampled before unfreeze_depth",
         lambda c: ["train", str(_space(c, "family: dualhead\nsearch:\n"
                                        "  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [partial]}}\n"
                                        "  finetune: {type: categorical, choices: [full, partial]}\n"))]),
    Case("when-choice", "", "", "finetune can never be 'gradual'",
         lambda c: ["train", str(_space(c, "family: dualhead\nsearch:\n"
                                        "  finetune: {type: categorical, choices: [full, partial]}\n"
                                        "  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [gradual]}}\n"))]),
    Case("when-unknown", "", "", "is neither searched nor fixed",
         lambda c: ["train", str(_space(c, "family: dualhead\nsearch:\n"
                                        "  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [partial]}}\n"))]),
    Case("set-inf", "a non-finite number (`--set lr=.inf`, `weight_decay: .nan`)",
         "`space.yaml: lr must be a finite number, got inf`", "lr must be a finite number",
         lambda c: ["train", str(c.space), "--set", "lr=.inf"]),
    Case("set-nan", "", "", "weight_decay must be a finite number",
         lambda c: ["train", str(c.space), "--set", "weight_decay=.nan"]),
    Case("space-inf", "", "", "high must be a finite number",
         lambda c: ["train", str(_space(c, "family: cnn\nsearch:\n  lr: {type: float, low: 0.001, high: .inf}\n"))]),
    # places to write
    Case("storage-file", "`--storage` or `train --out` that is a file, or not writable",
         "`--storage PATH: is not a folder`", "is not a folder",
         lambda c: (c.outside.parent.mkdir(exist_ok=True), _sweep(c, "--storage", str(c.outside)))[1]),
    Case("storage-under-file", "", "", "is not a folder",
         lambda c: ["pareto", "x", "--storage", str(c.outside / "sweeps")]),
    Case("train-out-file", "", "", "is not a folder", lambda c: ["train", str(c.space), "--out", str(c.outside)]),
    Case("predict-out-dir", "`predict -o` an existing folder", "`-o PATH: is a folder`", "is a folder",
         lambda c: ["predict", str(c.tmp / "no-model"), str(c.data / "test_images"), "-o", str(c.data)]),
    Case("train-weights-missing", "", "", "pretrained weights file not found",
         lambda c: ["train", str(_space(c, f"family: dualhead\nfixed: {{epochs: 1, data: {c.data}, outliers: none, "
                                        f"pretrained: {c.tmp / 'missing.safetensors'}}}\n")),
                    "--out", str(c.tmp / "run")]),
    Case("train-weights-hostile", "`hiertune train` with a weights file that does not load (nothing written)",
         "`pretrained weights file PATH does not fit backbone 'resnet18': …`", "does not fit backbone 'resnet18'",
         lambda c: ((c.tmp / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk"),
                    ["train", str(_space(c, f"family: dualhead\nfixed: {{epochs: 1, data: {c.data}, outliers: none, "
                                         f"pretrained: {c.tmp / 'w.safetensors'}}}\n")),
                     "--out", str(c.tmp / "run")])[1]),
    Case("export-concurrent", "a second `export-best` of a sweep while one runs",
         "`export-best … is already running (it holds …); wait for it to finish`",
         "is already running", _export_running),
    # credentials
    Case("mlflow-query-token", "an MLflow URI with a credential in its query string",
         "`--mlflow-uri http://…/?token=***: a credential in the query string is not supported (…)`",
         "a credential in the query string is not supported",
         lambda c: _sweep(c, "--mlflow-uri", f"http://127.0.0.1:1/?token={QUERY_TOKEN}")),
    Case("mlflow-unreachable", "an MLflow server that cannot be reached (its credentials never shown)",
         "`MLflow store http://127.0.0.1:1: API request to … failed with exception HTTPConnectionPool(…)`",
         "MLflow store http://127.0.0.1:1: API request",
         lambda c: _sweep(c, "--mlflow-uri", f"http://{URI_USER}:{URI_PASSWORD_ENCODED}@127.0.0.1:1")),
    Case("mlflow-unreachable-raw", "", "", "MLflow store http://127.0.0.1:1: API request",
         lambda c: _sweep(c, "--mlflow-uri", f"http://{URI_USER}:{URI_PASSWORD}@127.0.0.1:1")),
    # an exported model that lies (slow: needs a real export)
    Case("model-nan", "an exported `thresholds.json` with NaN or +inf, or an unknown score",
         "`PATH/thresholds.json: thr_super must be a number or -inf, got 'nan'`", "thr_super must be a number",
         lambda c: _model_file(c, "thresholds.json", lambda t: t.replace('"thr_super": ', '"thr_super": "nan", "x":', 1))),
    Case("model-inf", "", "", "thr_sub must be a number",
         lambda c: _model_file(c, "thresholds.json", lambda t: t.replace('"thr_sub": ', '"thr_sub": Infinity, "x":', 1))),
    Case("model-score", "", "", "unknown novelty score 'odin'",
         lambda c: _model_file(c, "thresholds.json", lambda t: t.replace('"score": ', '"score": "odin", "x":', 1))),
    Case("model-family", "an exported `config.json` naming another model than its weights",
         "`PATH/model.safetensors: these weights are not a dualhead model with backbone resnet18 and 2/6 classes, "
         "which config.json describes (…)`", "these weights are not a dualhead model",
         lambda c: _model_file(c, "config.json", _other_family)),
    Case("model-heads", "", "", "heads.sub_to_super must list", lambda c: _model_file(c, "config.json", _heads_mismatch)),
    Case("model-input", "", "", "no usable input pipeline",
         lambda c: _model_file(c, "config.json", _no_input)),
    Case("ensemble-outside", "an exported `ensemble.json` that is damaged: a member outside `members/` or missing, "
         "a weight ≤ 0, no members, a feature score, a NaN threshold",
         "`PATH/ensemble.json: not an ensemble (needs members: a list of {dir: members/<n>, weight > 0})`",
         "not an ensemble", lambda c: _ensemble(c, lambda e: e["members"][0].update(dir="../elsewhere"))),
    Case("ensemble-missing-member", "", "", "no such model directory",
         lambda c: _ensemble(c, lambda e: e["members"].append({"dir": "members/2", "weight": 1}))),
    Case("ensemble-weight", "", "", "not an ensemble", lambda c: _ensemble(c, lambda e: e["members"][0].update(weight=0))),
    Case("ensemble-empty", "", "", "not an ensemble", lambda c: _ensemble(c, lambda e: e.update(members=[]))),
    Case("ensemble-score", "", "", "an ensemble scores with",
         lambda c: _ensemble(c, lambda e: e.update(score="mahalanobis", thr_super=-1.0, thr_sub=-1.0))),
    Case("ensemble-nan", "", "", "thr_sub must be a number", lambda c: _ensemble(c, lambda e: e.update(thr_sub="nan"))),
    Case("model-views", "test-time views that are not `flip` or `zoom`, or repeated: `export-best --views`, an "
         "exported `thresholds.json` or `ensemble.json`", "`--views: test-time views must be distinct names among "
         "flip, zoom, got ['mirror']`", "--views: test-time views must be distinct names",
         lambda c: ["export-best", "anything", "--storage", str(c.tmp / "sweeps"), "--views", "mirror"]),
    Case("model-views-file", "", "", "thresholds.json: test-time views must be distinct names",
         lambda c: _model_json(c, "thresholds.json", lambda t: t.update(views=["flip", "flip"]))),
    Case("ensemble-views", "", "", "ensemble.json: test-time views must be distinct names",
         lambda c: _ensemble(c, lambda e: e.update(views="flip"))),
    Case("predict-link", "", "", "resolves outside",
         lambda c: (shutil.copytree(c.data / "test_images", c.tmp / "pics"),
                    _link_outside(c.tmp / "pics" / "8.jpg", c),
                    ["predict", str(c.model), str(c.tmp / "pics"), "-o", str(c.tmp / "p.csv")])[2]),
    # credentials in every spelling a URI parser accepts or refuses, wherever a URI enters
    Case("mlflow-raw-hash", "a password written raw with `#`, `?`, a space, a quote, `%`, `\\` or non-ASCII "
         "(`http://u:pa#ss@host`), in `--mlflow-uri`, `--set mlflow.tracking_uri=`, a space file or `--data`",
         "`MLflow store http://127.0.0.1:1: API request to … failed with exception HTTPConnectionPool(…)`",
         "MLflow store http://127.0.0.1:1: API request",
         lambda c: _mlflow(c, f"http://u:{RAW_PASSWORDS['hash']}@127.0.0.1:1")),
    *[Case(f"mlflow-raw-{kind}", "", "", "MLflow store http://127.0.0.1:1: API request",
           lambda c, pw=pw: _mlflow(c, f"http://u:{pw}@127.0.0.1:1"))
      for kind, pw in RAW_PASSWORDS.items() if kind != "hash"],
    Case("mlflow-https-raw", "", "", "MLflow store https://127.0.0.1:1/: API request",
         lambda c: _mlflow(c, f"https://u:{RAW_PASSWORDS['hash']}@127.0.0.1:1/")),
    Case("mlflow-ipv6-raw", "", "", "MLflow store http://[::1]:1: API request",
         lambda c: _mlflow(c, f"http://u:{RAW_PASSWORDS['question']}@[::1]:1")),
    Case("mlflow-no-user", "", "", "MLflow store http://127.0.0.1:1: API request",
         lambda c: _mlflow(c, f"http://:{RAW_PASSWORDS['space']}@127.0.0.1:1")),
    Case("mlflow-token-user", "", "", "MLflow store http://127.0.0.1:1: API request",
         lambda c: _mlflow(c, f"http://{TOKEN_USER}@127.0.0.1:1")),
    Case("mlflow-set-override", "", "", "MLflow store http://127.0.0.1:1: API request",
         lambda c: _sweep(c, "--set", f"mlflow.tracking_uri=http://u:{RAW_PASSWORDS['quote']}@127.0.0.1:1")),
    Case("mlflow-space-file", "", "", "MLflow store http://127.0.0.1:1: API request",
         lambda c: ["sweep", str(_space(c, c.space.read_text() + "mlflow: {tracking_uri: 'http://u:"
                                        + RAW_PASSWORDS["slash-hash"] + "@127.0.0.1:1'}\n")),
                    "--storage", str(c.tmp / "sweeps")]),
    Case("mlflow-query-password", "", "", "a credential in the query string is not supported",
         lambda c: _mlflow(c, f"http://127.0.0.1:1/?x=1&password={QUERY_TOKEN}")),
    Case("data-uri-password", "", "", "data directory not found",
         lambda c: ["train", str(c.space), "--data", f"http://u:{RAW_PASSWORDS['percent']}@host/data"]),
    Case("storage-s3-password", "an `s3://` URI with `user:password@` before the bucket",
         "`s3://***@bucket/x/…: the part before the first '/' is not a bucket name (an S3 URI holds no user:password@: …)`",
         "is not a bucket name", lambda c: _sweep(c, "--storage", f"s3://AKIAX:{RAW_PASSWORDS['unicode']}@bucket/x")),
    Case("mlflow-postgres-driver", "a database MLflow store without its driver (`postgresql://`, `mysql://`)",
         "`MLflow store postgresql://***@127.0.0.1:1/db: its database driver is not installed (No module named …); "
         "install it or use sqlite:///PATH`", "its database driver is not installed",
         lambda c: _mlflow(c, f"postgresql://u:{DB_PASSWORD}@127.0.0.1:1/db")),
    Case("mlflow-mysql-driver", "", "", "its database driver is not installed",
         lambda c: _mlflow(c, f"mysql://u:{DB_PASSWORD}@127.0.0.1:1/db")),
    Case("mlflow-file-store", "a `file://` or unknown-scheme MLflow store",
         "`MLflow store file:///…/mlruns: The filesystem tracking backend (e.g., './mlruns') is in maintenance mode …`",
         "MLflow store file://", lambda c: _mlflow(c, (c.tmp / "mlruns").as_uri())),
    Case("mlflow-unknown-scheme", "", "", "MLflow store foo://***@host/x:",
         lambda c: _mlflow(c, f"foo://u:{DB_PASSWORD}@host/x")),
    Case("mlflow-sqlite-unwritable", "", "", "MLflow store /proc/sys/m.db: /proc/sys is not writable",
         lambda c: _mlflow(c, f"sqlite:///{UNWRITABLE / 'm.db'}")),
    # pretrained weights that are another model's, or not weights
    Case("pretrained-other-model", "`--set pretrained=FILE` with another model's weights (resnet14t's for resnet10t), "
         "other shapes, or NaN",
         "`pretrained weights file PATH does not fit backbone 'resnet10t': 30 tensors of the file have no place in it "
         "(first: …); another model's weights?`", "tensors of the file have no place in it",
         lambda c: _pretrained(c, _weights(c, "resnet14t"))),
    Case("pretrained-shape", "", "", "has shape [",
         lambda c: _pretrained(c, _weights(c, "resnet10t", lambda t: t.update(
             {"conv1.0.weight": t["conv1.0.weight"].repeat(2, 1, 1, 1).contiguous()})))),
    Case("pretrained-nan", "", "", "holds NaN or infinite values",
         lambda c: _pretrained(c, _weights(c, "resnet10t", lambda t: _first_float(t, float("nan"))))),
    Case("pretrained-folder", "`--set pretrained=` a folder or a device", "`pretrained weights file PATH is a folder, "
         "not a weights file`", "is a folder, not a weights file", lambda c: _pretrained(c, c.data)),
    Case("pretrained-device", "", "", "is not a regular file", lambda c: _pretrained(c, Path("/dev/zero"))),
    # an exported model that lies about its values
    Case("model-nan-tensor", "an exported model with a NaN or infinite tensor (weights or scorers)",
         "`PATH/model.safetensors: tensor '…' holds NaN or infinite values`", "holds NaN or infinite values",
         lambda c: _model_tensors(c, "model.safetensors", lambda t: _first_float(t, float("nan")))),
    Case("model-inf-scorers", "", "", "scorers.safetensors: tensor",
         lambda c: _model_tensors(c, "scorers.safetensors", lambda t: _first_float(t, float("inf")))),
    Case("model-scorers-other", "an exported `scorers.safetensors` of another model (other class count or width)",
         "`PATH/scorers.safetensors: these statistics do not fit the model in model.safetensors (The size of tensor a "
         "(6) must match the size of tensor b (5) …)`", "these statistics do not fit the model",
         lambda c: (_model_tensors(c, "scorers.safetensors", lambda t: t.update(
             {k: v[:-1].contiguous() for k, v in t.items() if k == "sub.means"})),
                    _model_json(c, "thresholds.json", lambda r: r.update(score="mahalanobis", thr_super=-1e3,
                                                                         thr_sub=-1e3)))[1]),
    Case("model-outputs", "an exported model whose outputs are not finite (weights that overflow)",
         "`PATH: the model's outputs are not finite for 4 of 4 images (first: 0.jpg); its weights or input "
         "pipeline are damaged`", "the model's outputs are not finite",
         lambda c: _model_tensors(c, "model.safetensors", _overflow)),
    Case("model-std", "an exported input pipeline with `std` below 0.001 (1e-300) or a non-finite mean",
         "`PATH/config.json: no usable input pipeline (UserError: augment.std must be >= 0.001 for every channel, "
         "got [1e-300, …])`", "augment.std must be >= 0.001",
         lambda c: _model_json(c, "config.json", lambda r: r["input"].update(std=[1e-300, 0.5, 0.5]))),
    Case("model-mean-inf", "", "", "augment.mean[0] must be a finite number",
         lambda c: _model_json(c, "config.json", lambda r: r["input"].update(mean=[1e309, 0.5, 0.5]))),
    Case("model-input-size", "an exported `input.size` other than `trial.image_size`",
         "`PATH/config.json: input.size 8 does not match trial.image_size 32, the size the model was trained at`",
         "input.size 8 does not match trial.image_size 32",
         lambda c: _model_json(c, "config.json", lambda r: r["input"].update(size=8))),
    Case("model-huge-size", "sizes that need terabytes (`image_size`, `data_size`, `cnn_width`, `batch_size` in "
         "a space, `--set` or an exported config; `--image-size`)", "`PATH/config.json: image_size must be <= 1,024, got 100,000`",
         "image_size must be <= 1,024",
         lambda c: _model_json(c, "config.json", lambda r: (r["input"].update(size=100_000),
                                                            r["trial"].update(image_size=100_000)))),
    Case("model-huge-data-size", "", "", "data_size must be <= 1,024",
         lambda c: _model_json(c, "config.json", lambda r: r["trial"].update(data_size=10**6))),
    Case("model-huge-width", "", "", "cnn_width must be <= 1,024",
         lambda c: _model_json(c, "config.json", lambda r: r["trial"].update(cnn_width=10**7))),
    Case("set-huge-image-size", "", "", "image_size must be <= 1,024",
         lambda c: ["train", str(c.space), "--set", "image_size=100000"]),
    Case("set-huge-batch", "", "", "batch_size must be <= 65,536",
         lambda c: ["train", str(c.space), "--set", "batch_size=1000000000"]),
    Case("inspect-huge-image-size", "", "", "--image-size must be in 1-1,024",
         lambda c: ["data", "inspect", str(c.data), "--outliers", "none", "--image-size", "100000"]),
    Case("push-zero-image-size", "", "", "--image-size must be in 1-1,024",
         lambda c: ["data", "push", str(c.data), "s3://bucket/x", "--image-size", "0"]),
    Case("space-huge-views", "", "", "feature_views must be <= 64",
         lambda c: ["train", str(_space(c, "family: layover\nfixed: {feature_views: 100000}\n"))]),
    Case("model-thresholds-range", "thresholds of one score stored under another's name (outside what that score "
         "can take, or not the exported point's score)",
         "`PATH/thresholds.json: thr_super 7.5 is outside what score 'msp' can take ([0, 1]): thresholds of another "
         "score?`", "is outside what score 'msp' can take",
         lambda c: _model_json(c, "thresholds.json", lambda r: r.update(thr_super=7.5))),
    Case("model-thresholds-knn", "", "", "is outside what score 'knn' can take",
         lambda c: _model_json(c, "thresholds.json", lambda r: r.update(score="knn", thr_sub=0.4))),
    Case("model-thresholds-source", "", "", "the exported point's score is 'energy'",
         lambda c: (_model(c) / "source.json").write_text('{"point": {"score": "energy"}}') and _predict(c, _model(c))),
    Case("model-nested-json", "an exported JSON file nested 100,000 deep", "`PATH/config.json: unreadable or "
         "truncated (maximum recursion depth exceeded …)`", "unreadable or truncated",
         lambda c: _nested_json(c, "config.json")),
    Case("model-nested-thresholds", "", "", "thresholds.json: unreadable or truncated",
         lambda c: _nested_json(c, "thresholds.json")),
    Case("model-dir-file", "a model, weights or image path that is a file where a folder should be, or the reverse",
         "`PATH: not a folder (an exported model is a directory)`", "not a folder (an exported model is a directory)",
         lambda c: _predict(c, model=c.outside)),
    Case("model-weights-folder", "", "", "model.safetensors: not a file",
         lambda c: ((_model(c) / "model.safetensors").unlink(), (_model(c) / "model.safetensors").mkdir(),
                    _predict(c, _model(c)))[2]),
    Case("predict-images-file", "", "", "not a folder of images", lambda c: _predict(c, images=c.outside)),
    # a sweep's records that point elsewhere or do not parse
    Case("trials-outside", "`trials.json` pointing a checkpoint outside the sweep's folder (`pareto`, `export-best`)",
         "`…/trials.json: trial-00's checkpoint '/etc' is outside the sweep's folder … (moved, or edited?)`",
         "is outside the sweep's folder",
         lambda c: (_sweep_dir(c, "/etc"), ["pareto", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    Case("trials-outside-dotdot", "", "", "is outside the sweep's folder",
         lambda c: (_sweep_dir(c, str(c.tmp / "sweeps" / "done" / ".." / "..")),
                    ["pareto", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    Case("trials-outside-export", "", "", "is outside the sweep's folder",
         lambda c: (_sweep_dir(c, str(c.outside.parent)), ["export-best", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    Case("posthoc-nested", "", "", "unreadable post-hoc results",
         lambda c: (_posthoc(c, "[" * 100_000), ["pareto", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    Case("posthoc-not-mapping", "", "", "unreadable post-hoc results",
         lambda c: (_posthoc(c, "[1, 2]"), ["pareto", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    Case("posthoc-out-of-range", "a `posthoc.npz` that loads but does not hold together (arrays of other shapes, "
         "a rate outside [0, 1])", "`…/posthoc.npz: unreadable post-hoc results (grid: values outside [0, 1])`",
         "unreadable post-hoc results (grid: values outside [0, 1])",
         lambda c: (_posthoc_out_of_range(c), ["pareto", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    Case("trials-nested", "", "", "trials.json: unreadable or truncated",
         lambda c: (_sweep_dir(c, trials="[" * 100_000), ["pareto", "done", "--storage", str(c.tmp / "sweeps")])[1]),
    # places that cannot be written, found before the work
    Case("storage-unwritable", "a `--storage`, `--out`, `-o`, `--cache-dir` or `HIERTUNE_CACHE_DIR` that is not "
         "writable or lies under a file", "`--storage /proc/sys/hiertune: /proc/sys is not writable`",
         "/proc/sys is not writable", lambda c: _sweep(c, "--storage", str(UNWRITABLE / "hiertune"))),
    Case("train-out-unwritable", "", "", "/proc/sys is not writable",
         lambda c: ["train", str(c.space), "--out", str(UNWRITABLE / "run")]),
    Case("predict-out-unwritable", "", "", "-o /proc/sys/p.csv: /proc/sys is not writable",
         lambda c: _predict(c, out=UNWRITABLE / "p.csv")),
    Case("predict-out-under-file", "", "", "is not a folder", lambda c: _predict(c, out=c.outside / "p.csv")),
    Case("cache-dir-file", "", "", "--cache-dir", lambda c: _predict(c) + ["--cache-dir", str(c.outside)]),
    Case("cache-dir-unwritable", "", "", "/proc/sys is not writable",
         lambda c: ["data", "inspect", str(c.data), "--outliers", "none", "--cache-dir", str(UNWRITABLE / "cache")]),
    Case("cache-env-file", "", "", "HIERTUNE_CACHE_DIR",
         lambda c: (c.setenv("HIERTUNE_CACHE_DIR", str(c.outside / "cache")), ["train", str(c.space)])[1]),
    Case("synth-unwritable", "", "", "cannot write /proc/sys/synth",
         lambda c: ["data", "synth", str(UNWRITABLE / "synth")]),
    Case("disk-full-cache", "a full disk (`ulimit -f`) while writing the image cache or a CSV",
         "`cannot write …/train_images-64px-….parquet: File too large`", "File too large",
         lambda c: ["data", "inspect", str(c.data), "--outliers", "none", "--cache-dir", str(c.tmp / "imgcache")],
         file_limit=20_000),
    Case("disk-full-csv", "", "", "p.csv: File too large",
         lambda c: (_warm_cache(c, c.tmp / "warm"), _predict(c) + ["--cache-dir", str(c.tmp / "warm")])[1],
         file_limit=40),
    # search-space YAML
    Case("categorical-default", "a categorical `default:` outside its `choices:`, a numeric one off its `step:` grid",
         "`space.yaml: search.optimizer.default 'lion' is not one of its choices ['adam', 'sgd']`",
         "is not one of its choices",
         lambda c: ["train", str(_space(c, "family: cnn\nsearch:\n  optimizer: {type: categorical, choices: [adam, sgd], "
                                        "default: lion}\n"))]),
    Case("step-default", "", "", "is not on the grid",
         lambda c: ["train", str(_space(c, "family: cnn\nsearch:\n  epochs: {type: int, low: 1, high: 10, step: 3, "
                                        "default: 5}\n"))]),
    Case("yaml-duplicate-key", "a key written twice in a YAML mapping", "`space.yaml: malformed YAML at line 3, column 1: "
         "key 'family' is written twice (first at line 1)`", "is written twice",
         lambda c: ["train", str(_space(c, "family: cnn\nfixed: {epochs: 1}\nfamily: dualhead\n"))]),
    Case("yaml-duplicate-nested", "", "", "key 'lr' is written twice",
         lambda c: ["train", str(_space(c, "family: cnn\nsearch:\n  lr: {type: float, low: 0.1, high: 0.2}\n"
                                        "  lr: {type: float, low: 0.3, high: 0.4}\n"))]),
    Case("yaml-duplicate-set", "", "", "not a valid YAML scalar",
         lambda c: ["train", str(c.space), "--set", "lr={a: 1, a: 2}"]),
    Case("yaml-deep", "5,000 nested brackets (YAML or JSON)", "`space.yaml: malformed YAML at line 1, column 33: nested "
         "deeper than 32 levels`", "nested deeper than 32 levels",
         lambda c: ["train", str(_space(c, "[" * 5000 + "]" * 5000))]),
    Case("yaml-deep-set", "", "", "not a valid YAML scalar", lambda c: ["train", str(c.space), "--set", "lr=" + "[" * 5000]),
    # image names that would become formulas or broken rows, in any folder predict or a submission lists
    Case("predict-name-newline", "an image file name with a control character (newline, right-to-left override) in "
         "a folder", "`DIR: image file name '1\\n.jpg' contains a control character (newline, right-to-left "
         "override, …); rename it`", "contains a control character",
         lambda c: _predict(c, images=_pictures(c, "1\n.jpg"))),
    Case("predict-name-rtl", "", "", "contains a control character",
         lambda c: _predict(c, images=_pictures(c, "9\u202egpj.exe.jpg"))),
    Case("test-name-tab", "", "", "contains a control character",
         lambda c: (shutil.copy(c.data / "test_images" / "0.jpg", c.data / "test_images" / "5\t.jpg"),
                    ["data", "inspect", str(c.data), "--outliers", "none"])[1]),
    Case("outlier-name-newline", "", "", "contains a control character",
         lambda c: (shutil.copy(c.outliers / "class0" / "0.jpg", c.outliers / "class0" / "x\r.jpg"),
                    ["data", "inspect", str(c.data), "--outliers", str(c.outliers)])[1]),
    Case("predict-name-formula", "an image file name a spreadsheet reads as a formula (leading `=`, `+`, `-`, `@`), "
         "for predict or a submission", "`DIR: image file name '=cmd.jpg' starts with '=', which a spreadsheet reads "
         "as a formula; rename it`", "which a spreadsheet reads as a formula",
         lambda c: _predict(c, images=_pictures(c, "=cmd.jpg"))),
    *[Case(f"predict-name-{kind}", "", "", "which a spreadsheet reads as a formula",
           lambda c, first=first: _predict(c, images=_pictures(c, f"{first}1.jpg")))
      for kind, first in (("plus", "+"), ("minus", "-"), ("at", "@"))],
    Case("test-name-formula", "", "", "which a spreadsheet reads as a formula",
         lambda c: (shutil.copy(c.data / "test_images" / "0.jpg", c.data / "test_images" / "=1+2.jpg"),
                    ["data", "inspect", str(c.data), "--outliers", "none"])[1]),
    Case("predict-gif-animation", "a `.gif` or `.tif` with several frames (single ones are read)", "`pics/5.gif: an "
         "animation of 2 frames, not one image`", "an animation of 2 frames",
         lambda c: (_pictures(c), Image.new("RGB", (64, 64), "red").save(
             c.tmp / "pics" / "5.gif", save_all=True, append_images=[Image.new("RGB", (64, 64), "blue")]),
                    _predict(c, images=c.tmp / "pics"))[2]),
    Case("predict-tiff-pages", "", "", "an animation of 2 frames",
         lambda c: (_pictures(c), Image.new("RGB", (64, 64), "red").save(
             c.tmp / "pics" / "5.tif", save_all=True, append_images=[Image.new("RGB", (64, 64), "blue")]),
                    _predict(c, images=c.tmp / "pics"))[2]),
    # --shifted-data: its errors name its folder
    Case("shifted-missing-image", "a `--shifted-data` folder with a bad row or image",
         "`--shifted-data DIR: train_data.csv line 5: train_images/3.jpg: image does not exist`",
         "--shifted-data", lambda c: _shifted(c, lambda d: (d / "train_images" / "3.jpg").unlink())),
    Case("shifted-bad-label", "", "", "--shifted-data",
         lambda c: _shifted(c, lambda d: _replace_line(d / "train_data.csv", 3, "2.jpg,0,x,bad"))),
]

SECRETS = tuple(sorted({URI_PASSWORD, URI_PASSWORD_ENCODED, QUERY_TOKEN, TOKEN_USER, DB_PASSWORD,
                        *RAW_PASSWORDS.values(), *(quote(p, safe="") for p in RAW_PASSWORDS.values())}))


def readme_rows() -> list[str]:
    """The README table's rows for these cases (a case with no row of its own shares the one above)."""
    return [f"| {c.row} | {c.message} |" for c in CASES if c.row]


def write_readme(readme: Path) -> None:
    """Replace the registry's rows of the README's rejected-input table (its tail, from the first
    case's row) with readme_rows()."""
    lines = readme.read_text(encoding="utf-8").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {CASES[0].row} |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    lines[start:end] = readme_rows()
    readme.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":  # `--readme` rewrites README.md's rows; without it, prints them
    import sys

    if sys.argv[1:] == ["--readme"]:
        write_readme(Path(__file__).resolve().parents[1] / "README.md")
    else:
        print("\n".join(readme_rows()))
