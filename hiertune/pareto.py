"""The sweep's Pareto front of seen vs unseen accuracy, over trials × post-hoc settings.

Rule for what is comparable: every trial's latest checkpoint holds the whole post-hoc grid of
its last evaluation, on the same validation split and protocol for every trial. Each is a real
model measured the same way, so all of them enter the front, completed trials and those ASHA
stopped early alike; the `epochs` column says at which fidelity, and a winner is retrained for
that many epochs. Failed trials and trials without a checkpoint do not enter.
"""

from __future__ import annotations

import csv
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiertune.errors import UserError
from hiertune.fsutil import atomic_file
from hiertune.metrics import pareto_front
from hiertune.novelty import PosthocResult
from hiertune.plots import plot_front
from hiertune.state import read_json
from hiertune.train import Checkpoint

ACCURACIES = ("seen_super_acc", "unseen_super_acc", "seen_sub_acc", "unseen_sub_acc")
# interrupted: the sweep stopped before the trial finished; `--resume` continues it.
STATUSES = ("completed", "stopped", "failed", "interrupted")


@dataclass
class TrialRecord:
    trial_id: str
    name: str
    status: str  # one of STATUSES
    epochs: int
    params: dict  # the sampled parameters
    checkpoint: Path | None
    metrics: dict
    error: str | None = None

    def to_dict(self) -> dict:
        return {**self.__dict__, "checkpoint": str(self.checkpoint) if self.checkpoint else None}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialRecord":
        return cls(**{**d, "checkpoint": Path(d["checkpoint"]) if d["checkpoint"] else None})


def front_points(trials: list[TrialRecord], sampled_thresholds: bool = False) -> list[dict]:
    """Every (trial × score × τ_super × τ_sub) point of trials that have a checkpoint; or, when
    Optuna sampled the thresholds, each trial's one point at its sampled thresholds."""
    points = []
    for t in trials:
        if t.checkpoint is None or t.status == "failed":
            continue
        if sampled_thresholds:
            m = t.metrics
            points.append({"trial": t.name, "trial_id": t.trial_id, "status": t.status, "epochs": t.epochs,
                           **{f"param.{k}": v for k, v in sorted(t.params.items())},
                           "score": t.params.get("novelty_score", "msp"), "tau_super": t.params.get("tau_super"),
                           "tau_sub": t.params.get("tau_sub"),
                           **{k: m[f"point_{k}"] for k in (*ACCURACIES, "seen", "unseen")}})
            continue
        path = t.checkpoint / Checkpoint.POSTHOC
        try:
            result = PosthocResult.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"{path}: unreadable post-hoc results ({str(exc).splitlines()[0][:120]})") from None
        for s, i, j in np.ndindex(*result.grid.shape[:3]):
            p = result.point(s, i, j)
            if np.isnan(p["seen"]) or np.isnan(p["unseen"]):
                continue
            points.append({"trial": t.name, "trial_id": t.trial_id, "status": t.status, "epochs": t.epochs,
                           **{f"param.{k}": v for k, v in sorted(t.params.items())},
                           **{k: p[k] for k in ("score", "tau_super", "tau_sub", "thr_super", "thr_sub", *ACCURACIES,
                                                "seen", "unseen")}})
    return points


def compute_front(points: list[dict]) -> list[dict]:
    if not points:
        return []
    index = pareto_front(np.array([[p["seen"], p["unseen"]] for p in points]))
    return [points[k] for k in index]


def write_front(sweep_dir: Path, name: str, points: list[dict], front: list[dict]) -> tuple[Path, Path]:
    csv_path, png_path = sweep_dir / "pareto.csv", sweep_dir / "pareto.png"
    columns = list(dict.fromkeys(k for p in front for k in p))
    with atomic_file(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(front)
    plot_front(points, front, png_path, f"{name}: seen vs unseen ({len(points):,} trial × post-hoc points)")
    return csv_path, png_path


def load_trials(sweep_dir: Path) -> list[TrialRecord]:
    path = sweep_dir / "trials.json"
    if not path.is_file():
        raise UserError(f"{sweep_dir}: no sweep results (trials.json) here; run `hiertune sweep` first")
    records = read_json(path)
    try:
        return [TrialRecord.from_dict(d) for d in records]
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a list of trial records ({type(exc).__name__}: {exc})") from None


def save_trials(sweep_dir: Path, trials: list[TrialRecord]) -> None:
    with atomic_file(sweep_dir / "trials.json") as tmp:
        tmp.write_text(json.dumps([t.to_dict() for t in trials], indent=1, default=str))


def render(front: list[dict]) -> str:
    params = sorted({k for p in front for k in p if k.startswith("param.")})
    head = ["trial", "epochs", *[k[6:] for k in params], "score", "tau_sup", "tau_sub",
            "seen_sup", "unseen_sup", "seen_sub", "unseen_sub", "seen", "unseen"]
    rows = [[p["trial"], p["epochs"], *[_fmt(p.get(k)) for k in params], p["score"], _fmt(p["tau_super"]),
             _fmt(p["tau_sub"]), *[_fmt(p[k]) for k in ACCURACIES], _fmt(p["seen"]), _fmt(p["unseen"])]
            for p in front]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [head, *rows])


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
