"""What one epoch of a trial reports, as a typed record: made by the training loop, flattened
for Ray Tune, MLflow and the checkpoint's history in `flat()`, and read back in `from_flat()`.
These two are the only places an epoch's metric names are spelt (the scheduler's and Optuna's
metric names come from the constants below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hiertune.novelty.records import GridPoint, ScoreFigures
from hiertune.training.losses import LOSS_PARTS

# The epoch's own post-hoc front as [[seen, unseen], ...]: the point set MO-ASHA ranks a trial by
# (hiertune.sweep.moasha). A few dozen pairs; the whole grid stays in the checkpoint.
FRONT = "front"
HYPERVOLUME = "hypervolume"  # the trial's own front's area: what ASHA ranks by with post-hoc thresholds
POINT = "point_"  # prefix of the config's own (score, τ_super, τ_sub) point's figures
# What Optuna samples thresholds for: the mean of the config's own point's seen and unseen.
POINT_OBJECTIVE = "point_objective"
RECOMMENDED_SCORE = "recommended_score"
# The learning rate after the epoch's last step: not `lr`, the hyperparameter's name, which
# MLflow already holds as the run's param (a metric of the same name would be refused there).
LR_NOW = "lr_now"


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's results: training, the post-hoc evaluation and what it cost."""

    epoch: int  # 1-based
    attempt: int  # how many times the trial was restarted before this epoch
    train_loss: float  # mean over the epoch's images
    train_parts: dict[str, float]  # mean of each of hiertune.training.losses.LOSS_PARTS
    val_loss: float
    lr_now: float  # after the epoch's last step
    recommended: GridPoint  # the knee of the epoch's own front: the trial's seen/unseen
    hypervolume: float  # the area of the front over every score
    front: tuple[tuple[float, float], ...]  # the front's (seen, unseen) pairs
    by_score: dict[str, ScoreFigures]  # the scores this evaluation covered, with their figures
    closed_seen_super_acc: float  # msp at threshold 0, in-source images: what seed 001 reports
    closed_seen_sub_acc: float
    # Real photos of known species at the recommended point (hiertune.novelty.photos): the share
    # called novel is the "real photo -> novel" shortcut the generated validation images cannot show.
    photos: dict[str, float]
    point: GridPoint  # the config's own (score, τ_super, τ_sub): what sampled thresholds optimise
    train_images: int
    outlier_images: int
    train_images_per_s: float
    epoch_seconds: float
    eval_forward_seconds: float
    scorer_fit_seconds: float
    full_evaluation: bool  # every score fitted (vim included)
    posthoc_seconds: float
    features_computed: int  # image pools this trial ran through its frozen backbone
    feature_seconds: float

    def __post_init__(self) -> None:
        if self.epoch < 1 or self.attempt < 0:
            raise ValueError(f"epoch must be >= 1 and attempt >= 0, got {self.epoch} and {self.attempt}")
        if set(self.train_parts) != set(LOSS_PARTS):
            raise ValueError(f"train_parts must name {', '.join(LOSS_PARTS)}, got {sorted(self.train_parts)}")
        if any(len(p) != 2 for p in self.front):
            raise ValueError("front must hold (seen, unseen) pairs")
        for name, figures in self.by_score.items():
            if not name or "," in name or not isinstance(figures, ScoreFigures):
                raise ValueError(f"by_score must map score names to ScoreFigures, got {name!r}")
        for name, value in self.photos.items():
            if not name.startswith("photos_") or not isinstance(value, float):
                raise ValueError(f"photos must map photos_* names to floats, got {name!r}: {value!r}")
        if not isinstance(self.recommended, GridPoint) or not isinstance(self.point, GridPoint):
            raise ValueError("recommended and point must be GridPoints")

    @property
    def point_objective(self) -> float:
        return (self.point.seen + self.point.unseen) / 2

    @property
    def scores(self) -> tuple[str, ...]:
        return tuple(self.by_score)

    def pairs(self, sampled_thresholds: bool) -> list[tuple[float, float]]:
        """The (seen, unseen) points this epoch puts on the sweep's front: its own post-hoc front,
        or, when Optuna sampled the thresholds, its one point."""
        return [(self.point.seen, self.point.unseen)] if sampled_thresholds else list(self.front)

    def flat(self) -> dict:
        """One level of numbers (and a few strings) for Ray Tune, MLflow and the history."""
        return {
            "epoch": self.epoch,
            "attempt": self.attempt,
            "train_loss": self.train_loss,
            **{f"train_{name}": self.train_parts[name] for name in LOSS_PARTS},
            "val_loss": self.val_loss,
            LR_NOW: self.lr_now,
            **self.recommended.figures(),
            RECOMMENDED_SCORE: self.recommended.score,
            HYPERVOLUME: self.hypervolume,
            "front_size": float(len(self.front)),
            FRONT: [list(p) for p in self.front],
            **{f"{key}_{score}": value for score, figures in self.by_score.items()
               for key, value in figures.figures().items()},
            "evaluated_scores": ",".join(self.by_score),
            "closed_seen_super_acc": self.closed_seen_super_acc,
            "closed_seen_sub_acc": self.closed_seen_sub_acc,
            **self.photos,
            **{f"{POINT}{key}": value for key, value in self.point.figures().items()},
            f"{POINT}score": self.point.score,
            POINT_OBJECTIVE: self.point_objective,
            "train_images": self.train_images,
            "outlier_images": self.outlier_images,
            "train_images_per_s": self.train_images_per_s,
            "epoch_seconds": self.epoch_seconds,
            "eval_forward_seconds": self.eval_forward_seconds,
            "scorer_fit_seconds": self.scorer_fit_seconds,
            "full_evaluation": float(self.full_evaluation),
            "posthoc_seconds": self.posthoc_seconds,
            "features_computed": self.features_computed,
            "feature_seconds": self.feature_seconds,
        }

    @classmethod
    def from_flat(cls, flat: dict) -> "EpochMetrics":
        """The record of a flattened epoch: a Ray Tune result, a history entry, a trial's last
        metrics in trials.json. What Ray added to a result is not the epoch's, and is left out;
        a figure that an older hiertune did not report reads as NaN. Not an epoch's result (a final failure's report,
        say): ValueError."""
        if not isinstance(flat, dict):
            raise ValueError(f"an epoch's metrics are a mapping, got {type(flat).__name__}")
        missing = [k for k in ("epoch", "seen", "unseen", HYPERVOLUME) if k not in flat]
        if missing:
            raise ValueError(f"not an epoch's metrics (no {', '.join(missing)})")
        scores = [s for s in str(flat.get("evaluated_scores", "")).split(",") if s]
        prefix = len(POINT)
        by_score = {s: ScoreFigures.from_figures({k: flat[f"{k}_{s}"] for k in _SCORE_FIGURES if f"{k}_{s}" in flat})
                    for s in scores}
        return cls(
            epoch=int(flat["epoch"]), attempt=int(flat.get("attempt", 0)),
            train_loss=_num(flat, "train_loss"),
            train_parts={name: _num(flat, f"train_{name}") for name in LOSS_PARTS},
            val_loss=_num(flat, "val_loss"),
            lr_now=_num(flat, LR_NOW if LR_NOW in flat else "lr"),  # `lr` in histories from before the rename
            recommended=GridPoint.from_figures(str(flat.get(RECOMMENDED_SCORE, "unknown")), flat),
            hypervolume=_num(flat, HYPERVOLUME),
            front=tuple((float(s), float(u)) for s, u in flat.get(FRONT, ())),
            by_score=by_score,
            closed_seen_super_acc=_num(flat, "closed_seen_super_acc"),
            closed_seen_sub_acc=_num(flat, "closed_seen_sub_acc"),
            photos={k: float(v) for k, v in flat.items() if k.startswith("photos_")},
            point=GridPoint.from_figures(str(flat.get(f"{POINT}score", "unknown")),
                                         {k[prefix:]: v for k, v in flat.items() if k.startswith(POINT)}),
            train_images=int(flat.get("train_images", 0)), outlier_images=int(flat.get("outlier_images", 0)),
            train_images_per_s=_num(flat, "train_images_per_s"), epoch_seconds=_num(flat, "epoch_seconds"),
            eval_forward_seconds=_num(flat, "eval_forward_seconds"),
            scorer_fit_seconds=_num(flat, "scorer_fit_seconds"),
            full_evaluation=bool(flat.get("full_evaluation", 1.0)),
            posthoc_seconds=_num(flat, "posthoc_seconds"),
            features_computed=int(flat.get("features_computed", 0)), feature_seconds=_num(flat, "feature_seconds"),
        )


_SCORE_FIGURES = tuple(ScoreFigures.__dataclass_fields__)


def _num(flat: dict, key: str) -> float:
    value = flat.get(key, math.nan)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"epoch metric {key} must be a number, got {value!r}")
    return float(value)

