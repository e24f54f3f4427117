"""What `hiertune sweep` and `hiertune pareto` return: typed results that print themselves for a
person (`render()`) and as JSON (`to_dict()`, the `--json` line's keys), and the commands a
person runs next.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hiertune.errors import UserError
from hiertune.progress import duration
from hiertune.sweep.catalog import find_sweep
from hiertune.sweep.front import point_report, render
from hiertune.sweep.importance import render as render_importance
from hiertune.sweep.records import FrontPoint, SweepFront
from hiertune.sweep.state import TrialCounts

FRONT_ROWS = 10  # front points printed; pareto.csv and --json have them all


@dataclass(frozen=True)
class Importance:
    """Parameter importance per objective (hiertune.sweep.importance), its plot, and the study."""

    objectives: dict[str, dict[str, float]]
    png: str | None
    study: str

    def to_dict(self) -> dict:
        return {"objectives": self.objectives, "png": self.png, "study": self.study}


@dataclass(frozen=True)
class SweepResult:
    """What one run of `hiertune sweep` did."""

    name: str
    storage: str  # where the sweep's folder is (SweepPlace.root)
    dir: str  # the sweep's folder or S3 URI
    mlflow_uri: str  # redacted
    ended: str  # how: hiertune.sweep.ending
    budget: float | None
    trials: TrialCounts
    not_started: int
    scheduler: str
    wall_seconds: float
    front: SweepFront
    importance: Importance | None = None

    def __post_init__(self) -> None:
        if self.not_started < 0:
            raise ValueError(f"a sweep cannot have {self.not_started} trials not started")

    def to_dict(self) -> dict:
        return {"name": self.name, "storage": self.storage, "dir": self.dir, "mlflow_uri": self.mlflow_uri,
                "ended": self.ended, "budget": self.budget, "trials": self.trials.to_dict(), "not_started": self.not_started,
                "scheduler": self.scheduler, "wall_seconds": self.wall_seconds, **self.front.to_dict(),
                "importance": self.importance.to_dict() if self.importance else {}}

    def render(self, with_next_steps: bool = True) -> str:
        t = self.trials
        if self.ended == "budget":
            cut = (f", {t.interrupted} cut by it" if t.interrupted else "") + \
                f", {self.not_started} not started: the {duration(self.budget)} budget ended the sweep"
        else:
            cut = f", {t.interrupted} interrupted (--resume continues them)" if t.interrupted else ""
        f = self.front
        return (f"sweep {self.name}: {t.completed} completed, {t.stopped} stopped by {self.scheduler}, "
                f"{t.failed} failed{cut} in {self.wall_seconds:.0f}s\n"
                f"front: {len(f.front)} of {f.points:,} trial × post-hoc points ({f.files()})\n"
                f"{render(f.front, f.recommended, rows=FRONT_ROWS)}\n{f.render_recommended()}\n"
                + (f"{render_importance(self.importance.objectives)}\n" if self.importance else "")
                + (self.next_steps() if with_next_steps else ""))

    def next_steps(self, export_dir: str | None = None, test_images: str | None = None) -> str:
        return next_steps(self.name, self.storage, self.mlflow_uri, self.importance.study if self.importance else None,
                          export_dir, test_images)

    def interrupted_line(self) -> str:
        """Ctrl+C as one line: what finished and what the resume continues."""
        t = self.trials
        cut = f", {t.interrupted} cut (the resume continues them)" if t.interrupted else ""
        return f"{t.completed + t.stopped} trial(s) finished{cut}, {self.not_started} not started"


@dataclass(frozen=True)
class ParetoResult:
    """`hiertune pareto`: the front of what the sweep's trials have reported, and with --groups
    the point `picked_by` names in full."""

    name: str
    front: SweepFront
    groups: bool
    picked: FrontPoint | None = None
    picked_by: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "groups": self.groups, **self.front.to_dict(),
                **({"picked": self.picked.row(), "picked_by": self.picked_by} if self.picked else {})}

    def render(self) -> str:
        f = self.front
        text = (f"{self.name}: {len(f.front)} non-dominated of {f.points:,} points ({f.files()})\n"
                f"{render(f.front, f.recommended, rows=FRONT_ROWS, groups=self.groups)}\n"
                f"{f.render_recommended()}")
        if self.picked is not None:
            text += f"\n\n{self.picked_by} point:\n{point_report(self.picked)}"
        return text


def next_steps(name: str, storage: str, mlflow_uri: str = "", study: str | None = None,
               export_dir: str | None = None, test_images: str | None = None) -> str:
    """What to run next after sweep `name` (in `storage`; its MLflow store and Optuna study),
    as commands that work when pasted into the same shell and folder."""
    me = hiertune_command()
    where = where_flag(name, storage)
    bin_dir = Path(sys.executable).parent
    lines = ["next:",
             f"  {me} pareto {name}{where}   # the front again: table, pareto.png, pareto.html (hover for details)",
             f"  {me} export-best {name}{where} --top 2   # retrain the 2 best points on all labeled data",
             f"  {me} ls{where}   # every sweep, with its status and storage"]
    if export_dir and test_images:
        lines.append(f"  {me} predict {shlex.quote(export_dir)} {shlex.quote(test_images)} -o predictions.csv"
                     "   # the exported model on a folder of images")
    if mlflow_uri.startswith("sqlite:"):
        mlflow = _tool(bin_dir, "mlflow")
        lines.append(f"  {mlflow} ui --backend-store-uri {mlflow_uri} --port 5000   # then open "
                     "http://127.0.0.1:5000 (runs, metrics, plots)")
    elif mlflow_uri:
        lines.append(f"  MLflow: open {mlflow_uri} in a browser")
    if study:
        dashboard = bin_dir / "optuna-dashboard"
        if dashboard.exists():
            lines.append(f"  {_tool(bin_dir, 'optuna-dashboard')} {study} --port 8080   # then open "
                         "http://127.0.0.1:8080 (Optuna's history, importance, parallel coordinates)")
        else:
            lines.append(f"  Optuna study: {study} (pip install optuna-dashboard==0.21.0, then optuna-dashboard {study})")
    return "\n".join(lines)


def resume_command(name: str, storage: str) -> str:
    return f"{hiertune_command()} sweep --name {shlex.quote(name)}{where_flag(name, storage)} --resume"


def where_flag(name: str, storage: str) -> str:
    """` --storage S` unless the plain name finds the sweep from here."""
    try:
        return "" if find_sweep(name, None) == (storage, name) else f" --storage {shlex.quote(storage)}"
    except UserError:
        return f" --storage {shlex.quote(storage)}"


def hiertune_command() -> str:
    """How the user ran hiertune: the console script as typed (`.venv/bin/hiertune`), else python -m."""
    if Path(sys.argv[0]).name == "hiertune":
        return shlex.quote(sys.argv[0])
    return f"{shlex.quote(sys.executable)} -m hiertune"


def _tool(bin_dir: Path, name: str) -> str:
    """A console script beside this Python: what to type when its venv is not activated."""
    path = bin_dir / name
    on_path = shutil.which(name)
    return name if on_path and Path(on_path).resolve() == path.resolve() else str(path)
