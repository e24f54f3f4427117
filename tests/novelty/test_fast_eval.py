"""The post-hoc grid from sorted scores and cumulative counts, and the scores from memoised
feature statistics, against the straightforward implementation they replaced
(tests/novelty/posthoc_reference.py), on random data with ties, NaN and infinite scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hiertune.data.splits import GROUPS, SHIFTED
from hiertune.models.registry import Heads
from hiertune.novelty.ood_scores import HeadStats, LinearHead
from hiertune.novelty.posthoc import EvalBatch, PosthocConfig, posthoc_grid
from hiertune.novelty.memo import Memo
from hiertune.novelty.registry import VIM_SKIPPED, list_scores
from hiertune.novelty.scores import FeatureBank, all_level_scores
from tests.novelty.posthoc_reference import reference_grid, reference_levels

S, K, D = 3, 9, 6
SUB_TO_SUPER = (0, 0, 0, 1, 1, 1, 2, 2, 2)
HEADS = Heads(S, K, SUB_TO_SUPER, novel_logit=True)
ARRAYS = ("thr_super", "thr_sub", "grid", "threshold_free", "accept_super", "accept_sub", "group_acc", "group_auroc",
          "accept_shifted", "accept_shifted_super", "accept_shifted_sub")

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n: int, seed: int, coarse: bool, shared_features: bool = False) -> EvalBatch:
    """Random logits, features, labels and groups; `coarse` rounds the logits to a few values,
    so scores tie often and thresholds coincide with scores."""
    g = torch.Generator().manual_seed(seed)
    super_logits = torch.randn(n, S + 1, generator=g) * 2
    sub_logits = torch.randn(n, K + 1, generator=g) * 2
    if coarse:
        super_logits, sub_logits = super_logits.round(), sub_logits.round()
    sub = torch.randint(0, K + 1, (n,), generator=g)
    sup = torch.where(sub < K, torch.tensor(SUB_TO_SUPER + (0,))[sub], torch.randint(0, S + 1, (n,), generator=g))
    sub = torch.where(sup == S, K, sub)
    group = torch.where(sup == S, 2, torch.where(sub == K, 1, 0))
    shifted = (torch.rand(n, generator=g) < 0.2) & (group == 0)
    group = torch.where(shifted, SHIFTED, group)
    f_sub = torch.randn(n, D, generator=g)
    f_super = f_sub if shared_features else torch.randn(n, D, generator=g)
    if coarse:
        f_super, f_sub = f_super.round(), f_sub.round()
    return EvalBatch(super_logits, sub_logits, f_super, f_sub, sup, sub, group)


def scorers(seed: int, vim: bool = True, memo: Memo | None = None):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for level, n in (("super", S), ("sub", K)):
        x = torch.randn(200, D, generator=g)
        y = torch.randint(0, n, (200,), generator=g)
        bank = FeatureBank(n, D, 50)
        bank.update(x, y)
        head = LinearHead(torch.randn(n, D, generator=g, dtype=torch.float64),
                          torch.randn(n, generator=g, dtype=torch.float64), False)
        out[level] = bank.fit(head=HeadStats.fit(x, head, vim=vim, memo=memo))
    return out


def assert_same(new, old):
    assert new.scores == old.scores and new.skipped == old.skipped and new.counts == old.counts
    for name in ARRAYS:
        # Raw thresholds are score values, some as large as 1e17 (scale's exp on random features):
        # equal to the last bits; every rate and accuracy to 1e-12.
        rtol = 1e-12 if name.startswith("thr_") else 0
        np.testing.assert_allclose(getattr(new, name), getattr(old, name), rtol=rtol, atol=1e-12, equal_nan=True,
                                   err_msg=name)
    assert [(p.score, p.tau_super, p.tau_sub) for p in new.front] == \
        [(p.score, p.tau_super, p.tau_sub) for p in old.front]


@pytest.mark.parametrize("seed,coarse", [(0, False), (1, True), (2, True), (3, False)])
def test_grid_from_cumulative_counts_equals_the_reference(seed, coarse):
    b, sc = batch(300, seed, coarse), scorers(seed)
    # Unsorted, repeated and end-point τ, so thresholds tie with each other and with scores.
    config = PosthocConfig(tau_super=(0.5, 0.0, 0.99, 0.5, 1.0, 0.2), tau_sub=(0.85, 0.02, 1.0, 0.0, 0.85),
                           knn_k=5, shifted_weight=0.3)
    assert_same(posthoc_grid(b, HEADS, config, sc), reference_grid(b, HEADS, config, sc))
    assert_same(posthoc_grid(b, HEADS, PosthocConfig(knn_k=5), sc, Memo()),
                reference_grid(b, HEADS, PosthocConfig(knn_k=5), sc))


def test_nan_and_infinite_scores_and_no_seen_images_count_as_before():
    b = batch(200, 4, True)
    b.super_logits[:7, 0] = torch.nan  # NaN msp, energy... on some images
    b.sub_logits[7:12] = -torch.inf
    b.sub_logits[12:15, :K] = torch.inf
    config = PosthocConfig(scores=("msp", "energy", "maxlogit", "gen"), knn_k=5)
    with np.errstate(invalid="ignore"):
        assert_same(posthoc_grid(b, HEADS, config), reference_grid(b, HEADS, config))
        # No in-source seen images: every quantile threshold NaN, nothing accepted.
        none = dataclasses.replace(b, group=torch.where(b.group == 0, SHIFTED, b.group))
        assert_same(posthoc_grid(none, HEADS, config), reference_grid(none, HEADS, config))


def test_memoised_scores_equal_the_reference_and_follow_changed_features():
    memo = Memo()
    sc = scorers(5, memo=memo)
    for seed in (6, 6, 7):  # the second epoch reads the memo; the third has other features
        b = batch(150, seed, False, shared_features=True)
        got = all_level_scores(b, HEADS, list_scores(), sc, 5, memo)
        for name in list_scores():
            want = reference_levels(b, HEADS, name, sc, 5)
            for level in ("super_score", "sub_score", "super_argmax", "sub_argmax"):
                # scale reuses the head's product (exp(r)·(z·Wᵀ) for (z·exp(r))·Wᵀ): equal to the last bits.
                rtol = 1e-12 if name == "scale" and level.endswith("score") else 0
                torch.testing.assert_close(getattr(got[name], level), getattr(want, level), rtol=rtol, atol=0,
                                           equal_nan=True, msg=f"{name} {level}")


def test_a_grid_without_vim_says_so_and_the_rest_is_unchanged():
    b = batch(200, 8, False)
    full, light = scorers(9), scorers(9, vim=False)
    without = posthoc_grid(b, HEADS, PosthocConfig(knn_k=5), light)
    assert "vim" not in without.scores and without.skipped == {"vim": VIM_SKIPPED}
    whole = posthoc_grid(b, HEADS, PosthocConfig(knn_k=5), full)
    keep = [whole.scores.index(s) for s in without.scores]
    np.testing.assert_array_equal(without.grid, whole.grid[keep])
    assert len(GROUPS) == without.group_acc.shape[3]


def test_a_grid_point_found_equals_the_point_computed_alone():
    from hiertune.novelty.posthoc import point_metrics

    b, sc = batch(200, 10, True), scorers(10)
    result = posthoc_grid(b, HEADS, PosthocConfig(knn_k=5, shifted_weight=0.4), sc)
    for score, ts, tu in (("rmds", 0.95, 0.8), ("msp", 0.0, 0.5), ("vim", 0.02, 0.075)):
        alone = point_metrics(b, HEADS, score, ts, tu, sc, knn_k=5, shifted_weight=0.4)
        found = result.find(score, ts, tu)
        assert found.score == alone.score and found.figures() == pytest.approx(alone.figures(), nan_ok=True)
    assert result.find("msp", 0.42, 0.5) is None


class TwoHeads(torch.nn.Module):
    def __init__(self, seed: int, cosine: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        if cosine:
            from hiertune.models.cosine import CosineClassifier

            self.super_head, self.sub_head = CosineClassifier(D, S + 1, 10.0), CosineClassifier(D, K + 1, 10.0)
        else:
            self.super_head, self.sub_head = torch.nn.Linear(D, S + 1), torch.nn.Linear(D, K + 1)


@pytest.mark.parametrize("cosine", [False, True])
def test_memoised_fit_over_epochs_equals_the_reference_fit(cosine):
    """Epochs with the same features and new heads: the memo refits only what the heads change,
    and every score, AUROC and the front stay what fitting from scratch gives."""
    from hiertune.models.registry import ModelOutput
    from hiertune.training.loop import fit_scorers
    from tests.novelty.posthoc_reference import reference_fit

    g = torch.Generator().manual_seed(11)
    f = torch.randn(300, D, generator=g).relu() + 0.5  # post-ReLU-like features with a large mean
    out = ModelOutput(torch.zeros(300, S + 1), torch.zeros(300, K + 1), f, f)  # dualhead: one feature, two levels
    sub = torch.randint(0, K, (300,), generator=g)
    sup = torch.tensor(SUB_TO_SUPER)[sub]
    memo = Memo()
    b = batch(250, 12, False, shared_features=True)
    b.super_features = b.sub_features = b.sub_features.relu() + 0.5
    for epoch in range(3):
        model = TwoHeads(epoch, cosine)
        new = fit_scorers(out, sup, sub, HEADS, model, memo)
        old = reference_fit(out, sup, sub, HEADS, model)
        config = PosthocConfig(knn_k=5)
        got, want = posthoc_grid(b, HEADS, config, new, memo), reference_grid(b, HEADS, config, old)
        assert got.scores == want.scores == list_scores()
        np.testing.assert_allclose(got.group_auroc, want.group_auroc, rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.threshold_free, want.threshold_free, rtol=0, atol=1e-9, equal_nan=True)
        for name in list_scores():
            a, r = all_level_scores(b, HEADS, (name,), new, 5, memo)[name], reference_levels(b, HEADS, name, old, 5)
            torch.testing.assert_close(a.sub_score, r.sub_score, rtol=1e-9, atol=1e-9, msg=name)
            torch.testing.assert_close(a.super_score, r.super_score, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("seed", range(6))
def test_ranked_measures_equal_the_rank_based_reference_with_ties_nan_and_infinities(seed):
    from hiertune.novelty.metrics import RankedScores
    from tests.novelty import posthoc_reference as ref

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = rng.integers(-5, 6, n).astype(float) if seed % 2 else rng.normal(size=n)  # odd seeds: ties everywhere
    for value in (np.nan, np.inf, -np.inf):
        scores[rng.random(n) < 0.05] = value
    ranked = RankedScores(scores)
    for _ in range(5):
        known, novel = rng.random(n) < rng.random(), rng.random(n) < 0.3
        novel &= ~known
        correct = rng.random(n) < 0.6
        assert ranked.auroc(known, novel) == pytest.approx(ref.auroc(scores[known], scores[novel]), abs=1e-12,
                                                           nan_ok=True)
        assert ranked.fpr_at_95(known, novel) == pytest.approx(ref.fpr_at_95(scores[known], scores[novel]),
                                                               abs=1e-12, nan_ok=True)
        assert ranked.oscr(known, novel, correct) == pytest.approx(
            ref.oscr(correct[known], scores[known], scores[novel]), abs=1e-12, nan_ok=True)


def test_the_memo_keeps_feature_statistics_across_epochs_for_levels_with_different_features():
    """twomodel: a feature per level. Epochs with the same features reuse both levels' fits (the
    same tensors come back); new features are fitted again."""
    from hiertune.models.registry import ModelOutput
    from hiertune.training.loop import fit_scorers

    g = torch.Generator().manual_seed(13)
    f_super, f_sub = torch.randn(200, D, generator=g), torch.randn(200, D, generator=g)
    sub = torch.randint(0, K, (200,), generator=g)
    sup = torch.tensor(SUB_TO_SUPER)[sub]
    memo = Memo()
    epochs = [fit_scorers(ModelOutput(torch.zeros(200, S + 1), torch.zeros(200, K + 1), f_super.clone(), f_sub.clone()),
                          sup, sub, HEADS, TwoHeads(epoch), memo) for epoch in range(2)]
    for level in ("super", "sub"):
        first, second = epochs[0][level], epochs[1][level]
        assert second.whiten is first.whiten and second.bank is first.bank and second.head.whiten is first.head.whiten
        assert not torch.equal(second.head.vim_residual, first.head.vim_residual)  # new heads: refitted
    moved = fit_scorers(ModelOutput(torch.zeros(200, S + 1), torch.zeros(200, K + 1), f_super + 1, f_sub), sup, sub,
                        HEADS, TwoHeads(0), memo)
    assert moved["super"].whiten is not epochs[1]["super"].whiten and moved["sub"].whiten is epochs[1]["sub"].whiten
