"""Leaderboard metrics, the seen/unseen Pareto front, and threshold-free novelty measures.

Labels use the competition convention: seen classes are 0..n-1 and novel is n (any value >= n
is read as novel). An accuracy over a group with no images is NaN rather than 0 or 1, so a
validation split without, say, novel superclasses cannot pose as perfect on them; `seen` and
`unseen` average the groups that do have images, and the front ignores points with a NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

# The one list of the leaderboard's four group accuracies; everything that names them reads it.
ACCURACIES = ("seen_super_acc", "unseen_super_acc", "seen_sub_acc", "unseen_sub_acc")
OBJECTIVES = ("seen", "unseen")
LEADERBOARD_KEYS = (*ACCURACIES, "overall_super_acc", "overall_sub_acc", *OBJECTIVES)


def leaderboard_metrics(pred_super, pred_sub, true_super, true_sub, n_super: int, n_sub: int) -> dict:
    """The leaderboard's accuracies plus the sweep's two objectives `seen` and `unseen`."""
    ps, pb, ts, tb = (np.asarray(a) for a in (pred_super, pred_sub, true_super, true_sub))
    ps, ts = np.minimum(ps, n_super), np.minimum(ts, n_super)
    pb, tb = np.minimum(pb, n_sub), np.minimum(tb, n_sub)
    hit_super, hit_sub = ps == ts, pb == tb
    out = {
        "seen_super_acc": _mean(hit_super, ts < n_super),
        "unseen_super_acc": _mean(hit_super, ts == n_super),
        "seen_sub_acc": _mean(hit_sub, tb < n_sub),
        "unseen_sub_acc": _mean(hit_sub, tb == n_sub),
        "overall_super_acc": _mean(hit_super, np.ones_like(hit_super)),
        "overall_sub_acc": _mean(hit_sub, np.ones_like(hit_sub)),
    }
    out["seen"] = objective(out["seen_super_acc"], out["seen_sub_acc"])
    out["unseen"] = objective(out["unseen_super_acc"], out["unseen_sub_acc"])
    return out


def objective(super_acc, sub_acc):
    """Mean of the two levels, skipping a NaN level; NaN only if both are. Works elementwise."""
    both = np.stack(np.broadcast_arrays(np.asarray(super_acc, float), np.asarray(sub_acc, float)))
    valid = ~np.isnan(both)
    n = valid.sum(0)
    total = np.where(valid, both, 0.0).sum(0)
    mean = np.divide(total, n, out=np.full(n.shape, np.nan), where=n > 0)
    return float(mean) if mean.ndim == 0 else mean


def _mean(hit: np.ndarray, group: np.ndarray) -> float:
    return float(hit[group].mean()) if group.any() else float("nan")


def pareto_front(points) -> np.ndarray:
    """Indices of the non-dominated rows of `points` [N, 2] (maximising both), sorted by the first
    coordinate descending. Of identical points the first is kept; rows with a NaN are skipped."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    valid = np.flatnonzero(~np.isnan(points).any(1))
    x, y = points[valid, 0], points[valid, 1]
    order = valid[np.lexsort((-y, -x))]  # x descending, then y descending; stable for ties
    ys = points[order, 1]
    # Along decreasing x a point survives only if it beats the best y of every point before it.
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], ys]))[:-1]
    return order[ys > best_before].astype(np.int64)


def knee_distance(seen: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """How far each front point lies above the chord joining the front's two ends, both axes
    scaled to the front's range: the knee, the largest, is where giving up seen accuracy stops
    buying much unseen."""
    span_s, span_u = np.ptp(seen), np.ptp(unseen)
    if len(seen) < 3 or span_s == 0 or span_u == 0:
        return seen + unseen  # no interior point: the balanced one
    x, y = (seen - seen.min()) / span_s, (unseen - unseen.min()) / span_u
    # Normalised, the front's ends are (1, 0) and (0, 1): the chord is x + y = 1.
    return (x + y - 1) / math.sqrt(2)


def rank_points(seen: np.ndarray, unseen: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Indices best first by `key`; ties go to the higher seen + unseen."""
    return np.lexsort((-(seen + unseen), -key))


def hypervolume_2d(points, ref=(0.0, 0.0)) -> float:
    """Area of the region dominated by `points` and dominating `ref` (maximisation)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    rx, ry = ref
    points = points[(points[:, 0] > rx) & (points[:, 1] > ry)]
    front = points[pareto_front(points)]  # x descending, y ascending
    if len(front) == 0:
        return 0.0
    widths = front[:, 0] - np.append(front[1:, 0], rx)
    return float(np.sum(widths * (front[:, 1] - ry)))


# Threshold-free measures. Scores are "higher = more familiar"; known images are the positives.

# The post-hoc grid calls these for every score, level and group each epoch; sklearn's
# roc_auc_score / roc_curve spend ~30 ms per call validating their input, which alone was more
# than 5% of a CPU epoch. The Mann-Whitney form (scipy's average ranks) and one sort are the same
# numbers at a fraction of the cost.

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
