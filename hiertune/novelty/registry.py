"""Novelty scores by name, each registered with what it needs.

A score is a function of one level's `LevelInput` returning a [N] tensor, "higher = more
familiar", decorated with `@register_score(name, needs=...)`. What it needs decides where it can
be computed, which the registry answers (`unavailable`) and the scorer fit reads (only what some
score of the grid needs is fitted):

    logits              the level's logits (every score has them)
    class_means         FeatureScorer.means: per-class means of clean training features
    covariance          FeatureScorer.whiten: their shrunk tied covariance
    train_features      FeatureScorer.bank: a reservoir of normalised training features
    head                HeadStats: the level's linear (or cosine) head and its statistics
    principal_subspace  HeadStats' vim subspace, an eigendecomposition fitted on the epochs the
                        scheduler reads only (VIM_SKIPPED)

This module imports no score: hiertune.novelty's `__init__` imports the modules that register
them. Adding a score is one module with its function and decorator, and one import there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from hiertune.errors import UserError, did_you_mean
from hiertune.novelty.memo import Memo

NEEDS = ("logits", "class_means", "covariance", "train_features", "head", "principal_subspace")
LEVELS = ("super", "sub")
VIM_SKIPPED = "fitted on the epochs the scheduler reads (its rungs) and the last one only"


@dataclass
class LevelInput:
    """One level of one batch, as a score reads it (CPU tensors)."""

    logits: Tensor  # [N, outputs] float64, a trailing novel logit included when the head has one
    n_seen: int  # the first n_seen logits are the seen classes'
    mask: Tensor | None  # [N, n_seen] bool: the classes allowed (the subclasses of the predicted superclass); None: all
    argmax: Tensor  # [N] the level's predicted seen class
    features: Tensor  # [N, D] the features feeding the level's head
    # The level's fitted statistics (a hiertune.novelty.scores.FeatureScorer, which imports this
    # module); None where no feature need was fitted.
    scorer: Any
    knn_k: int
    memo: Memo | None  # what depends on features alone, shared across a trial's epochs (hiertune.novelty.memo)


ScoreFn = Callable[[LevelInput], Tensor]


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    fn: ScoreFn
    needs: frozenset[str]
    bounds: tuple[float, float] | None  # the values it can take where bounded: a threshold outside was calibrated on another score

    def level(self, level: LevelInput) -> Tensor:
        return self.fn(level)

    @property
    def logits_only(self) -> bool:
        return self.needs <= {"logits"}


_SCORES: dict[str, ScoreSpec] = {}


def register_score(name: str, needs: tuple[str, ...] = ("logits",),
                   bounds: tuple[float, float] | None = None) -> Callable[[ScoreFn], ScoreFn]:
    def add(fn: ScoreFn) -> ScoreFn:
        if name in _SCORES:
            raise ValueError(f"score {name!r} registered twice")
        unknown = [n for n in needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"score {name!r}: unknown need {unknown[0]!r} (known: {', '.join(NEEDS)})")
        _SCORES[name] = ScoreSpec(name, fn, frozenset(needs), bounds)
        return fn

    return add


def list_scores() -> tuple[str, ...]:
    """Every registered score, in registration order."""
    return tuple(_SCORES)


def score(name: str) -> ScoreSpec:
    if name not in _SCORES:
        raise UserError(f"unknown novelty score {name!r}{did_you_mean(name, _SCORES, list_known=True)}")
    return _SCORES[name]


def needs_of(names) -> frozenset[str]:
    """What the scores `names` need together: what a scorer fit for them must provide."""
    return frozenset().union(*(score(n).needs for n in names))


def unavailable(name: str, scorers: dict[str, Any] | None) -> str | None:
    """Why score `name` cannot be computed with these scorers (both levels'), or None when it can."""
    needs = score(name).needs
    if needs <= {"logits"}:
        return None
    if not scorers or any(scorers.get(level) is None for level in LEVELS):
        return "needs feature scorers for both levels ('super', 'sub')"
    if "head" in needs and any(scorers[level].head is None for level in LEVELS):
        return "needs a linear or cosine classifier head at both levels"
    if "principal_subspace" in needs and any(scorers[level].head.vim_residual is None for level in LEVELS):
        return VIM_SKIPPED
    return None
