"""What the post-hoc grid hands to the rest of hiertune: one grid point, and one score's
threshold-free figures, as typed records checked where they are made.

A point's field names are the names its figures have everywhere (the leaderboard's accuracies,
the validation groups' `<group>_acc`): the front's CSV columns, the epoch's metrics and the
exported model's metrics.json are all written from these records, never spelt again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from hiertune.data.splits import GROUPS
from hiertune.novelty.metrics import ACCURACIES, OBJECTIVES

MEASURES = ("auroc", "fpr95", "oscr")
NOVEL_GROUPS = ("novel_sub", "novel_super")  # the groups an AUROC against the seen images is kept for
# Figures that are rates in [0, 1] (or NaN: a group without images).
_RATES = (*ACCURACIES, "overall_super_acc", "overall_sub_acc", *OBJECTIVES, "accept_super", "accept_sub",
          "accept_shifted", "accept_shifted_super", "accept_shifted_sub", *(f"{g}_acc" for g in GROUPS))


@dataclass(frozen=True)
class GridPoint:
    """Everything about one (score, τ_super, τ_sub) of a post-hoc grid (hiertune.novelty.posthoc):
    the raw thresholds τ resolved to, the seen images each accepts, the leaderboard's accuracies
    and the two objectives, and each validation group's accuracy."""

    score: str
    tau_super: float
    tau_sub: float
    thr_super: float  # raw thresholds: a score below one is novel at that level
    thr_sub: float
    accept_super: float  # in-source seen images the superclass threshold accepts
    accept_sub: float
    accept_shifted: float  # seen_shifted images accepted at both levels
    accept_shifted_super: float
    accept_shifted_sub: float
    seen_super_acc: float
    unseen_super_acc: float
    seen_sub_acc: float
    unseen_sub_acc: float
    overall_super_acc: float
    overall_sub_acc: float
    seen: float
    unseen: float
    seen_acc: float  # per validation group (hiertune.data.splits.GROUPS): mean of its two levels
    seen_shifted_acc: float
    novel_sub_acc: float
    novel_super_acc: float

    def __post_init__(self) -> None:
        if not isinstance(self.score, str) or not self.score:
            raise ValueError(f"a grid point's score must be a score's name, got {self.score!r}")
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"grid point {f.name} must be a number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        for name in ("tau_super", "tau_sub", *_RATES):
            value = getattr(self, name)
            if not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise ValueError(f"grid point {name} must be in [0, 1] (or NaN), got {value}")

    @classmethod
    def unmeasured(cls, score: str, tau_super: float, tau_sub: float) -> "GridPoint":
        """A point the trial could not measure (its score is unavailable): NaN figures."""
        return cls(score, tau_super, tau_sub, *[math.nan] * (len(fields(cls)) - 3))

    def figures(self) -> dict[str, float]:
        """Every numeric field by name: how a point is flattened (an epoch's metrics, a CSV row)."""
        return {f.name: getattr(self, f.name) for f in fields(self)[1:]}

    @classmethod
    def from_figures(cls, score: str, figures: dict) -> "GridPoint":
        """The inverse of `figures`; a figure missing from an older record is NaN."""
        return cls(score, *[float(figures.get(f.name, math.nan)) for f in fields(cls)[1:]])


@dataclass(frozen=True)
class ScoreFigures:
    """One score's threshold-free figures at an evaluation: the hypervolume of its own
    (seen, unseen) grid, AUROC / FPR@95 / OSCR per level, and its AUROC per novel group."""

    hypervolume: float
    super_auroc: float
    super_fpr95: float
    super_oscr: float
    sub_auroc: float
    sub_fpr95: float
    sub_oscr: float
    auroc_novel_sub: float  # seen vs novel_sub images, by the subclass score
    auroc_novel_super: float  # seen vs novel_super images, by the superclass score

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"score figure {f.name} must be a number, got {value!r}")
            object.__setattr__(self, f.name, float(value))

    def figures(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_figures(cls, figures: dict) -> "ScoreFigures":
        return cls(*[float(figures.get(f.name, math.nan)) for f in fields(cls)])

    def auroc(self, group: str) -> float:
        """The AUROC against one of NOVEL_GROUPS."""
        if group not in NOVEL_GROUPS:
            raise ValueError(f"no AUROC is kept for group {group!r}; expected one of {', '.join(NOVEL_GROUPS)}")
        return self.auroc_novel_sub if group == "novel_sub" else self.auroc_novel_super
