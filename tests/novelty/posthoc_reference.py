"""The post-hoc evaluation as it was before it sorted scores once and memoised feature statistics
across epochs: one re-thresholding per grid point, every score fitted and computed from scratch.
Kept here only as the reference the tests and benchmarks/posthoc.py compare the package against.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.stats import rankdata

from hiertune.data.splits import GROUPS, NOVEL_SUB, NOVEL_SUPER, SEEN, SHIFTED
from hiertune.models.registry import Heads, ModelOutput
from hiertune.novelty.metrics import ACCURACIES
from hiertune.novelty.ood_scores import SCALE_PERCENTILE, VIM_FRACTION, HeadStats, energy, head_of
from hiertune.novelty.posthoc import MEASURES, EvalBatch, PosthocConfig, PosthocResult, _rate, raw_thresholds
from hiertune.novelty.registry import LEVELS, LevelInput, list_scores, score as score_spec, unavailable
from hiertune.novelty.scores import FeatureBank, FeatureScorer, LevelScores, subclass_mask


def logit_score(logits: torch.Tensor, n_seen: int, name: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A logits-only score of one level, straight from its registered function."""
    assert score_spec(name).logits_only, name
    return score_spec(name).level(LevelInput(logits.detach().cpu().double(), n_seen, mask, argmax=None,
                                             features=None, scorer=None, knn_k=0, memo=None))


def reference_grid(batch: EvalBatch, heads: Heads, config: PosthocConfig = PosthocConfig(),
                 scorers: dict[str, FeatureScorer] | None = None) -> PosthocResult:
    """Leaderboard and per-group accuracies at every (score, τ_super, τ_sub); a score these
    `scorers` cannot compute is skipped, with its reason in `skipped`.

    Thresholds (τ as a quantile) and the threshold-free measures use the in-source images only,
    so τ means what it did before a shifted group existed; the `seen` objective's accuracies are
    (1 - w)·in-source + w·seen_shifted with w = config.shifted_weight when that group has images."""
    S, K = heads.n_super, heads.n_sub
    true_super = np.minimum(batch.super_target.cpu().numpy(), S)
    true_sub = np.minimum(batch.sub_target.cpu().numpy(), K)
    group = batch.groups(heads)
    member = np.stack([group == g for g in range(len(GROUPS))])  # [G, N]
    n_group = member.sum(1)
    insource = group != SHIFTED
    seen_super, seen_sub = (true_super < S) & insource, (true_sub < K) & insource
    novel_super, novel_sub = true_super == S, true_sub == K
    counts = {"seen_super": int(seen_super.sum()), "novel_super": int(novel_super.sum()),
              "seen_sub": int(seen_sub.sum()), "novel_sub": int(novel_sub.sum()),
              **{f"group_{g}": int(n) for g, n in zip(GROUPS, n_group)}}
    shifted = member[SHIFTED]
    w = config.shifted_weight if n_group[SHIFTED] else 0.0
    names, skipped = [], {}
    for name in config.scores:
        reason = unavailable(name, scorers)
        if reason:
            skipped[name] = reason
        else:
            names.append(name)
    tau_super, tau_sub = np.asarray(config.tau_super, float), np.asarray(config.tau_sub, float)
    T_s, T_u, G = len(tau_super), len(tau_sub), len(GROUPS)
    grid = np.empty((len(names), T_s, T_u, len(ACCURACIES)))
    group_acc = np.empty((len(names), T_s, T_u, G, 2))
    thr_super, thr_sub = np.empty((len(names), T_s)), np.empty((len(names), T_u))
    accept = {k: np.empty_like(t) for k, t in (("super", thr_super), ("sub", thr_sub), ("shifted_super", thr_super),
                                                ("shifted_sub", thr_sub))}
    accept_shifted = np.empty((len(names), T_s, T_u))
    free = np.empty((len(names), len(LEVELS), len(MEASURES)))
    group_auroc = np.empty((len(names), 2))
    for i, name in enumerate(names):
        s = reference_levels(batch, heads, name, scorers, config.knn_k)
        score_super, score_sub = s.super_score.numpy(), s.sub_score.numpy()
        hit_super = (true_super < S) & (s.super_argmax.numpy() == true_super)
        hit_sub = (true_sub < K) & (s.sub_argmax.numpy() == true_sub)
        thr_super[i] = raw_thresholds(tau_super, score_super, seen_super)
        thr_sub[i] = raw_thresholds(tau_sub, score_sub, seen_sub)
        accept_super = (score_super[None, :] >= thr_super[i][:, None]).astype(float)  # [T_super, N]
        accept_sub = (score_sub[None, :] >= thr_sub[i][:, None]).astype(float)  # [T_sub, N]
        accept["super"][i] = _rate(accept_super @ seen_super, counts["seen_super"])
        accept["sub"][i] = _rate(accept_sub @ seen_sub, counts["seen_sub"])
        accept["shifted_super"][i] = _rate(accept_super @ shifted, n_group[SHIFTED])
        accept["shifted_sub"][i] = _rate(accept_sub @ shifted, n_group[SHIFTED])
        accept_shifted[i] = _rate((accept_super * shifted) @ accept_sub.T, n_group[SHIFTED])
        # Correct per image: superclass, accepted with the right argmax if seen, rejected if not;
        # subclass, accepted at both levels with the right argmax if seen, rejected at either if
        # not. Summed over a group those are matrix products; the subclass one folds "rejected"
        # into n - accepted, so hits and novel rows enter one product with weights +1 / -1.
        super_hits = accept_super @ (member & hit_super).T + (1 - accept_super) @ (member & novel_super).T
        weight = (member & hit_sub).astype(float) - (member & novel_sub)  # [G, N]
        sub_hits = ((accept_super[:, None, :] * weight[None]).reshape(T_s * G, -1) @ accept_sub.T)
        sub_hits = sub_hits.reshape(T_s, G, T_u).transpose(0, 2, 1) + (member & novel_sub).sum(1)  # [T_s, T_u, G]
        group_acc[i, ..., 0] = _rate(super_hits, n_group)[:, None, :]
        group_acc[i, ..., 1] = _rate(sub_hits, n_group)
        # The leaderboard's four accuracies, in-source, from the same tallies.
        seen_super_in = _rate(super_hits[:, SEEN] + super_hits[:, NOVEL_SUB], counts["seen_super"])
        seen_sub_in = _rate(sub_hits[..., SEEN], counts["seen_sub"])
        if w:
            seen_super_in = (1 - w) * seen_super_in + w * group_acc[i, :, 0, SHIFTED, 0]
            seen_sub_in = (1 - w) * seen_sub_in + w * group_acc[i, ..., SHIFTED, 1]
        grid[i, ..., 0] = seen_super_in[:, None]
        grid[i, ..., 1] = _rate(super_hits[:, NOVEL_SUPER], counts["novel_super"])[:, None]
        grid[i, ..., 2] = seen_sub_in
        grid[i, ..., 3] = _rate(sub_hits[..., NOVEL_SUB] + sub_hits[..., NOVEL_SUPER], counts["novel_sub"])
        free[i, 0] = _threshold_free(score_super[insource], seen_super[insource], hit_super[insource])
        free[i, 1] = _threshold_free(score_sub[insource], seen_sub[insource], hit_sub[insource])
        group_auroc[i] = (auroc(score_sub[member[SEEN]], score_sub[member[NOVEL_SUB]]),
                          auroc(score_super[member[SEEN]], score_super[member[NOVEL_SUPER]]))
    return PosthocResult(tuple(names), tau_super, tau_sub, thr_super, thr_sub, grid, free, counts, accept["super"],
                         accept["sub"], group_acc=group_acc, group_auroc=group_auroc, accept_shifted=accept_shifted,
                         accept_shifted_super=accept["shifted_super"], accept_shifted_sub=accept["shifted_sub"],
                         skipped=skipped, shifted_weight=float(w))


def reference_fit(out: ModelOutput, sup: torch.Tensor, sub: torch.Tensor, heads: Heads,
                model: torch.nn.Module) -> dict[str, FeatureScorer]:
    """Feature-space novelty scorers of both levels from eval-mode training features; the
    head-based scores' statistics need the level's classifier head (`super_head` / `sub_head`)."""
    scorers = {}
    for level, feats, labels, n in (("super", out.super_features, sup, heads.n_super),
                                    ("sub", out.sub_features, sub, heads.n_sub)):
        feats, labels = feats.float().cpu(), labels.cpu()
        bank = FeatureBank(n, feats.shape[1])
        bank.update(feats, labels)
        module = getattr(model, f"{level}_head", None)
        head = head_of(module, n) if module is not None else None
        stats = reference_vim(HeadStats.fit(feats[labels < n], head), feats[labels < n]) if head is not None else None
        scorers[level] = bank.fit(head=stats)
    return scorers


def reference_vim(stats: HeadStats, features: torch.Tensor, fraction: float = VIM_FRACTION) -> HeadStats:
    """`stats` with vim's origin, residual subspace and α fitted from their definition: the
    eigendecomposition of the second moment of the head inputs about the origin, in one piece."""
    head = stats.head
    z = head.inputs(features)
    origin = -torch.linalg.pinv(head.weight) @ head.bias
    shifted = z - origin
    dim = z.shape[1]
    keep = min(dim - 1, max(1, round(fraction * dim)))
    residual = torch.linalg.eigh(shifted.T @ shifted / len(z))[1][:, : dim - keep]
    virtual = (shifted @ residual).norm(dim=1)
    alpha = head.logits(z).amax(1).mean() / virtual.mean().clamp(min=1e-12)
    return dataclasses.replace(stats, vim_origin=origin, vim_residual=residual, vim_alpha=alpha)


def reference_levels(output, heads: Heads, score: str, scorers: dict[str, FeatureScorer] | None = None,
                 knn_k: int = 10) -> LevelScores:
    """Hierarchical argmaxes and per-level scores of a ModelOutput or EvalBatch, on CPU.

    `scorers` maps "super" / "sub" to the FeatureScorer of that level's features; it is needed
    for the feature scores (all but the logits-only ones), and rmds / fdbd / scale / vim also need its
    fitted head statistics."""
    super_logits, sub_logits = output.super_logits.detach().cpu(), output.sub_logits.detach().cpu()
    super_argmax = super_logits[:, : heads.n_super].argmax(1)
    mask = subclass_mask(heads)[super_argmax]
    sub_argmax = sub_logits[:, : heads.n_sub].float().masked_fill(~mask, -torch.inf).argmax(1)
    if score in list_scores() and score_spec(score).logits_only:
        super_score = logit_score(super_logits, heads.n_super, score)
        sub_score = logit_score(sub_logits, heads.n_sub, score, mask)
    elif score in list_scores():
        reason = unavailable(score, scorers)
        if reason:
            raise ValueError(f"score {score!r} unavailable: {reason}")
        sup, sub = scorers["super"], scorers["sub"]
        f_super, f_sub = output.super_features, output.sub_features
        if score == "mahalanobis":
            super_score = sup.mahalanobis(f_super)
            sub_score = sub.mahalanobis(f_sub, mask)
        elif score == "rmds":
            super_score = sup.mahalanobis(f_super) + sup.head.background_distance(f_super)
            sub_score = sub.mahalanobis(f_sub, mask) + sub.head.background_distance(f_sub)
        elif score == "fdbd":
            super_score = sup.head.fdbd(f_super, super_argmax)
            sub_score = sub.head.fdbd(f_sub, sub_argmax)
        elif score == "scale":
            super_score = _scale(sup.head, f_super)
            sub_score = _scale(sub.head, f_sub, mask)
        elif score == "vim":
            super_score = sup.head.vim(f_super)
            sub_score = sub.head.vim(f_sub, mask)
        else:
            super_score = scorers["super"].knn(output.super_features, knn_k)
            sub_score = scorers["sub"].knn(output.sub_features, knn_k)
    else:
        raise ValueError(f"unknown score {score!r} (known: {', '.join(list_scores())})")
    # float64 so that predict() and the grid compare the same numbers with the same thresholds.
    return LevelScores(super_argmax, sub_argmax, super_score.double(), sub_score.double())


def _scale(stats, features, mask=None):
    """SCALE by its definition: the head's energy on its inputs, each rescaled by exp of its sum
    over the sum of its top 15%."""
    z = stats.head.inputs(features)
    k = max(1, z.shape[1] - round(z.shape[1] * SCALE_PERCENTILE / 100.0))
    r = z.sum(1) / z.topk(k, dim=1).values.sum(1)
    return energy(stats.head.logits(z * r.exp()[:, None]), mask)


def _threshold_free(score: np.ndarray, seen: np.ndarray, hit: np.ndarray) -> tuple[float, float, float]:
    known, novel = score[seen], score[~seen]
    return auroc(known, novel), fpr_at_95(known, novel), oscr(hit[seen], known, novel)


def auroc(scores_known, scores_novel) -> float:
    """Probability that a known image scores above a novel one (ties count half)."""
    labels, scores = _labelled(scores_known, scores_novel)
    if labels is None:
        return float("nan")
    n_known = int(labels.sum())
    n_novel = len(labels) - n_known
    ranks = rankdata(scores)  # average ranks: a tie counts half
    return float((ranks[labels == 1].sum() - n_known * (n_known + 1) / 2) / (n_known * n_novel))


def fpr_at_95(scores_known, scores_novel) -> float:
    """Fraction of novel images accepted at the highest threshold that accepts >= 95% of known ones."""
    labels, scores = _labelled(scores_known, scores_novel)
    if labels is None:
        return float("nan")
    known = np.sort(scores[labels == 1])[::-1]
    # The k-th highest known score accepts at least k of them, and no higher threshold accepts k:
    # k = ceil(0.95 n), in integers so that 0.95 n is not rounded below a whole number.
    threshold = known[-(-19 * len(known) // 20) - 1]
    return float((scores[labels == 0] >= threshold).mean())


def oscr(correct_known, scores_known, scores_novel) -> float:
    """Area under correct-and-accepted known rate against accepted novel rate, over all thresholds.

    The known images that are misclassified never raise that curve, so it is the ROC curve of
    correct-known against novel scaled by the closed-set accuracy; its area is that AUROC times
    the accuracy.
    """
    correct = np.asarray(correct_known, dtype=bool)
    scores_known = np.asarray(scores_known, dtype=float)
    if len(correct) == 0 or len(np.asarray(scores_novel)) == 0:
        return float("nan")
    if not correct.any():
        return 0.0
    return auroc(scores_known[correct], scores_novel) * float(correct.mean())


def _labelled(scores_known, scores_novel):
    known = np.asarray(scores_known, dtype=float).ravel()
    novel = np.asarray(scores_novel, dtype=float).ravel()
    if len(known) == 0 or len(novel) == 0:
        return None, None
    labels = np.concatenate([np.ones(len(known)), np.zeros(len(novel))])
    scores = np.concatenate([known, novel])
    # Only the order matters, so a NaN (a broken score, least familiar) and -inf go just below
    # the finite range and +inf just above it.
    finite = scores[np.isfinite(scores)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 0.0)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return labels, np.clip(scores, lo - 1, hi + 1)
