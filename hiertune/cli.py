"""The `hiertune` command line: `python -m hiertune` and the console script are this module.

Every command returns a JSON-ready dict; `--json` prints it as the last stdout line, otherwise
the command's renderer prints it for a person. A UserError is one stderr line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hiertune import __version__
from hiertune.errors import UserError
from hiertune.secrets import redact, remember_env, remember_uri
from hiertune.sweep.catalog import find_sweep
from hiertune.sweep.sweeplog import RedactingFormatter

if TYPE_CHECKING:  # the commands import what they run when they run
    from hiertune.export.results import ExportResult
    from hiertune.sweep.results import SweepResult

log = logging.getLogger("hiertune")


class _Parser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; we want the one-line contract."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


EXAMPLES = {
    None: """examples:
  hiertune demo                                  # a small sweep on synthetic data, its front, an export
  hiertune sweep search_spaces/dualhead.yaml --data DATA_DIR --outliers OUT_DIR --budget 30m --name first
  hiertune ls                                    # every sweep, its status and storage
  hiertune pareto first                          # the front again; * marks the recommended point
  hiertune export-best first --top 3             # retrain the 3 best points, write submissions""",
    "demo": """examples:
  hiertune demo
  hiertune demo --dir /tmp/hiertune-demo""",
    "sweep": """examples:
  hiertune sweep search_spaces/smoke.yaml                       # synthetic data, a few minutes
  hiertune sweep search_spaces/cnn.yaml --data DATA_DIR --name cnn1 --num-samples 24
  hiertune sweep search_spaces/cnn.yaml --set epochs=3 --set tune.sampler=nsga2
  hiertune sweep search_spaces/dualhead.yaml --data DATA_DIR --outliers OUT_DIR --budget 30m
  hiertune sweep --name cnn1 --resume                           # continue after Ctrl+C, as it was started
  hiertune -v sweep ...                                         # with Ray Tune's own tables""",
    "pareto": """examples:
  hiertune pareto cnn1
  hiertune pareto demo            # the newest sweep in sweeps/demo
  hiertune pareto cnn1 --json     # the front and the recommended point as JSON""",
    "ls": """examples:
  hiertune ls
  hiertune ls --storage /data/sweeps""",
    "export-best": """examples:
  hiertune export-best cnn1                     # the recommended point (the knee unless the space picks)
  hiertune export-best cnn1 --pick max-seen
  hiertune export-best cnn1 --top 3 --pick weight=0.7
  hiertune export-best lin1 --ensemble 5        # an ensemble of the trials' heads on one frozen backbone
  hiertune export-best lin1 --views flip        # test-time augmentation: each image averaged with its mirror""",
    "predict": """examples:
  hiertune predict sweeps/cnn1/export/1 DATA_DIR/test_images -o predictions.csv""",
    "train": """examples:
  hiertune train search_spaces/smoke.yaml --set lr=1e-3 --set epochs=5""",
}


def _command(sub: argparse._SubParsersAction, name: str, help: str, handler: Callable,
             render: Callable[[dict], str] | None = None, json_flag: bool = True) -> argparse.ArgumentParser:
    """`handler` returns the command's result: a record with render() and to_dict(), or (the data
    commands, whose module renders its own summary) a dict that `render` prints."""
    p = sub.add_parser(name, help=help, description=help, epilog=EXAMPLES.get(name),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(handler=handler, render=render)
    return p


def _cache_root(args: argparse.Namespace) -> Path:
    """The cache root, checked before any work: decoded images and features are written there."""
    from hiertune.data.cache import default_cache_root
    from hiertune.fsutil import check_writable

    if args.cache_dir:
        root, what = Path(args.cache_dir), "--cache-dir"
    else:
        root = default_cache_root()
        what = "HIERTUNE_CACHE_DIR" if os.environ.get("HIERTUNE_CACHE_DIR") else "the cache folder"
    check_writable(root, what, folder=True)
    return root


def _data_inspect(args: argparse.Namespace) -> dict:
    from hiertune.data.inspect import inspect_data

    cache_root = _cache_root(args)
    summary, warnings = inspect_data(args.dir, args.outliers, _image_size(args), cache_root)
    for line in warnings:
        print(line, file=sys.stderr)
    if args.source_probe:
        from hiertune.training.source_probe import source_report

        summary["source_separability"] = source_report(args.dir, args.outliers, args.shifted_data, _image_size(args),
                                                       args.probe_image_size, cache_root)
    return summary


def _render_inspect(summary: dict) -> str:
    from hiertune.data.inspect import render

    return render(summary)


def _data_push(args: argparse.Namespace) -> dict:
    from hiertune.data.push import push_data

    return push_data(args.dir, args.dest, args.outliers, _image_size(args), _cache_root(args))


def _render_push(summary: dict) -> str:
    from hiertune.data.push import render

    return render(summary)


def _data_synth(args: argparse.Namespace) -> dict:
    from hiertune.data.synth import SynthConfig, write_synthetic

    return write_synthetic(args.dir, SynthConfig(seed=args.seed), overwrite=args.force)


def _demo(args: argparse.Namespace) -> dict:
    from hiertune.data.synth import SynthConfig, write_synthetic
    from hiertune.export.export import export_best
    from hiertune.sweep.space import load_space
    from hiertune.sweep.place import SweepPlace
    from hiertune.sweep.run import run_sweep

    root = Path(args.dir)
    data_dir = root / "data"
    if not (data_dir / "train_data.csv").is_file():
        log.info("generating the synthetic dataset in %s", data_dir)
        write_synthetic(data_dir, SynthConfig(), overwrite=True)
    space = load_space(_bundled_space("smoke.yaml")).with_overrides({"data": str(data_dir.resolve())})
    place = SweepPlace.resolve(f"smoke-{time.strftime('%Y%m%d-%H%M%S')}", str(root), None)
    log.info("sweep %s: %d trials of %s on %s", place.name, space.tune.num_samples, space.path, data_dir)
    sweep = run_sweep(space, place, _cache_root(args), verbose=args.verbose)
    return DemoResult(sweep, export_best(place, None, 1, _cache_root(args)), str(data_dir / "test_images"))


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """`hiertune demo`: the sweep, the export of its recommended point, and the test images."""

    sweep: SweepResult
    export: ExportResult
    test_images: str

    def to_dict(self) -> dict:
        return {"sweep": self.sweep.to_dict(), "export": self.export.to_dict(), "test_images": self.test_images}

    def render(self) -> str:
        first = self.export.exports[0] if self.export.exports else None
        return (f"{self.sweep.render(with_next_steps=False)}\n{self.export.render()}\n{_demo_meaning(first)}\n\n"
                f"{self.sweep.next_steps(first.dir if first else None, self.test_images)}")


def _demo_meaning(e) -> str:
    if e is None or e.test is None:
        return ""
    return textwrap.fill("what this means: seen = accuracy on images of known classes (mean of superclass and subclass), "
            "unseen = how often novel images are called novel. The validation figures are the sweep's own "
            f"(seen {e.validation_seen:.2f}, unseen {e.validation_unseen:.2f}); the test figures are the retrained model on the "
            "synthetic hidden test set, with thresholds calibrated to the seen acceptance the sweep picked. "
            "Validation novel classes are held-out training classes, not the test's, so unseen on test usually "
            "differs: that gap is what the front cannot promise.", width=100, subsequent_indent="  ")


def _bundled_space(name: str) -> Path:
    """search_spaces/ ships beside the package in a checkout (the README's editable install)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (root / "search_spaces" / name).is_file():
            return root / "search_spaces" / name
    raise UserError(f"search_spaces/{name} not found beside the package or in the current directory")


def _overrides(args: argparse.Namespace) -> dict:
    """The command line's settings over the space file: --set, then the flags that name one."""
    from hiertune.sweep.space import parse_assignments

    overrides = parse_assignments(args.set or [])
    for key in ("data", "outliers", "shifted_data"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.shifted_data is not None:  # beside the corruptions unless --set shifted=data says instead
        overrides.setdefault("shifted", "both")
    if getattr(args, "budget", None) is not None:
        overrides["budget"] = args.budget
    if getattr(args, "num_samples", None) is not None:
        overrides["tune.num_samples"] = args.num_samples
    return overrides


def _space_from_args(args: argparse.Namespace, overrides: dict | None = None):
    from hiertune.sweep.space import load_space

    overrides = _overrides(args) if overrides is None else overrides
    space = load_space(args.space)
    return space.with_overrides(overrides) if overrides else space


def _train(args: argparse.Namespace) -> dict:
    from hiertune.training.single import train_single

    space = _space_from_args(args)
    return train_single(space.trial_config(), space.path.stem, Path(args.out) if args.out else None,
                        _cache_root(args), progress=not args.json, posthoc=space.posthoc_grid())


def _leave_out(args: argparse.Namespace) -> dict:
    from hiertune.training.leave_out import leave_species_out

    space = _space_from_args(args)
    return leave_species_out(space.trial_config(), _cache_root(args), posthoc=space.posthoc_grid())


def _sweep(args: argparse.Namespace) -> dict:
    from hiertune.sweep.place import SweepPlace
    from hiertune.sweep.resume import absolute_paths
    from hiertune.sweep.run import run_sweep

    if args.resume and not args.name:
        raise UserError("--resume needs --name of the sweep to continue")
    if args.resume and args.remeasure:
        raise UserError("--remeasure measures a new sweep's costs before it plans; a resumed sweep keeps the "
                        "space its budget left, so there is nothing to measure")
    if args.resume:
        return _resume(args)
    if args.space is None:
        raise UserError("sweep needs a search-space file (search_spaces/*.yaml), or --name NAME --resume")
    overrides = absolute_paths(_overrides(args))
    space = _space_from_args(args, overrides)
    name = args.name or f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = args.storage or space.storage
    place = SweepPlace.resolve(name, storage, args.mlflow_uri or space.mlflow.tracking_uri)
    # The place carries the tracking URI; the space, which Ray pickles into its searcher's state, need not.
    space = dataclasses.replace(space, mlflow=dataclasses.replace(space.mlflow, tracking_uri=None))
    with _interrupt_line(place):
        return run_sweep(space, place, _cache_root(args), address=args.address, verbose=args.verbose,
                         overrides=overrides, remeasure=args.remeasure)


def _resume(args: argparse.Namespace) -> dict:
    """The sweep --name, continued as it was started (hiertune.sweep.resume)."""
    from hiertune.sweep.place import SweepPlace
    from hiertune.sweep.resume import resumed_space
    from hiertune.sweep.run import run_sweep
    from hiertune.sweep.state import read_meta

    from hiertune.sweep.space import load_space

    # Where the sweep lives: --storage, else the space file's storage: (when given), else found by name.
    given = args.storage or (load_space(args.space).storage if args.space else None)
    storage, name = find_sweep(args.name, given)
    place = SweepPlace.resolve(name, storage, args.mlflow_uri)
    place.prepare()
    if not place.started():
        raise UserError(f"{place.uri}: no sweep to resume here")
    meta = read_meta(place.dir)
    if meta.overrides is None:  # a sweep from before its settings were recorded: as the command line says
        if args.space is None:
            raise UserError(f"sweep {name!r} did not record how it was started; give its space file and flags again")
        space, overrides = _space_from_args(args), _overrides(args)
    else:
        space, overrides = resumed_space(meta, name, args.space, _overrides(args), args.cache_dir)
    if args.mlflow_uri is None and space.mlflow.tracking_uri:
        place = SweepPlace.resolve(name, storage, space.mlflow.tracking_uri)
    space = dataclasses.replace(space, mlflow=dataclasses.replace(space.mlflow, tracking_uri=None))
    cache_root = Path(args.cache_dir or meta.cache_dir) if (args.cache_dir or meta.cache_dir) else _cache_root(args)
    with _interrupt_line(place):
        return run_sweep(space, place, cache_root, address=args.address, resume=True, verbose=args.verbose,
                         overrides=overrides)


class Interrupted(Exception):
    """Ctrl+C: main prints the line and exits 130."""


@contextlib.contextmanager
def _interrupt_line(place):
    """Ctrl+C during a sweep as one line: what finished, and the command that resumes it."""
    from hiertune.errors import SweepInterrupted

    try:
        yield
    except SweepInterrupted as exc:
        raise Interrupted(f"sweep {place.name} interrupted: {exc.summary.interrupted_line()}; resume with: "
                          f"{_resume_command(place)}") from None
    except KeyboardInterrupt:
        if place.started():
            raise Interrupted(f"sweep {place.name} interrupted; resume with: {_resume_command(place)}") from None
        raise Interrupted(f"sweep {place.name} interrupted before its first trial; nothing to resume "
                          "(run the same command again)") from None


def _resume_command(place) -> str:
    from hiertune.sweep.results import resume_command

    return resume_command(place.name, place.root)


def _pareto(args: argparse.Namespace) -> dict:
    storage, name = find_sweep(args.name, args.storage)  # before the heavy imports: a wrong name fails fast
    from hiertune.sweep.front import Pick
    from hiertune.sweep.place import SweepPlace
    from hiertune.sweep.results import ParetoResult

    # Reads the sweep (pulling an S3 sweep's files into the local working copy) and draws its
    # front there; the sweep's MLflow runs and its files on S3 are the sweep's to write.
    place = SweepPlace.resolve(name, storage, mlflow_uri=None)
    place.prepare()
    if not place.dir.is_dir():
        raise UserError(f"{place.uri}: no such sweep")
    front = _front_now(place)
    if args.groups and front.front:
        picked_by = args.pick or front.pick
        return ParetoResult(place.name, front, True, Pick.parse(picked_by).rank(front.front)[0], picked_by)
    return ParetoResult(place.name, front, args.groups)


def _front_now(place):
    """The front of what the sweep's trials have reported, while it runs too: a running sweep
    replaces a trial's checkpoint each epoch, so a record read just before may name one just
    dropped; the records are read again then."""
    from hiertune.sweep.front import front_files
    from hiertune.sweep.state import LIVE_JSON, load_trials

    for attempt in range(3):
        try:
            return front_files(place, load_trials(place.dir, within=place.uri, live=True))
        except UserError:
            if attempt == 2 or not (place.dir / LIVE_JSON).is_file():
                raise
            time.sleep(1)


def _ls(args: argparse.Namespace) -> dict:
    from hiertune.sweep.catalog import DEFAULT_ROOT, SweepList, list_sweeps

    root = args.storage or f"./{DEFAULT_ROOT}"
    return SweepList(root, list_sweeps(root))


def _export_best(args: argparse.Namespace) -> dict:
    from hiertune.data.views import parse_views

    views = parse_views(args.views)
    storage, name = find_sweep(args.name, args.storage)  # before the heavy imports: a wrong name fails fast
    from hiertune.export.export import export_best
    from hiertune.sweep.front import Pick
    from hiertune.sweep.place import SweepPlace

    place = SweepPlace.resolve(name, storage, args.mlflow_uri)
    pick = Pick.parse(args.pick) if args.pick else None
    return export_best(place, pick, args.top, _cache_root(args), test_images=args.test_images,
                       address=args.address, calibration_fraction=args.calibration_fraction, ensemble=args.ensemble,
                       views=views)


def _predict(args: argparse.Namespace) -> dict:
    from hiertune.export.predictor import ExportedModel, PredictResult
    from hiertune.fsutil import check_writable
    from hiertune.training.features import FeatureStore

    check_writable(args.output, "-o", folder=False)  # before the work, not after it
    cache_root = _cache_root(args)
    model = ExportedModel.load(args.model_dir, device=args.device, features=FeatureStore(cache_root))
    predictions = model.predict_folder(args.images, cache_root, progress=not args.json)
    if (w := predictions.fixes.warning(f"{args.images}", model.cfg.data_size)):
        print(w, file=sys.stderr)
    predictions.write_csv(args.output, with_scores=args.scores)
    return PredictResult(str(args.output), len(predictions.names), str(args.model_dir),
                         predictions.novel_superclass(model.heads), predictions.novel_subclass(model.heads))


def _add_space_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:  # sweep --name NAME --resume reads it from the sweep's record
        p.add_argument("space", nargs="?", help="search-space YAML (search_spaces/*.yaml); not needed with --resume")
    else:
        p.add_argument("space", help="search-space YAML (search_spaces/*.yaml)")
    p.add_argument("--data", help="competition-format directory or a pushed s3:// one (default: the space's, "
                                  "else synthetic)")
    p.add_argument("--outliers", help="outlier directory, pushed s3:// outliers, 'cifar100' or 'none' (default: "
                                      "the space's)")
    p.add_argument("--shifted-data", metavar="DIR",
                   help="competition-format folder of labeled images of known subclasses from another source: "
                        "validation's seen_shifted group, beside the corruptions (--set shifted=data: instead)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting: a trial parameter (epochs=3) or a section key (tune.num_samples=4)")
    p.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")


def _image_size(args: argparse.Namespace) -> int:
    """--image-size within the bounds a trial's data_size has: a larger one needs terabytes."""
    from hiertune.training.config import SIZE_LIMITS

    if not 1 <= args.image_size <= SIZE_LIMITS["data_size"]:
        raise UserError(f"--image-size must be in 1-{SIZE_LIMITS['data_size']:,}, got {args.image_size:,}")
    return args.image_size


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hiertune", description=__doc__.splitlines()[0], epilog=EXAMPLES[None],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hiertune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and Ray Tune's own progress tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = _command(sub, "demo", "the main job end to end on the embedded synthetic dataset: a small sweep, its "
                    "Pareto front, and the knee point retrained and exported with a submission", _demo)
    demo.add_argument("--dir", default="sweeps/demo", help="where the demo writes (default: %(default)s)")
    demo.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")

    train = _command(sub, "train", "run one trial in-process (midpoints of the searched parameters unless --set)",
                     _train)
    _add_space_args(train)
    train.add_argument("--out", help="run directory (default: sweeps/train/SPACE-TIMESTAMP)")

    leave_out = _command(sub, "leave-out", "leave-species-out: how the space's configuration (midpoints unless --set) "
                         "treats real photos (--shifted-data) of known species whose photos training never saw",
                         _leave_out)
    _add_space_args(leave_out)

    sweep = _command(sub, "sweep", "run a search space as a Ray Tune sweep (Optuna + ASHA + MLflow) and print its "
                     "Pareto front", _sweep)
    _add_space_args(sweep, optional=True)
    sweep.add_argument("--name", help="sweep name (default: SPACE-TIMESTAMP); its folder is STORAGE/NAME")
    sweep.add_argument("--num-samples", type=int, help="number of trials (overrides tune.num_samples)")
    sweep.add_argument("--storage", help="where sweeps live: a folder or s3://bucket/prefix (default: the space's "
                                         "storage, else ./sweeps)")
    sweep.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///STORAGE/mlflow.db; for S3 "
                                            "storage ./sweeps/mlflow.db with artifacts on S3)")
    sweep.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    sweep.add_argument("--budget", metavar="DURATION",
                       help="the trials' wall clock, e.g. 30m, 2h, 1h30m (default: the space's budget:, else none); "
                            "choices that cannot reach the scheduler's first rung in a quarter of it are left out")
    sweep.add_argument("--resume", action="store_true",
                       help="continue the sweep --name as it was started (its space, data and flags are recorded)")
    sweep.add_argument("--remeasure", action="store_true",
                       help="measure what an epoch of each kind of trial costs here again instead of reading an "
                            "earlier sweep's figures (kept in the cache root), e.g. when they were measured on a "
                            "busy machine")

    pareto = _command(sub, "pareto", "the seen-vs-unseen Pareto front of a sweep: table, pareto.csv, pareto.png",
                      _pareto)
    pareto.add_argument("name", help="sweep name, or a storage folder's name for its newest sweep (`hiertune ls`)")
    pareto.add_argument("--storage", help="where sweeps live: a folder or s3://bucket/prefix (default: found in "
                                          "./sweeps and the folders inside it)")
    pareto.add_argument("--groups", action="store_true",
                        help="per-group table (seen, seen_shifted, novel_sub, novel_super accuracy, seen_shifted "
                             "acceptance, AUROCs), and the --pick point with every score's AUROC per novel group")
    pareto.add_argument("--pick", help="the point --groups details (as for export-best; default: the sweep's pick)")

    ls = _command(sub, "ls", "list the sweeps in ./sweeps and the storage folders inside it (the demo's "
                  "included): name, status, trials, storage", _ls)
    ls.add_argument("--storage", help="list this storage folder's sweeps instead (default: ./sweeps)")

    export = _command(sub, "export-best", "retrain the chosen front points on all labeled data, calibrate their "
                      "thresholds and export models + submissions", _export_best)
    export.add_argument("name", help="sweep name, or a storage folder's name for its newest sweep (`hiertune ls`)")
    export.add_argument("--pick", help="knee | max-seen | max-unseen | weight=W (W·seen + (1-W)·unseen); default: "
                                       "the sweep's recommended point (its space's pick:, else the knee)")
    export.add_argument("--top", type=int, default=1, help="export the K best points of distinct trials "
                                                           "(default: %(default)s)")
    export.add_argument("--ensemble", type=int, default=0, metavar="N",
                        help="export one ensemble instead: N picks with replacement (Caruana's greedy selection on "
                             "validation) among the trials sharing the pick's frozen backbone features")
    export.add_argument("--views", default="", metavar="flip[,zoom]",
                        help="test-time augmentation: the model's outputs averaged over each image and these views "
                             "of it (flip: mirrored; zoom: its centre enlarged), thresholds calibrated on them")
    export.add_argument("--test-images", help="folder to write submission.csv for (default: the data's test_images/)")
    export.add_argument("--calibration-fraction", type=float, default=0.1,
                        help="labeled images held out to calibrate thresholds (default: %(default)s)")
    export.add_argument("--storage", help="where sweeps live (default: found in ./sweeps and the folders inside it)")
    export.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///STORAGE/mlflow.db)")
    export.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    export.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")

    predict = _command(sub, "predict", "predict every image of a folder with an exported model", _predict)
    predict.add_argument("model_dir", help="an exported model directory (STORAGE/NAME/export/K)")
    predict.add_argument("images", help="folder of images (any names; ordered by numeric file name)")
    predict.add_argument("-o", "--output", default="predictions.csv", help="CSV to write (default: %(default)s)")
    predict.add_argument("--scores", action="store_true", help="add novelty scores and class probabilities")
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: %(default)s")
    predict.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")

    data = sub.add_parser("data", help="validate, inspect and generate datasets",
                          description="validate, inspect and generate datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND", parser_class=_Parser)
    inspect = _command(data_sub, "inspect", "validate a competition-format directory and print its counts",
                       _data_inspect, _render_inspect)
    inspect.add_argument("dir", help="competition-format directory, a pushed s3:// one, or 'synthetic' for the "
                                     "embedded default")
    inspect.add_argument("--outliers", help="class-per-folder outlier directory, 'cifar100', or 'none' "
                                            "(default: the data directory's own outliers/, if any)")
    inspect.add_argument("--image-size", type=int, default=64, help="decoded side length (default: %(default)s)")
    inspect.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")
    inspect.add_argument("--source-probe", action="store_true",
                         help="how separable the outliers (and --shifted-data photos) are from the labeled images by "
                              "source alone: a logistic probe's AUROC on the pretrained lite0's frozen features")
    inspect.add_argument("--shifted-data", metavar="DIR", help="competition-format folder of real photos of known "
                                                               "subclasses, for --source-probe")
    inspect.add_argument("--probe-image-size", type=int, default=160,
                         help="the backbone's input side for --source-probe (default: %(default)s)")
    push = _command(data_sub, "push", "validate a competition-format directory and upload it to S3 without its "
                    "image files (CSVs and decoded pixels), for an s3:// data root", _data_push, _render_push)
    push.add_argument("dir", help="competition-format directory, or 'synthetic' for the embedded default")
    push.add_argument("dest", help="s3://bucket/prefix")
    push.add_argument("--outliers", help="class-per-folder outlier directory or 'none', pushed into DEST/outliers "
                                         "(default: the data directory's own outliers/, if any)")
    push.add_argument("--image-size", type=int, default=64, help="decoded side length (default: %(default)s)")
    push.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")
    synth = _command(data_sub, "synth", "write the synthetic hierarchical dataset in competition format",
                     _data_synth)
    synth.add_argument("dir", help="directory to create")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    synth.add_argument("--force", action="store_true", help="replace the directory if it exists")
    return parser


def run_script(main: Callable[[], object], prog: str) -> None:
    """A script's entry point (benchmarks/*.py): bad input (a UserError) is one line on stderr and
    exit 2, as `hiertune` says it, not a traceback."""
    remember_env()
    try:
        main()
    except UserError as exc:
        print(redact(f"{prog}: error: {exc}"), file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    remember_env()
    for value in vars(args).values():  # a URI's password in any argument: masked before anything prints
        for item in value if isinstance(value, list) else [value]:
            remember_uri(item)
            if isinstance(item, str) and "=" in item:  # --set key=URI
                remember_uri(item.partition("=")[2])
    # A traceback (a bug, not bad input) may quote a URI or an environment value too.
    sys.excepthook = lambda kind, value, tb: sys.stderr.write(
        redact("".join(traceback.format_exception(kind, value, tb))))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # every log line of every library, through one filter
        handler.setFormatter(RedactingFormatter(handler.formatter._fmt if handler.formatter else "%(message)s"))
    if not args.verbose:  # boto's INFO lines ("Found credentials in environment variables.") are noise
        for name in ("botocore", "boto3", "s3transfer", "timm"):  # timm: "Loaded  from checkpoint …"
            logging.getLogger(name).setLevel(logging.WARNING)
        # MLflow's "Creating initial MLflow database tables...", and Ray's notice that its local,
        # private cluster uses token authentication: nothing a user acts on.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its level from this on import
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if not sys.stderr.isatty():  # Ray colours its worker-log prefixes; in a file they are raw escape codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:
        result = args.handler(args)
    except UserError as exc:
        print(redact(f"hiertune: error: {exc}"), file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(redact(f"hiertune: {exc}"), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("hiertune: interrupted", file=sys.stderr)
        return 130
    if args.render is None:
        print(redact(json.dumps(result.to_dict()) if args.json else result.render()))
    else:
        print(redact(json.dumps(result) if args.json else args.render(result)))
    return 0


if __name__ == "__main__":  # `python -m hiertune.cli` runs the CLI too, not silently nothing
    raise SystemExit(main())
