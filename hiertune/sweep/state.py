"""A sweep's stored state, read and checked: its `sweep.json`, and Ray Tune's state before a resume.

`--resume` hands Ray Tune its own files: the pickled tuner, the newest experiment state (JSON) and
the newest searcher and search-generator states (pickles, whatever their suffix). Ray unpickles
them deep inside `Tuner.restore`, where a truncated file ends in a traceback, so each is checked
first: JSON by parsing it, a pickle by walking its opcodes (pickletools), which reads the whole
stream without running any of it. Trial checkpoints are not checked here: a trial whose
checkpoint is damaged fails on its own, with the file named (hiertune.faults).
"""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

from hiertune.errors import UserError
from hiertune.fsutil import atomic_file

SWEEP_JSON = "sweep.json"
SWEEP_KEYS = ("space", "family", "sampled_thresholds")
RAY_PICKLES = ("tuner.pkl", "searcher-state-*.pkl", "search_gen_state-*.json")
RAY_EXPERIMENT_STATE = "experiment_state-*.json"


def write_sweep_json(sweep_dir: Path, info: dict) -> None:
    with atomic_file(sweep_dir / SWEEP_JSON) as tmp:
        tmp.write_text(json.dumps(info))


def read_sweep_json(sweep_dir: Path) -> dict:
    path = sweep_dir / SWEEP_JSON
    info = read_json(path)
    missing = [k for k in SWEEP_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise UserError(f"{path}: not a hiertune sweep record (missing {', '.join(missing)})")
    return info


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path}: unreadable or truncated ({str(exc).splitlines()[0][:160]})") from None


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
            for _ in pickletools.genops(f):
                pass
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: unreadable or truncated Ray Tune state ({str(exc).splitlines()[0][:160]})") \
            from None
