"""Novelty scores, the feature bank, hierarchical prediction, and the post-hoc grid against
brute force."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hiertune.data.splits import GROUPS, NOVEL_SUB, NOVEL_SUPER, SEEN, SHIFTED
from hiertune.errors import UserError
from hiertune.models.registry import Heads
from hiertune.novelty.metrics import LEADERBOARD_KEYS, leaderboard_metrics
from hiertune.novelty.ood_scores import HeadStats, LinearHead
from hiertune.novelty.posthoc import EvalBatch, PosthocConfig, PosthocResult, decide, posthoc_grid, raw_thresholds
from hiertune.novelty.registry import list_scores
from hiertune.novelty.scores import FeatureBank, FeatureScorer, score_levels
from tests.novelty.posthoc_reference import logit_score

S, K, D = 3, 9, 6
SUB_TO_SUPER = (0, 0, 0, 1, 1, 1, 2, 2, 2)
TAUS = (0.0, 0.05, 0.2, 0.5, 0.8, 0.85, 0.95, 0.99, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def heads(novel_logit: bool) -> Heads:
    return Heads(S, K, SUB_TO_SUPER, novel_logit)


def synthetic(n: int, novel_logit: bool, seed: int, kinds=(0, 1, 2)):
    """Images of kind 0 (seen), 1 (novel subclass of a seen superclass), 2 (novel superclass),
    with logits and features that lean, noisily, toward the truth."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.tensor(kinds)[torch.randint(0, len(kinds), (n,), generator=g)]
    sub = torch.randint(0, K, (n,), generator=g)
    sup = torch.tensor(SUB_TO_SUPER)[sub]
    rows = torch.arange(n)
    extra = int(novel_logit)
    super_logits = torch.randn(n, S + extra, generator=g)
    super_logits[rows, sup] += 2.0 * (kind < 2)
    sub_logits = torch.randn(n, K + extra, generator=g)
    sub_logits[rows, sub] += 2.0 * (kind == 0)
    if novel_logit:
        super_logits[:, -1] += 1.5 * (kind == 2)
        sub_logits[:, -1] += 1.5 * (kind > 0)
    centres = torch.randn(K, D, generator=torch.Generator().manual_seed(99)) * 2
    sub_features = centres[sub] * (kind == 0)[:, None] + torch.randn(n, D, generator=g)
    super_features = sub_features + 0.5 * torch.randn(n, D, generator=g)
    return EvalBatch(super_logits, sub_logits, super_features, sub_features,
                     torch.where(kind == 2, S, sup), torch.where(kind == 0, sub, K))


def linear_heads(seed: int = 7) -> dict[str, LinearHead]:
    g = torch.Generator().manual_seed(seed)
    return {level: LinearHead(torch.randn(n, D, generator=g, dtype=torch.float64),
                              torch.randn(n, generator=g, dtype=torch.float64), False)
            for level, n in (("super", S), ("sub", K))}


def fit_scorers(seed: int = 1, capacity: int = 64) -> dict[str, FeatureScorer]:
    train = synthetic(300, False, seed)  # its novel rows must be ignored by the banks
    banks = {"super": FeatureBank(S, D, capacity), "sub": FeatureBank(K, D, capacity)}
    banks["super"].update(train.super_features, train.super_target)
    banks["sub"].update(train.sub_features, train.sub_target)
    seen = {"super": train.super_target < S, "sub": train.sub_target < K}
    features = {"super": train.super_features, "sub": train.sub_features}
    return {level: bank.fit(head=HeadStats.fit(features[level][seen[level]], head))
            for (level, bank), head in zip(banks.items(), linear_heads().values())}


@pytest.mark.parametrize("novel_logit", [False, True])
def test_grid_equals_brute_force_predict_and_leaderboard_metrics(novel_logit):
    batch, h, scorers = synthetic(200, novel_logit, 0), heads(novel_logit), fit_scorers()
    config = PosthocConfig(tau_super=TAUS, tau_sub=TAUS[::-1][:7], knn_k=5)
    result = posthoc_grid(batch, h, config, scorers)
    assert result.scores == list_scores()
    assert result.grid.shape == (len(list_scores()), len(TAUS), 7, 4)
    for s, name in enumerate(result.scores):
        for i in range(len(config.tau_super)):
            for j in range(len(config.tau_sub)):
                levels = score_levels(batch, h, name, scorers, config.knn_k)
                pred_super, pred_sub = decide(levels, h, result.thr_super[s, i], result.thr_sub[s, j])
                expected = leaderboard_metrics(pred_super, pred_sub, batch.super_target, batch.sub_target,
                                               S, K)
                got = result.point(s, i, j).figures()
                assert {k: got[k] for k in LEADERBOARD_KEYS} == pytest.approx(expected), (name, i, j)
                # The seen acceptance per level, by that level's score alone: what export calibrates to.
                levels = score_levels(batch, h, name, scorers, config.knn_k)
                seen_super = batch.super_target.numpy() < S
                seen_sub = batch.sub_target.numpy() < K
                assert got["accept_super"] == pytest.approx(
                    (levels.super_score.numpy()[seen_super] >= result.thr_super[s, i]).mean())
                assert got["accept_sub"] == pytest.approx(
                    (levels.sub_score.numpy()[seen_sub] >= result.thr_sub[s, j]).mean())


def test_front_is_non_dominated_and_the_recommended_point_is_its_knee():
    result = posthoc_grid(synthetic(200, True, 3), heads(True), PosthocConfig(knn_k=5), fit_scorers())
    points = np.stack([result.seen.ravel(), result.unseen.ravel()], 1)
    front = np.array([(p.seen, p.unseen) for p in result.front])
    for p in front:
        assert not ((points >= p).all(1) & (points > p).any(1)).any()
    for q in points:  # and every grid point is weakly dominated by the front
        assert ((front >= q).all(1)).any()
    # The recommended point is the front point farthest above the chord between its ends, not a
    # corner (rejecting everything: unseen 1), whatever the grid's maximum of seen + unseen.
    rec = np.array([result.recommended.seen, result.recommended.unseen])
    assert any((rec == p).all() for p in front)
    if len(front) >= 3:
        lo, span = front.min(0), np.ptp(front, 0)
        height = ((front - lo) / span).sum(1)
        assert ((rec - lo) / span).sum() == pytest.approx(height.max())
        assert result.recommended.unseen < front[:, 1].max()
    assert result.hypervolume > 0


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])  # msp's [0, 1] and energy's unbounded scale alike
def test_raw_thresholds_reject_tau_of_seen_images(scale):
    scores = np.random.default_rng(0).normal(size=500) * scale
    seen = np.arange(500) < 400
    thr = raw_thresholds(TAUS, scores, seen)
    rejected = (scores[seen][None, :] < thr[:, None]).mean(1)
    assert np.abs(rejected - np.array(TAUS)).max() <= 1 / 400 + 1e-12
    assert np.isnan(raw_thresholds([0.5], scores, np.zeros(500, bool))).all()


@pytest.mark.parametrize("score", list_scores())
def test_predictions_are_hierarchically_consistent(score):
    batch, h, scorers = synthetic(300, True, 5), heads(True), fit_scorers()
    s = score_levels(batch, h, score, scorers, knn_k=5)
    owner = np.array(SUB_TO_SUPER)
    for q_super, q_sub in [(0.1, 0.9), (0.5, 0.5), (0.9, 0.1), (0.0, 0.0)]:
        thr_super = np.quantile(s.super_score.numpy(), q_super)
        thr_sub = np.quantile(s.sub_score.numpy(), q_sub)
        pred_super, pred_sub = (p.numpy() for p in decide(s, h, thr_super, thr_sub))
        seen_sub = pred_sub < K
        assert (pred_super[seen_sub] < S).all()
        assert (owner[pred_sub[seen_sub]] == pred_super[seen_sub]).all()
        assert (pred_sub[pred_super == S] == K).all()


def test_logit_scores_by_direct_computation():
    logits = torch.randn(50, K + 1)
    mask = torch.rand(50, K) < 0.5
    mask[:, 0] = True
    probs = logits.softmax(1)[:, :K]  # the novel logit takes part in the softmax
    for i in range(50):
        row, allowed = logits[i:i + 1], mask[i]

        def score(name):
            return logit_score(row, K, name, mask[i:i + 1]).item()

        assert score("msp") == pytest.approx(probs[i][allowed].max().item())
        assert score("maxlogit") == pytest.approx(logits[i, :K][allowed].max().item())
        energy = math.log(sum(math.exp(v) for v in logits[i, :K][allowed].tolist()))
        assert score("energy") == pytest.approx(energy, rel=1e-5)
    assert torch.allclose(logit_score(logits, K, "maxlogit"), logits[:, :K].double().amax(1))


def test_feature_scores_are_skipped_without_scorers():
    result = posthoc_grid(synthetic(100, False, 0), heads(False), PosthocConfig())
    assert result.scores == ("msp", "energy", "maxlogit", "gen")
    assert "msp" in result.by_score and "knn" not in result.by_score
    assert set(result.skipped) == {"mahalanobis", "knn", "rmds", "fdbd", "scale", "vim"}
    headless = {level: dataclasses.replace(sc, head=None) for level, sc in fit_scorers().items()}
    result = posthoc_grid(synthetic(100, False, 0), heads(False), PosthocConfig(), headless)
    assert "knn" in result.scores and "vim" not in result.scores
    assert "classifier head" in result.skipped["vim"]
    with pytest.raises(ValueError, match="scorers"):
        score_levels(synthetic(10, False, 0), heads(False), "mahalanobis")


def test_missing_group_gives_nan_and_the_sweep_goes_on():
    batch = synthetic(100, False, 0, kinds=(0, 1))  # no novel superclass in validation
    result = posthoc_grid(batch, heads(False), PosthocConfig(scores=("msp",)))
    assert np.isnan(result.grid[..., 1]).all()
    assert np.allclose(result.unseen, result.grid[..., 3])
    msp = result.by_score["msp"]
    assert math.isnan(msp.super_auroc) and not math.isnan(msp.sub_auroc)
    assert len(result.front) >= 1 and not math.isnan(result.recommended.unseen)


def test_config_rejects_unknown_scores_and_taus():
    with pytest.raises(UserError, match="scores"):
        PosthocConfig(scores=("msp", "odin"))
    with pytest.raises(UserError, match="tau_sub"):
        PosthocConfig(tau_sub=(0.5, 1.5))
    assert PosthocConfig(tau_super=[0.1, 0.2]).tau_super == (0.1, 0.2)


def test_result_save_load_round_trip(tmp_path):
    result = posthoc_grid(synthetic(120, True, 2), heads(True), PosthocConfig(knn_k=5), fit_scorers())
    result.save(tmp_path / "posthoc.npz")
    loaded = PosthocResult.load(tmp_path / "posthoc.npz")
    assert loaded.scores == result.scores and loaded.counts == result.counts
    assert np.array_equal(loaded.grid, result.grid)
    assert [p.figures() for p in loaded.front] == [pytest.approx(p.figures(), nan_ok=True) for p in result.front]
    assert [p.score for p in loaded.front] == [p.score for p in result.front]
    assert loaded.recommended.figures() == pytest.approx(result.recommended.figures(), nan_ok=True)
    assert loaded.skipped == result.skipped
    assert {s: f.figures() for s, f in loaded.by_score.items()} == \
        {s: pytest.approx(f.figures(), nan_ok=True) for s, f in result.by_score.items()}


@pytest.mark.parametrize("damage", ["grid-shape", "grid-range", "tau-nan", "ints", "counts", "score-name"])
def test_a_saved_result_that_does_not_hold_together_fails_its_load(tmp_path, damage):
    """A sweep's front reads saved grids cell by cell as arrays: a file whose arrays disagree in
    shape, or whose rates leave [0, 1], fails at its load (ValueError, which the checkpoint's
    reader names in one line), not later as a point of the front."""
    result = posthoc_grid(synthetic(120, True, 2), heads(True), PosthocConfig(knn_k=5), fit_scorers())
    if damage == "grid-shape":
        result.grid = result.grid[:, :-1]
    elif damage == "grid-range":
        result.grid[0, 0, 0, 0] = 1.5
    elif damage == "tau-nan":
        result.tau_sub[2] = np.nan
    elif damage == "ints":
        result.accept_super = result.accept_super.astype(np.int64)
    elif damage == "counts":
        result.counts = {**result.counts, "seen_super": -3}
    else:
        result.scores = (*result.scores[:-1], "")
    result.save(tmp_path / "posthoc.npz")
    with pytest.raises(ValueError):
        PosthocResult.load(tmp_path / "posthoc.npz")


# --- FeatureBank / FeatureScorer ---

def _train(n=400, seed=0, n_classes=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    labels[labels == 3] = 2  # class 3 never appears: it must not attract any image
    labels[:20] = n_classes  # outliers: ignored
    features = torch.randn(n, D, generator=g) + 10 + 3 * torch.nn.functional.one_hot(labels % D, D)
    return features, labels


@pytest.mark.parametrize("capacity", [1000, 50])
def test_bank_streamed_in_chunks_equals_all_at_once(capacity):
    features, labels = _train()
    whole, chunked = FeatureBank(5, D, capacity, seed=3), FeatureBank(5, D, capacity, seed=3)
    whole.update(features, labels)
    for start in range(0, len(labels), 37):
        chunked.update(features[start:start + 37], labels[start:start + 37])
    a, b = whole.fit().state_dict(), chunked.fit().state_dict()
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-9), key


def test_mahalanobis_matches_numpy():
    features, labels = _train()
    scorer = _bank(features, labels).fit(shrinkage=0.1)
    x, y = features.numpy().astype(float), labels.numpy()
    keep = y < 5
    x, y = x[keep], y[keep]
    present = np.array([(y == c).any() for c in range(5)])
    means = np.stack([x[y == c].mean(0) if present[c] else np.zeros(D) for c in range(5)])
    cov = (x - means[y]).T @ (x - means[y]) / len(x)
    cov = 0.9 * cov + 0.1 * np.trace(cov) / D * np.eye(D)
    precision = np.linalg.inv(cov)
    # Half the queries sit near the origin, where a never-seen class's zero mean would win.
    queries = np.random.default_rng(1).normal(size=(30, D)) + 10 * (np.arange(30) % 2)[:, None]
    mask = np.random.default_rng(2).random((30, 5)) < 0.6
    mask[:, 0] = True
    d2 = np.array([[(q - m) @ precision @ (q - m) for m in means] for q in queries])
    expected = -np.where(mask & present, d2, np.inf).min(1)
    got = scorer.mahalanobis(torch.tensor(queries, dtype=torch.float32), torch.tensor(mask))
    assert np.allclose(got.numpy(), expected, rtol=1e-5)
    unmasked = scorer.mahalanobis(torch.tensor(queries, dtype=torch.float32))
    assert np.allclose(unmasked.numpy(), -np.where(present, d2, np.inf).min(1), rtol=1e-5)


def test_knn_matches_brute_force():
    features, labels = _train()
    scorer = _bank(features, labels, capacity=1000).fit()  # holds every training feature
    train = features[labels < 5].numpy().astype(float)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    queries = np.random.default_rng(1).normal(size=(30, D)) + 10
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    dist = np.linalg.norm(unit[:, None] - train[None], axis=2)
    for k in (1, 7):
        expected = -np.sort(dist, 1)[:, k - 1]
        assert np.allclose(scorer.knn(torch.tensor(queries), k).numpy(), expected, atol=1e-4)
    assert scorer.knn(torch.tensor(queries), 10_000).shape == (30,)  # k capped at the bank size


def test_reservoir_is_a_uniform_sample():
    # Row t carries the angle t, so which rows survived can be read back from the sample.
    angles = torch.linspace(0, 1.5, 1000, dtype=torch.float64)
    features = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.zeros(1000, dtype=torch.long)
    hits = np.zeros(1000)
    for seed in range(100):
        bank = FeatureBank(1, 2, knn_capacity=100, seed=seed)
        for start in range(0, 1000, 300):
            bank.update(features[start:start + 300], labels[start:start + 300])
        sample = bank.fit().bank.double()
        rows = np.rint((torch.atan2(sample[:, 1], sample[:, 0]) / 1.5 * 999).numpy()).astype(int)
        assert len(set(rows)) == 100
        hits[rows] += 1
    per_decile = hits.reshape(10, 100).sum(1) / (100 * 100)  # expected 0.1 each
    assert np.abs(per_decile - 0.1).max() < 0.01


def test_scorer_state_dict_round_trip(tmp_path):
    features, labels = _train()
    scorer = _bank(features, labels).fit()
    torch.save(scorer.state_dict(), tmp_path / "scorer.pt")
    save_file(scorer.state_dict(), tmp_path / "scorer.safetensors")
    queries = torch.randn(20, D) + 10
    states = torch.load(tmp_path / "scorer.pt", weights_only=True), load_file(tmp_path / "scorer.safetensors")
    for state in states:
        again = FeatureScorer.from_state_dict(state)
        assert torch.equal(again.mahalanobis(queries), scorer.mahalanobis(queries))
        assert torch.equal(again.knn(queries, 3), scorer.knn(queries, 3))


def _bank(features, labels, capacity=4096) -> FeatureBank:
    bank = FeatureBank(5, D, capacity)
    bank.update(features, labels)
    return bank


# --- validation groups ---

def test_group_results_on_a_hand_made_batch():
    # Two superclasses with one subclass each; msp. Logits [2, 0] give 0.88, [0, 0] give 0.5. τ is
    # a share of in-source seen images rejected: τ_super 0.5 (of .88, .5, .88) and τ_sub 1.0 (of
    # .88, .5) both put the raw threshold at 0.88, so [2, 0] is accepted and [0, 0] rejected.
    # See each row's comment for what happens.
    h = Heads(2, 2, (0, 1), False)
    rows = [  # super logits, sub logits, true super, true sub, group
        ([2, 0], [2, 0], 0, 0, SEEN),  # both levels accepted and right
        ([0, 0], [0, 0], 1, 1, SEEN),  # superclass rejected: both wrong
        ([2, 0], [0, 0], 0, 0, SHIFTED),  # superclass right, subclass rejected: wrong
        ([0, 2], [0, 2], 1, 1, SHIFTED),  # both right
        ([2, 0], [2, 0], 0, 2, NOVEL_SUB),  # superclass right, subclass accepted: wrong
        ([0, 0], [0, 0], 2, 2, NOVEL_SUPER),  # rejected: both right
        ([3, 0], [3, 0], 2, 2, NOVEL_SUPER),  # accepted: both wrong
    ]
    sl, ul, st, ut, g = (torch.tensor([r[k] for r in rows]) for k in range(5))
    batch = EvalBatch(sl.float(), ul.float(), torch.zeros(7, 2), torch.zeros(7, 2), st, ut, g)
    result = posthoc_grid(batch, h, PosthocConfig(scores=("msp",), tau_super=(0.5,), tau_sub=(1.0,),
                                                  shifted_weight=0.5))
    aurocs = result.by_score["msp"]
    p = result.point(0, 0, 0).figures()
    assert p["thr_super"] == p["thr_sub"] == pytest.approx(np.exp(2) / (1 + np.exp(2)))
    assert [p[f"{name}_acc"] for name in GROUPS] == pytest.approx([0.5, 0.75, 0.5, 0.5])
    assert p["accept_shifted"] == 0.5 and p["accept_shifted_super"] == 1.0 and p["accept_shifted_sub"] == 0.5
    # In-source: seen superclass over rows 0, 1, 4 (2 right), seen subclass over rows 0, 1 (1 right);
    # half weight on the shifted rows (superclass 2/2, subclass 1/2).
    assert p["seen_super_acc"] == pytest.approx(0.5 * 2 / 3 + 0.5 * 1.0)
    assert p["seen_sub_acc"] == pytest.approx(0.5)
    assert p["unseen_super_acc"] == pytest.approx(0.5) and p["unseen_sub_acc"] == pytest.approx(1 / 3)
    assert p["accept_super"] == pytest.approx(2 / 3) and p["accept_sub"] == pytest.approx(0.5)
    # AUROC seen vs novel_sub on the sub score: .88 and .5 against .88 -> (0.5 + 0) / 2.
    assert aurocs.auroc_novel_sub == pytest.approx(0.25)
    # seen vs novel_super on the super score: .88, .5 against .5, .95 -> (1 + 0 + 0.5 + 0) / 4.
    assert aurocs.auroc_novel_super == pytest.approx(0.375)
    assert result.counts["group_seen_shifted"] == 2 and result.counts["seen_super"] == 3
    unweighted = posthoc_grid(batch, h, PosthocConfig(scores=("msp",), tau_super=(0.5,), tau_sub=(1.0,),
                                                      shifted_weight=0.0)).point(0, 0, 0)
    assert unweighted.seen_super_acc == pytest.approx(2 / 3)


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_group_grid_equals_brute_force_per_group(weight):
    batch, h, scorers = synthetic(240, True, 4), heads(True), fit_scorers()
    group = batch.groups(h).copy()
    seen_rows = np.flatnonzero(group == SEEN)
    group[seen_rows[::3]] = SHIFTED
    batch.group = torch.from_numpy(group)
    config = PosthocConfig(scores=("msp", "energy", "vim", "knn"), tau_super=TAUS[:5], tau_sub=TAUS[3:], knn_k=5,
                           shifted_weight=weight)
    result = posthoc_grid(batch, h, config, scorers)
    ts, tb = batch.super_target.numpy(), batch.sub_target.numpy()
    insource = group != SHIFTED
    for s, name in enumerate(result.scores):
        levels = score_levels(batch, h, name, scorers, 5)
        ss, sb = levels.super_score.numpy(), levels.sub_score.numpy()
        assert np.allclose(result.thr_super[s], raw_thresholds(TAUS[:5], ss, (ts < S) & insource),
                           equal_nan=True)
        for i in range(5):
            for j in range(len(TAUS) - 3):
                pred_super, pred_sub = (x.numpy() for x in decide(levels, h, result.thr_super[s, i],
                                                                  result.thr_sub[s, j]))
                got = result.point(s, i, j).figures()
                for k, gname in enumerate(GROUPS):
                    rows = group == k
                    expected = ((pred_super[rows] == ts[rows]).mean() + (pred_sub[rows] == tb[rows]).mean()) / 2
                    assert got[f"{gname}_acc"] == pytest.approx(expected), (name, gname)
                shifted = group == SHIFTED
                accepted = (ss >= result.thr_super[s, i]) & (sb >= result.thr_sub[s, j])
                assert got["accept_shifted"] == pytest.approx(accepted[shifted].mean())
                m_in = leaderboard_metrics(pred_super[insource], pred_sub[insource], ts[insource], tb[insource], S, K)
                m_sh = leaderboard_metrics(pred_super[shifted], pred_sub[shifted], ts[shifted], tb[shifted], S, K)
                for key in ("seen_super_acc", "seen_sub_acc"):
                    assert got[key] == pytest.approx((1 - weight) * m_in[key] + weight * m_sh[key])
                for key in ("unseen_super_acc", "unseen_sub_acc"):
                    assert got[key] == pytest.approx(m_in[key])
