"""Ensembles of heads: the averaged output, and greedy ensemble selection on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiertune.models.registry import Heads
from hiertune.novelty.ensemble import combine, ensemble_grid, select
from hiertune.novelty.posthoc import EvalBatch, PosthocConfig

HEADS = Heads(2, 4, (0, 0, 1, 1), novel_logit=False)


def _batch(quality: float, seed: int) -> EvalBatch:
    """Validation outputs of a model whose logits point at the truth with strength `quality` plus
    noise: 60 seen images (superclass 0/1, subclasses 0-3) and 40 novel ones (novel superclass)."""
    gen = torch.Generator().manual_seed(seed)
    sub_t = torch.cat([torch.arange(60) % 4, torch.full((40,), 4)])
    sup_t = torch.cat([(torch.arange(60) % 4) // 2, torch.full((40,), 2)])
    sub_logits = torch.randn(100, 4, generator=gen)
    sup_logits = torch.randn(100, 2, generator=gen)
    seen = torch.arange(60)
    sub_logits[seen, sub_t[:60]] += quality
    sup_logits[seen, sup_t[:60]] += quality
    return EvalBatch(sup_logits, sub_logits, sup_logits, sub_logits, sup_t, sub_t)


def test_combine_averages_logits_and_one_member_is_itself():
    a, b = _batch(2.0, 0), _batch(2.0, 1)
    assert torch.allclose(combine([a], [3]).super_logits, a.super_logits)
    mixed = combine([a, b], [1, 3])
    assert torch.allclose(mixed.sub_logits, 0.25 * a.sub_logits + 0.75 * b.sub_logits, atol=1e-6)
    assert mixed.super_target is a.super_target and mixed.super_features is a.super_features


def test_selection_starts_from_the_best_model_and_never_ends_below_it():
    library = [_batch(0.5, 0), _batch(3.0, 1), _batch(3.0, 2), _batch(0.0, 3)]
    grid = PosthocConfig(shifted_weight=0.0)
    chosen = select(library, HEADS, 5, grid)
    singles = [ensemble_grid(b, HEADS, grid).hypervolume for b in library]
    assert chosen.single == pytest.approx(max(singles))
    assert chosen.steps[0] == pytest.approx(max(singles))  # the path starts from the best single model
    assert chosen.hypervolume == pytest.approx(max(chosen.steps)) and chosen.hypervolume >= chosen.single
    assert 1 <= sum(chosen.counts) <= 5 and len(chosen.steps) == 5
    assert chosen.counts[3] == 0  # the model that knows nothing adds nothing
    # Two good models with independent noise: averaging them beats either alone.
    assert set(chosen.members) >= {1, 2} and chosen.hypervolume > chosen.single
    assert np.isfinite(chosen.steps).all()
