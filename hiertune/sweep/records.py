"""The sweep's typed records: a trial's outcome as Ray reports it, and a point of the front.

`TrialOutcome` is the one place Ray's bookkeeping (`training_iteration`, `done`, a final
failure's extra report) is read and a trial's name and status decided: trials.json, its MLflow
run, the console and what Optuna is told all take them from here. `FrontPoint` is what the front
hands to the table, the plots, `pareto --json` and `export-best`; `row()` is its one flattening
(pareto.csv's columns, the JSON's keys). `SweepPoints` holds every point of a sweep as arrays,
FrontPoints made only of those asked for; `SweepFront` is the front as written to its files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hiertune.novelty.metrics import pareto_front
from hiertune.novelty.records import NOVEL_GROUPS, GridPoint, ScoreFigures
from hiertune.sweep.state import STATUSES, trial_status
from hiertune.training.faults import FAILURE_KEY
from hiertune.training.records import EpochMetrics

ITERATION = "training_iteration"  # Ray's count of a trial's results


def trial_name(number: int | None, trial_id: str) -> str:
    """A trial as the console, its MLflow run and trials.json call it: Optuna's trial number; a
    trial Optuna has not numbered (none yet) by its Ray id, never by a number it does not have."""
    return f"trial-{int(number):02d}" if number is not None else f"trial-{trial_id}"


@dataclass(frozen=True)
class TrialOutcome:
    """Where a trial stands, from Ray's latest result for it and its config."""

    trial_id: str
    number: int | None  # Optuna's trial number (None: not sampled yet)
    planned: int  # the epochs it runs: its own `epochs`, capped by the scheduler's max_t
    epochs: int  # the epochs it reported
    failure: str | None  # why it failed, when it did
    finished: bool  # it ended on its own terms (False: the sweep stopped first)
    last: EpochMetrics | None  # its latest epoch's metrics (None: none reported, or a failure's report)

    def __post_init__(self) -> None:
        if not self.trial_id or self.planned < 1 or self.epochs < 0:
            raise ValueError(f"a trial outcome needs an id, planned >= 1 and epochs >= 0; got {self.trial_id!r}, "
                             f"{self.planned}, {self.epochs}")

    @property
    def name(self) -> str:
        return trial_name(self.number, self.trial_id)

    @property
    def status(self) -> str:
        return trial_status(self.epochs, self.planned, self.planned, failed=self.failure is not None,
                            finished=self.finished)

    @classmethod
    def read(cls, trial_id: str, result: dict | None, config: dict | None, max_t: int, error: str | None = None,
             ended: bool = False) -> "TrialOutcome":
        """`result`: Ray's latest result of the trial; `error`: the error Ray recorded, if any;
        `ended`: the trial is known to have ended (Tune said so, or an earlier run of the sweep)."""
        result, config = result or {}, config or {}
        failure = result.get(FAILURE_KEY)
        # A final failure's report is one result past the trial's last epoch.
        epochs = max(0, int(result.get(ITERATION, 0)) - (1 if failure else 0))
        planned = max(1, min(int(config.get("epochs", max_t)), max_t))
        # Without `done` the sweep stopped (Ctrl+C, its budget) before the trial finished, unless it
        # reported its last epoch: Ray's state, saved as the sweep stopped, may predate that `done`.
        finished = ended or bool(result.get("done")) or epochs >= planned
        number = config.get("trial_number")
        last = EpochMetrics.from_flat(result) if not failure and "epoch" in result else None
        return cls(trial_id, None if number is None else int(number), planned, epochs, failure or error, finished,
                   last)

    @classmethod
    def of_trial(cls, trial, max_t: int, failed: bool = False) -> "TrialOutcome":
        """A Tune Trial that has ended (`failed`: with an error): what a callback sees."""
        error = (trial.last_result or {}).get(FAILURE_KEY) or error_line(trial) if failed else None
        return cls.read(trial.trial_id, trial.last_result, trial.config, max_t, error=error, ended=True)


def error_line(trial) -> str:
    """The last line of a failed trial's error file."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed (see its error file in the sweep's tune/ folder)"


@dataclass(frozen=True)
class FrontPoint:
    """One (trial × post-hoc setting) point of a sweep: the trial it belongs to and the grid point."""

    trial: str
    trial_id: str
    status: str
    epochs: int  # the fidelity it was measured at: what export-best retrains for
    params: dict  # the trial's sampled parameters
    point: GridPoint
    by_score: dict[str, ScoreFigures] = field(default_factory=dict)  # the trial's every score, for its AUROCs

    def __post_init__(self) -> None:
        if self.status not in STATUSES or self.epochs < 0 or not isinstance(self.point, GridPoint):
            raise ValueError(f"front point of {self.trial}: status {self.status!r}, epochs {self.epochs}")

    @property
    def seen(self) -> float:
        return self.point.seen

    @property
    def unseen(self) -> float:
        return self.point.unseen

    @property
    def score(self) -> str:
        return self.point.score

    def measured(self) -> bool:
        return not (math.isnan(self.point.seen) or math.isnan(self.point.unseen))

    def auroc(self, group: str, score: str | None = None) -> float:
        """`score`'s AUROC (this point's score by default) against one of NOVEL_GROUPS."""
        figures = self.by_score.get(score or self.point.score)
        return figures.auroc(group) if figures is not None else math.nan

    def row(self) -> dict:
        """The point flat: pareto.csv's columns, `pareto --json`'s keys, what an export records."""
        figures = self.point.figures()
        return {"trial": self.trial, "trial_id": self.trial_id, "status": self.status, "epochs": self.epochs,
                **{f"param.{k}": v for k, v in sorted(self.params.items())},
                "score": self.point.score, **{k: figures[k] for k in _ROW_FIGURES},
                **{f"auroc_{g}.{s}": f.auroc(g) for g in NOVEL_GROUPS for s, f in self.by_score.items()}}


@dataclass(frozen=True)
class PointPhotos:
    """Real photos of known species (`--shifted-data`) as the recommended point's trial logged
    them at its last evaluation (hiertune.novelty.photos): superclass and subclass accuracy and
    the share called a novel superclass, overall and per species (name -> the three). They were
    measured at the trial's own recommended point; `other_point` names it when that is not the
    sweep's recommended point (another score or τ of the same trial)."""

    super_acc: float
    sub_acc: float
    called_novel: float
    species: dict[str, tuple[float, float, float]]
    other_point: str | None = None

    def to_dict(self) -> dict:
        return {"photos_super_acc": self.super_acc, "photos_sub_acc": self.sub_acc,
                "photos_called_novel": self.called_novel, "species": {k: list(v) for k, v in self.species.items()},
                "other_point": self.other_point}

    def render(self) -> str:
        at = f"at {self.other_point}, the trial's own recommended point" if self.other_point else "at this point"
        each = ", ".join(f"{name} {1 - v[2]:.0%}/{v[0]:.0%}/{v[1]:.0%}" for name, v in self.species.items())
        return (f"  real photos of known species (--shifted-data, validation), {at}: {1 - self.called_novel:.1%} "
                f"accepted as a known superclass, {self.super_acc:.1%} right superclass, {self.sub_acc:.1%} right "
                f"subclass" + (f"\n  per species (accepted/superclass/subclass): {each}" if each else ""))


# pareto.csv's figure columns, in their order: thresholds, the leaderboard's accuracies and the
# objectives, seen acceptance, then each validation group.
_ROW_FIGURES = ("tau_super", "tau_sub", "thr_super", "thr_sub", "seen_super_acc", "unseen_super_acc", "seen_sub_acc",
                "unseen_sub_acc", "seen", "unseen", "accept_super", "accept_sub", "accept_shifted_super",
                "accept_shifted_sub", "seen_acc", "seen_shifted_acc", "novel_sub_acc", "novel_super_acc",
                "accept_shifted")


@dataclass(frozen=True)
class SweepPoints:
    """Every measured (trial × post-hoc setting) point of a sweep, as arrays in the order the
    trials and their grids list them. A sweep has tens of thousands of them; only the front and
    the few a page shows become FrontPoints (`at`)."""

    seen: np.ndarray  # [P]
    unseen: np.ndarray  # [P]
    score: np.ndarray  # [P] each point's novelty score
    owner: np.ndarray  # [P] index into `sources`
    cell: np.ndarray  # [P] the flat (score, τ_super, τ_sub) index into its source's grid
    sources: tuple  # per trial: (TrialRecord, PosthocResult), or its one FrontPoint (sampled thresholds)

    @classmethod
    def of(cls, points: list[FrontPoint]) -> "SweepPoints":
        """Points that are FrontPoints already (a trial's one sampled point each)."""
        return cls(np.array([p.seen for p in points], float), np.array([p.unseen for p in points], float),
                   np.array([p.score for p in points], str), np.arange(len(points)), np.zeros(len(points), int),
                   tuple(points))

    def __len__(self) -> int:
        return len(self.seen)

    def at(self, indices) -> list[FrontPoint]:
        points = []
        for k in indices:
            source = self.sources[self.owner[k]]
            if isinstance(source, FrontPoint):
                points.append(source)
                continue
            t, result = source
            s, i, j = map(int, np.unravel_index(self.cell[k], result.grid.shape[:3]))
            points.append(FrontPoint(t.name, t.trial_id, t.status, t.epochs, t.params, result.point(s, i, j),
                                     result.by_score))
        return points

    def front(self) -> list[FrontPoint]:
        """The non-dominated points, seen descending (as compute_front orders them)."""
        return self.at(pareto_front(np.stack([self.seen, self.unseen], 1))) if len(self) else []


@dataclass(frozen=True)
class SweepFront:
    """A sweep's front as written: its points, the recommended one under the sweep's pick, and
    where pareto.csv / .png / .html are (local paths, or the sweep's S3 locations)."""

    points: int  # trial × post-hoc points the front was taken over
    front: list[FrontPoint]
    pick: str
    recommended: FrontPoint | None
    pareto_csv: str
    pareto_png: str
    pareto_html: str
    photos: PointPhotos | None = None  # --shifted-data photos at the recommended point's trial

    def __post_init__(self) -> None:
        if self.recommended is not None and not any(p is self.recommended for p in self.front):
            raise ValueError("the recommended point must be one of the front's")

    def to_dict(self) -> dict:
        return {"front": [p.row() for p in self.front], "points": self.points, "pick": self.pick,
                "recommended": self.recommended.row() if self.recommended else None,
                "pareto_csv": self.pareto_csv, "pareto_png": self.pareto_png, "pareto_html": self.pareto_html,
                "recommended_photos": self.photos.to_dict() if self.photos else None}

    def files(self) -> str:
        return f"{self.pareto_csv}, {self.pareto_png}, {self.pareto_html}"

    def render_recommended(self) -> str:
        b = self.recommended
        if b is None:
            return "no recommended point: no trial reported a checkpoint"
        return (f"* recommended ({self.pick}): {b.trial} at {b.epochs} epochs, {b.score} with τ_super "
                f"{b.point.tau_super:.3f}, τ_sub {b.point.tau_sub:.3f}: seen {b.seen:.3f}, unseen {b.unseen:.3f} "
                "on validation" + (f"\n{self.photos.render()}" if self.photos else ""))
