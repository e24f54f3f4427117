"""GEN, RMDS, fDBD, SCALE and ViM against per-sample brute force (plain numpy loops), and the
heads they read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hiertune.models.backbone import linear_head
from hiertune.models.cosine import CosineClassifier
from hiertune.models.registry import Heads
from hiertune.novelty.posthoc import EvalBatch
from hiertune.novelty.scores import FeatureBank, score_levels
from tests.novelty.posthoc_reference import logit_score
from hiertune.novelty.ood_scores import (GEN_GAMMA, SCALE_PERCENTILE, HeadStats, LinearHead, allowed_logits, gen,
                                         head_of)

C, D, N = 5, 8, 300


def _data(seed=0, nonneg=False):
    g = np.random.default_rng(seed)
    labels = g.integers(0, C, N)
    centres = g.normal(size=(C, D)) * 2
    x = centres[labels] + g.normal(size=(N, D))
    if nonneg:
        x = np.maximum(x, 0)
    head = LinearHead(torch.tensor(g.normal(size=(C, D))), torch.tensor(g.normal(size=C)), False)
    queries = g.normal(size=(40, D)) * 1.5
    if nonneg:  # SCALE's setting: post-ReLU activations
        queries = np.abs(queries)
    mask = g.random((40, C)) < 0.6
    mask[:, 0] = True
    return x, labels, head, queries, mask


def _lse(v):
    m = max(v)
    return m + math.log(sum(math.exp(a - m) for a in v))


def test_gen_matches_the_papers_definition():
    """Liu et al. (2023), eq. 6 and OpenOOD's GENPostprocessor: the softmax over the classes
    ranked (here the allowed seen ones: a trailing novel logit and masked-out classes take no
    mass), its top-M probabilities, -sum p^γ (1 - p)^γ."""
    g = np.random.default_rng(1)
    logits = g.normal(size=(30, C + 1)) * 3  # a trailing novel logit, as with outlier_mode 'class'
    mask = g.random((30, C)) < 0.5
    mask[:, 0] = True
    via_scores = logit_score(torch.tensor(logits), C, "gen", torch.tensor(mask)).numpy()
    for top in (None, 2):
        got = gen(allowed_logits(torch.tensor(logits[:, :C]), torch.tensor(mask)), top=top).numpy()
        for n in range(30):
            z = [logits[n, c] for c in range(C) if mask[n, c]]
            e = [math.exp(v - max(z)) for v in z]
            p = sorted((v / sum(e) for v in e), reverse=True)[: top or C]
            expected = -sum(q ** GEN_GAMMA * (1 - q) ** GEN_GAMMA for q in p)
            assert got[n] == pytest.approx(expected, rel=1e-9)
            if top is None:
                assert via_scores[n] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("novel_logit", [False, True])
def test_gen_ranks_a_uniform_softmax_below_a_peaked_one_at_both_levels(novel_logit):
    """Image 0 is clearly seen (one seen logit far ahead), image 1 clearly novel: flat over the
    seen classes it may choose from, the novel logit (outlier_mode 'class') far ahead, and at the
    subclass level its mass mostly on subclasses of another superclass. Squashing the seen
    probabilities toward 0 there once made image 1 the more familiar one (superclass AUROC 0.09)."""
    h = Heads(3, 6, (0, 0, 0, 1, 1, 2), novel_logit)
    extra = [[-6.0], [6.0]] if novel_logit else [[], []]
    super_logits = torch.tensor([[6.0, 0, 0] + extra[0], [0.0, 0, 0] + extra[1]])
    sub_logits = torch.tensor([[6.0, 0, 0, 0, 0, 0] + extra[0], [0.0, 0, 0, 5, 5, 5] + extra[1]])
    feats = torch.zeros(2, 1)
    s = score_levels(EvalBatch(super_logits, sub_logits, feats, feats, torch.zeros(2), torch.zeros(2)), h, "gen")
    assert s.super_argmax.tolist() == [0, 0] and s.sub_argmax.tolist() == [0, 0]
    flat = -3 * (1 / 3) ** GEN_GAMMA * (2 / 3) ** GEN_GAMMA  # G's maximum over three classes
    assert s.super_score[1].item() == pytest.approx(flat) and s.sub_score[1].item() == pytest.approx(flat)
    assert s.super_score[0] > s.super_score[1] + 0.5 and s.sub_score[0] > s.sub_score[1] + 0.5


def test_rmds_matches_brute_force():
    x, labels, head, queries, mask = _data()
    bank = FeatureBank(C, D)
    bank.update(torch.tensor(x), torch.tensor(labels))
    scorer = bank.fit(head=HeadStats.fit(torch.tensor(x), head))
    shrunk = lambda cov: 0.9 * cov + 0.1 * np.trace(cov) / D * np.eye(D)  # noqa: E731
    means = np.stack([x[labels == c].mean(0) for c in range(C)])
    within = sum(np.outer(v - means[c], v - means[c]) for v, c in zip(x, labels)) / N
    mu0 = x.mean(0)
    total = sum(np.outer(v - mu0, v - mu0) for v in x) / N
    p, p0 = np.linalg.inv(shrunk(within)), np.linalg.inv(shrunk(total))
    heads = Heads(1, C, (0,) * C, False)
    out = _output(queries, heads)
    scorers = {"super": scorer, "sub": scorer}
    got_masked = score_levels(out, heads, "rmds", scorers).sub_score.numpy()
    allowed = np.ones((len(queries), C), bool)  # one superclass: every subclass is allowed
    for n, q in enumerate(queries):
        md = [(q - means[c]) @ p @ (q - means[c]) for c in range(C) if allowed[n, c]]
        expected = -min(md) + (q - mu0) @ p0 @ (q - mu0)
        assert got_masked[n] == pytest.approx(expected, rel=1e-7)
    masked = scorer.mahalanobis(torch.tensor(queries), torch.tensor(mask)) + scorer.head.background_distance(
        torch.tensor(queries))
    for n, q in enumerate(queries):
        md = [(q - means[c]) @ p @ (q - means[c]) for c in range(C) if mask[n, c]]
        assert masked[n].item() == pytest.approx(-min(md) + (q - mu0) @ p0 @ (q - mu0), rel=1e-7)


def test_fdbd_matches_brute_force():
    x, _, head, queries, _ = _data(2)
    stats = HeadStats.fit(torch.tensor(x), head)
    w, b = head.weight.numpy(), head.bias.numpy()
    pred = torch.tensor(np.random.default_rng(3).integers(0, C, len(queries)))
    got = stats.fdbd(torch.tensor(queries), pred).numpy()
    mu = x.mean(0)
    for n, q in enumerate(queries):
        y = int(pred[n])
        dists = [abs((w[y] - w[c]) @ q + b[y] - b[c]) / np.linalg.norm(w[y] - w[c]) for c in range(C) if c != y]
        assert got[n] == pytest.approx(np.mean(dists) / np.linalg.norm(q - mu), rel=1e-9)


def test_scale_matches_brute_force():
    x, _, head, queries, mask = _data(4, nonneg=True)
    stats = HeadStats.fit(torch.tensor(x), head)
    got = stats.scale(torch.tensor(queries), torch.tensor(mask)).numpy()
    w, b = head.weight.numpy(), head.bias.numpy()
    k = D - round(D * SCALE_PERCENTILE / 100)
    for n, q in enumerate(queries):
        r = q.sum() / sum(sorted(q, reverse=True)[:k])
        logits = w @ (q * math.exp(r)) + b
        assert got[n] == pytest.approx(_lse([logits[c] for c in range(C) if mask[n, c]]), rel=1e-9)


def test_vim_matches_brute_force():
    x, _, head, queries, mask = _data(5)
    stats = HeadStats.fit(torch.tensor(x), head, vim_fraction=0.5)
    got = stats.vim(torch.tensor(queries), torch.tensor(mask)).numpy()
    w, b = head.weight.numpy(), head.bias.numpy()
    u = -np.linalg.pinv(w) @ b
    cov = sum(np.outer(v - u, v - u) for v in x) / N
    vals, vecs = np.linalg.eigh(cov)
    residual = vecs[:, np.argsort(vals)[: D - D // 2]]
    virtual = lambda v: np.linalg.norm((v - u) @ residual)  # noqa: E731
    alpha = np.mean([max(w @ v + b) for v in x]) / np.mean([virtual(v) for v in x])
    for n, q in enumerate(queries):
        logits = w @ q + b
        expected = _lse([logits[c] for c in range(C) if mask[n, c]]) - alpha * virtual(q)
        assert got[n] == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_head_of_reproduces_the_heads_seen_logits(kind):
    torch.manual_seed(0)
    module = (linear_head(D, C + 1, 0.1) if kind == "linear"
              else nn.Sequential(nn.Dropout(0.1), CosineClassifier(D, C + 1, 16.0))).eval()
    f = torch.randn(10, D)
    head = head_of(module, C)
    assert head.weight.shape == (C, D) and head.normalize == (kind == "cosine")
    expected = module(f)[:, :C].double()
    assert torch.allclose(head.logits(head.inputs(f)), expected, atol=1e-5)
    assert head_of(nn.Sequential(nn.Linear(D, D), nn.ReLU()), C) is None


def test_head_stats_state_dict_round_trip():
    x, _, head, queries, mask = _data(6)
    stats = HeadStats.fit(torch.tensor(x), head)
    again = HeadStats.from_state_dict({k: v.clone() for k, v in stats.state_dict().items()})
    q, m = torch.tensor(queries), torch.tensor(mask)
    assert torch.equal(again.vim(q, m), stats.vim(q, m)) and torch.equal(again.scale(q, m), stats.scale(q, m))


def _output(queries, heads):
    q = torch.tensor(queries)
    logits = torch.zeros(len(q), heads.n_sub)
    return EvalBatch(torch.zeros(len(q), 1), logits, q, q, torch.zeros(len(q), dtype=torch.long),
                     torch.zeros(len(q), dtype=torch.long))
