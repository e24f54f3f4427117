"""Sweeps found by name, and listed (`hiertune ls`).

A local sweep is a folder holding `sweep.json`, inside a storage folder (`./sweeps` unless
`--storage` says otherwise). Without `--storage`, a name is looked for in `./sweeps` and in
the storage folders inside it (the demo's `sweeps/demo`), and the name of such a storage folder
stands for its newest sweep: `hiertune pareto demo` after `hiertune demo`.

Only the standard library and hiertune's light modules here: the CLI resolves a name before it
imports Ray, MLflow or torch, so a misspelt name is answered at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hiertune.errors import UserError
from hiertune.sweep.state import SWEEP_JSON, TRIALS_JSON, TrialCounts, load_trials, read_ended, read_meta

DEFAULT_ROOT = "sweeps"


@dataclass(frozen=True)
class SweepEntry:
    name: str
    storage: str  # the folder holding the sweep's folder (SweepPlace.root)
    status: str  # finished | interrupted | budget spent | unfinished
    trials: TrialCounts  # from trials.json
    modified: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "trials": self.trials.nonzero()}


def find_sweep(name: str, storage: str | None) -> tuple[str, str]:
    """(storage, name) of the sweep a user named. With `storage` given (a folder or S3), it is
    taken as is: the caller checks the sweep is there."""
    if storage is not None:
        return storage, name
    root = Path(DEFAULT_ROOT)
    matches = [e for e in list_sweeps(root) if e.name == name]
    if not matches:  # the name of a storage folder: its newest sweep
        matches = sorted((e for e in list_sweeps(root) if Path(e.storage).name == name and
                          Path(e.storage).resolve() != root.resolve()), key=lambda e: e.modified)[-1:]
    if not matches:
        raise UserError(f"no sweep named {name!r} in ./{DEFAULT_ROOT} or the storage folders inside it; "
                        f"`hiertune ls` lists the sweeps, --storage looks elsewhere")
    if len(matches) > 1:
        raise UserError(f"{len(matches)} sweeps are named {name!r} (in " + ", ".join(e.storage for e in matches)
                        + "); pass --storage")
    return matches[0].storage, matches[0].name


def list_sweeps(root: str | Path = DEFAULT_ROOT) -> list[SweepEntry]:
    """Every sweep in `root` and in the storage folders directly inside it, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for storage in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for folder in sorted(p for p in storage.iterdir() if p.is_dir()) if storage.is_dir() else []:
            if (folder / SWEEP_JSON).is_file():
                found.append(_entry(folder))
    return sorted(found, key=lambda e: e.modified)


def _entry(folder: Path) -> SweepEntry:
    trials = TrialCounts()
    status = "unfinished"  # running now, or its driver was killed (--resume continues it)
    try:
        read_meta(folder)
    except UserError:  # neither pareto, export-best nor --resume can read it
        status = f"damaged {SWEEP_JSON}"
    if (folder / TRIALS_JSON).is_file() and status == "unfinished":
        try:
            trials = TrialCounts.of(r.status for r in load_trials(folder))
            status = "interrupted" if trials.interrupted else "finished"
            if read_ended(folder) == "budget":  # its cut trials are the budget's, not a Ctrl+C's
                status = "budget spent"
        except (UserError, ValueError):  # unreadable, or a status no hiertune wrote
            status = f"damaged {TRIALS_JSON}"
    modified = max(p.stat().st_mtime for p in folder.iterdir()) if any(folder.iterdir()) else folder.stat().st_mtime
    return SweepEntry(folder.name, str(folder.parent.resolve()), status, trials, modified)


@dataclass(frozen=True)
class SweepList:
    """`hiertune ls`: the sweeps of a storage folder and the storage folders inside it."""

    storage: str
    sweeps: list[SweepEntry]

    def to_dict(self) -> dict:
        return {"storage": self.storage, "sweeps": [e.to_dict() for e in self.sweeps]}

    def render(self) -> str:
        return render(self.sweeps, self.storage)


def render(entries: list[SweepEntry], root: str) -> str:
    if not entries:
        return f"no sweeps in {root} (run `hiertune demo` or `hiertune sweep SPACE`)"
    rows = [("name", "status", "trials", "modified", "storage")]
    for e in entries:
        counts = ", ".join(f"{n} {s}" for s, n in e.trials.nonzero().items()) or "-"
        rows.append((e.name, e.status, counts, time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified)),
                     e.storage))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)) + "  " + r[4] for r in rows)
