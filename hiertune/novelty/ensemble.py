"""Ensembles of trained heads: their averaged predictions, and which members to average.

An ensemble's output is the weighted mean of its members' logits at each level, so every logit
score reads it as it reads one model's (averaged probabilities would leave energy and max-logit
nothing to measure: the log of a probability vector has a log-sum-exp of 0), and an ensemble of
one model is that model. Members share one frozen backbone, so the penultimate
features are the first member's; the feature-space scores are not offered for an ensemble (their
statistics are fitted per model), only the scores that need logits alone (`logit_scores`).

Members are chosen by ensemble selection (Caruana et al., 2004, "Ensemble selection from
libraries of models", as AutoGluon does): start from the best single model, then greedily add,
with replacement, the library model whose addition gives the highest validation figure, `size`
times in all; a model picked k times weighs k. The figure is the hypervolume of the ensemble's own
post-hoc front: the threshold-free scalar the sweep ranks trials by.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

from hiertune.models.registry import Heads, ModelOutput
from hiertune.novelty.posthoc import EvalBatch, PosthocConfig, PosthocResult, posthoc_grid
from hiertune.novelty.registry import list_scores, score


def mean_logits(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The members' logits of one level, averaged with their weights."""
    total = float(sum(weights))
    return sum(w / total * t.double() for w, t in zip(weights, logits)).float()


def combine(batches: list[EvalBatch], weights: list[float]) -> EvalBatch:
    """An ensemble's validation outputs: the weighted mean of the members' logits per level."""
    first = batches[0]
    return EvalBatch(mean_logits([b.super_logits for b in batches], weights),
                     mean_logits([b.sub_logits for b in batches], weights),
                     first.super_features, first.sub_features, first.super_target, first.sub_target, first.group)


Outputs = TypeVar("Outputs", EvalBatch, ModelOutput)


def average_views(outputs: list[Outputs]) -> Outputs:
    """One model's outputs (validation's EvalBatch, or a prediction's ModelOutput) of the same
    images under test-time views, averaged: logits and features alike (on linear heads over
    frozen features the two agree), so every score reads the views' mean."""

    def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([t.double() for t in tensors]).mean(0).float()

    super_features = mean([o.super_features for o in outputs])
    # Both levels reading one feature (dualhead) keep one tensor, as evaluation made it.
    shared = all(o.sub_features is o.super_features for o in outputs)
    return replace(outputs[0], super_logits=mean([o.super_logits for o in outputs]),
                   sub_logits=mean([o.sub_logits for o in outputs]), super_features=super_features,
                   sub_features=super_features if shared else mean([o.sub_features for o in outputs]))


def logit_scores(names=None) -> tuple[str, ...]:
    """The scores among `names` (default: every registered one) that read logits alone."""
    return tuple(n for n in (names or list_scores()) if score(n).logits_only)


def ensemble_grid(batch: EvalBatch, heads: Heads, grid: PosthocConfig) -> PosthocResult:
    """The post-hoc grid of an ensemble's (or one model's) outputs: `grid`'s thresholds and
    weights over its logit scores (every logit score when it declares none)."""
    return posthoc_grid(batch, heads, replace(grid, scores=logit_scores(grid.scores) or logit_scores()))


@dataclass(frozen=True)
class Selection:
    counts: tuple[int, ...]  # per library model: how many times it was picked (its weight)
    hypervolume: float  # of the selected ensemble's front
    single: float  # of the best single model's front
    steps: tuple[float, ...]  # the hypervolume after each pick

    @property
    def members(self) -> list[int]:
        return [i for i, c in enumerate(self.counts) if c]


def select(library: list[EvalBatch], heads: Heads, size: int, grid: PosthocConfig) -> Selection:
    """Greedy ensemble selection with replacement of `size` picks from `library` on validation,
    each candidate measured on `grid` (ensemble_grid)."""
    if not library:
        raise ValueError("ensemble selection needs at least one model")
    figure = {}

    def hypervolume(counts: tuple[int, ...]) -> float:
        if counts not in figure:
            chosen = [i for i, c in enumerate(counts) if c]
            batch = combine([library[i] for i in chosen], [counts[i] for i in chosen])
            figure[counts] = ensemble_grid(batch, heads, grid).hypervolume
        return figure[counts]

    def one(i: int) -> tuple[int, ...]:
        return tuple(int(k == i) for k in range(len(library)))

    singles = [hypervolume(one(i)) for i in range(len(library))]
    path = [one(int(np.argmax(singles)))]
    for _ in range(size - 1):
        candidates = [tuple(c + (k == i) for k, c in enumerate(path[-1])) for i in range(len(library))]
        path.append(max(candidates, key=hypervolume))
    steps = tuple(hypervolume(c) for c in path)
    best = int(np.argmax(steps))  # Caruana: the best prefix of the greedy path (the first, on ties)
    return Selection(path[best], steps[best], max(singles), steps)
