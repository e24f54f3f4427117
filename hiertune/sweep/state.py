"""A sweep's own files, the one module that reads and writes them: `sweep.json` (what the sweep
was started with), `trials.json` (a record per trial), and Ray Tune's state, checked before a resume.

`--resume` hands Ray Tune its own files: the pickled tuner, the newest experiment state (JSON) and
the newest searcher and search-generator states (pickles, whatever their suffix). Ray unpickles
them deep inside `Tuner.restore`, where a truncated file ends in a traceback, so each is checked
first: JSON by parsing it, a pickle by walking its opcodes (pickletools), which reads the whole
stream without running any of it. Trial checkpoints are not checked here: a trial whose
checkpoint is damaged fails on its own, with the file named (hiertune.training.faults).
"""

from __future__ import annotations

import importlib
import json
import os
import pickletools
from dataclasses import dataclass, field
from pathlib import Path

from hiertune.errors import UserError, first_line
from hiertune.fsutil import atomic_file

SWEEP_JSON = "sweep.json"
SWEEP_KEYS = ("space", "family", "sampled_thresholds")
TRIALS_JSON = "trials.json"
# While a sweep runs: a record per trial Tune has started, rewritten as they report (what
# `hiertune pareto` reads then); trials.json replaces it when the sweep ends.
LIVE_JSON = "trials.live.json"
# How the sweep's last run ended: "finished", "budget" (its time budget) or "interrupted" (Ctrl+C).
ENDED_JSON = "ended.json"
RAY_PICKLES = ("tuner.pkl", "searcher-state-*.pkl", "search_gen_state-*.json")
RAY_EXPERIMENT_STATE = "experiment_state-*.json"


# interrupted: the sweep stopped before the trial finished; `--resume` continues it.
STATUSES = ("completed", "stopped", "failed", "interrupted")


@dataclass(frozen=True)
class TrialCounts:
    """How many of a sweep's trials ended each way (STATUSES)."""

    completed: int = 0
    stopped: int = 0
    failed: int = 0
    interrupted: int = 0

    def __post_init__(self) -> None:
        if min(self.to_dict().values()) < 0:
            raise ValueError(f"trial counts cannot be negative: {self}")

    @classmethod
    def of(cls, statuses) -> "TrialCounts":
        statuses = list(statuses)
        unknown = set(statuses) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown trial status {sorted(unknown)}; expected one of {', '.join(STATUSES)}")
        return cls(*(statuses.count(s) for s in STATUSES))

    @property
    def ended(self) -> int:
        """Trials that will not run again: all but the interrupted."""
        return self.completed + self.stopped + self.failed

    def to_dict(self) -> dict[str, int]:
        return {s: getattr(self, s) for s in STATUSES}

    def nonzero(self) -> dict[str, int]:
        return {s: n for s, n in self.to_dict().items() if n}


@dataclass
class TrialRecord:
    trial_id: str
    name: str
    status: str  # one of STATUSES, decided by trial_status
    epochs: int
    params: dict  # the sampled parameters
    checkpoint: str | None  # the latest checkpoint: a local path or an s3:// URI (read with hiertune.storage)
    metrics: dict
    error: str | None = None
    config: dict = field(default_factory=dict)  # the whole trial config: what export retrains

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialRecord":
        return cls(**d)


def trial_status(iterations: int, epochs: int, max_t: int, failed: bool = False, finished: bool = True) -> str:
    """The one rule for a trial's status, for trials.json, its MLflow run, the console and what
    Optuna is told: failed, interrupted (the sweep stopped first), completed or stopped. A trial
    runs its own `epochs`; the scheduler's last rung (`max_t`) ends it too. Only a trial that
    ended before the smaller of the two was stopped early by the scheduler."""
    if failed:
        return "failed"
    if not finished:
        return "interrupted"
    return "completed" if iterations >= min(epochs, max_t) else "stopped"


@dataclass(frozen=True)
class SweepMeta:
    """What a sweep was started with (`sweep.json`): read by resume, the front and export."""

    space: str  # the search-space file
    family: str
    sampled_thresholds: bool  # Optuna sampled τ: each trial is one front point, not a post-hoc grid
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    pick: str = "knee"  # the space's `pick:`, the recommended point's rule (hiertune.sweep.front.Pick)
    objectives: tuple[str, ...] = ()  # the Optuna study's values, in order: what importance is reported under
    # What `--resume` starts it again with (absent in sweeps from before it was recorded): the
    # command line's settings over the space file (--set, --data, --outliers, --shifted-data,
    # --budget, --num-samples; local paths absolute), the image cache root, and what the data was.
    overrides: dict | None = None
    cache_dir: str | None = None
    inputs: dict | None = None  # DataInputs.to_dict(): the data's sources, sizes and digests
    # The searched values the budget left out ({axis: [values]}, hiertune.sweep.cost.without),
    # which `--resume` leaves out again.
    left_out: dict | None = None

    def to_dict(self) -> dict:
        return {"space": self.space, "family": self.family, "sampled_thresholds": self.sampled_thresholds,
                "resources": {"cpus_per_trial": self.cpus_per_trial, "gpus_per_trial": self.gpus_per_trial},
                "pick": self.pick, "objectives": list(self.objectives), "overrides": self.overrides,
                "cache_dir": self.cache_dir, "inputs": self.inputs, "left_out": self.left_out}


def write_meta(sweep_dir: Path, meta: SweepMeta) -> None:
    with atomic_file(sweep_dir / SWEEP_JSON) as tmp:
        tmp.write_text(json.dumps(meta.to_dict()))


def read_meta(sweep_dir: Path) -> SweepMeta:
    path = sweep_dir / SWEEP_JSON
    info = read_json(path)
    missing = [k for k in SWEEP_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise UserError(f"{path}: not a hiertune sweep record (missing {', '.join(missing)})")
    resources = info.get("resources") or {}
    try:
        # `pick` and `objectives` came later: an older sweep.json reads with the knee and no names.
        return SweepMeta(str(info["space"]), str(info["family"]), bool(info["sampled_thresholds"]),
                         float(resources.get("cpus_per_trial", 1.0)), float(resources.get("gpus_per_trial", 0.0)),
                         str(info.get("pick", "knee")), tuple(str(o) for o in info.get("objectives", ())),
                         _mapping(info.get("overrides"), path, "overrides"), info.get("cache_dir"),
                         _mapping(info.get("inputs"), path, "inputs"), _left_out(info.get("left_out"), path))
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: not a hiertune sweep record ({first_line(exc)})") from None


def _mapping(value, path: Path, key: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise UserError(f"{path}: not a hiertune sweep record ({key} is not a mapping)")
    return value


def _left_out(value, path: Path) -> dict | None:
    left_out = _mapping(value, path, "left_out")
    if left_out is not None and not all(isinstance(k, str) and isinstance(v, list) for k, v in left_out.items()):
        raise UserError(f"{path}: not a hiertune sweep record (left_out is not a mapping of axes to value lists)")
    return left_out


def find_meta(sweep_dir: Path) -> SweepMeta | None:
    """The sweep's record, or None for a folder that has none (results copied without it)."""
    return read_meta(sweep_dir) if (sweep_dir / SWEEP_JSON).exists() else None


def load_trials(sweep_dir: Path, within: str | None = None, live: bool = False) -> list[TrialRecord]:
    """The sweep's trial records. With `within` (the sweep's folder or S3 URI), every checkpoint
    must lie inside it: a record pointing elsewhere is refused, never followed. `live`: a running
    sweep's records when they are newer than its last trials.json."""
    path = sweep_dir / TRIALS_JSON
    live_path = sweep_dir / LIVE_JSON
    if live and live_path.is_file() and (not path.is_file() or live_path.stat().st_mtime >= path.stat().st_mtime):
        path = live_path
    if not path.is_file():
        raise UserError(f"{sweep_dir}: no sweep results ({TRIALS_JSON}) here; run `hiertune sweep` first")
    records = read_json(path)
    try:
        trials = [TrialRecord.from_dict(d) for d in records]
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a list of trial records ({type(exc).__name__}: {exc})") from None
    for t in trials if within is not None else ():
        if t.checkpoint is not None and not _inside(t.checkpoint, within):
            raise UserError(f"{path}: {t.name}'s checkpoint {t.checkpoint!r} is outside the sweep's folder {within} "
                            "(moved, or edited?)")
    if path.name == LIVE_JSON:  # a running sweep replaces a trial's checkpoint each epoch: skip one just dropped
        trials = [t for t in trials if t.checkpoint is None or "://" in t.checkpoint or Path(t.checkpoint).exists()]
    return trials


def _inside(location, root: str) -> bool:
    if not isinstance(location, str):
        return False
    if root.startswith("s3://") or location.startswith("s3://"):
        return location.startswith(root.rstrip("/") + "/") and ".." not in location.split("/")
    real = os.path.realpath(root)
    return os.path.commonpath([real, os.path.realpath(location)]) == real


def save_trials(sweep_dir: Path, trials: list[TrialRecord], live: bool = False) -> None:
    with atomic_file(sweep_dir / (LIVE_JSON if live else TRIALS_JSON)) as tmp:
        tmp.write_text(json.dumps([t.to_dict() for t in trials], indent=1, default=str))
    if not live:
        (sweep_dir / LIVE_JSON).unlink(missing_ok=True)


def write_ended(sweep_dir: Path, how: str) -> None:
    with atomic_file(sweep_dir / ENDED_JSON) as tmp:
        tmp.write_text(json.dumps({"ended": how}))


def read_ended(sweep_dir: Path) -> str | None:
    """How the sweep's last run ended; None for a sweep from before it was recorded, or running."""
    path = sweep_dir / ENDED_JSON
    info = read_json(path) if path.is_file() else None
    return info.get("ended") if isinstance(info, dict) else None


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; deep nesting
        raise UserError(f"{path}: unreadable or truncated ({first_line(exc)})") from None


def check_ray_state(tune_dir: Path) -> None:
    for pattern in RAY_PICKLES:
        if (path := newest(tune_dir, pattern)) is not None:
            _check_pickle(path)
    path = newest(tune_dir, RAY_EXPERIMENT_STATE)
    if path is None:
        raise UserError(f"{tune_dir}: Ray Tune saved no experiment state before the sweep stopped, so there is "
                        "nothing to resume; start it again under a new --name")
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list):
        raise UserError(f"{path}: not a Ray Tune experiment state (no trial_data)")


def newest(folder: Path, pattern: str) -> Path | None:
    """The file Ray reads among several sessions' copies: the greatest name (they end in a timestamp)."""
    return max(folder.glob(pattern), default=None)


def _check_pickle(path: Path) -> None:
    try:
        with path.open("rb") as f:
            names = _pickled_globals(pickletools.genops(f))
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: unreadable or truncated Ray Tune state ({first_line(exc)})") from None
    for module, name in names:
        if module.split(".")[0] == "hiertune" and not _exists(module, name):
            # A sweep started before hiertune's modules were regrouped into packages (the flat
            # layout: hiertune.sweep, hiertune.tracking, hiertune.trainable, ...) pickled names
            # that no longer exist; Ray would fail deep inside Tuner.restore.
            raise UserError(f"{path}: written by an older hiertune layout (it names {module}.{name}, which no "
                            "longer exists), so this sweep cannot be resumed; its results still serve "
                            "`hiertune pareto` and `hiertune export-best`, or start it again under a new --name")


def _pickled_globals(ops) -> set[tuple[str, str]]:
    """(module, name) of every global a pickle refers to, read from its opcodes without running it."""
    found, memo, strings, last = set(), {}, [], None
    for op, arg, _ in ops:
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
            last = arg
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = last
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(arg)
            if isinstance(last, str):
                strings.append(last)
        else:
            if op.name == "GLOBAL":
                found.add(tuple(arg.split(" ", 1)))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add((strings[-2], strings[-1]))
            last = None
    return found


def _exists(module: str, name: str) -> bool:
    try:  # only hiertune's own modules are imported: names come from a file, never run from it
        target = importlib.import_module(module)
    except (ImportError, ValueError, TypeError):  # a malformed name in a damaged file
        return False
    for part in name.split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True
