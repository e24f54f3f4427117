"""Leaderboard metrics, the seen/unseen Pareto front, and threshold-free novelty measures.

Labels use the competition convention: seen classes are 0..n-1 and novel is n (any value >= n
is read as novel). An accuracy over a group with no images is NaN rather than 0 or 1, so a
validation split without, say, novel superclasses cannot pose as perfect on them; `seen` and
`unseen` average the groups that do have images, and the front ignores points with a NaN.
"""

from __future__ import annotations

import math

import numpy as np

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
    if np.ndim(super_acc) == 0 and np.ndim(sub_acc) == 0:
        # One point (a sweep's front reads hundreds of thousands): the arithmetic of the array
        # path below, without its arrays.
        valid = [v for v in (float(super_acc), float(sub_acc)) if not math.isnan(v)]
        return (valid[0] + valid[1]) / 2 if len(valid) == 2 else valid[0] if valid else math.nan
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

# The post-hoc grid needs these for every score, level and group each epoch: one sort of a
# level's scores (RankedScores) serves all of them, each measure then a tally over tie groups.

class RankedScores:
    """One level's scores, sorted once into tie groups, for threshold-free measures between any
    two subsets of its images (boolean masks). Only the order matters, so a NaN (a broken score,
    least familiar) ties with -inf at the bottom."""

    def __init__(self, scores):
        scores = np.asarray(scores, dtype=float).ravel()
        _, self.group = np.unique(np.where(np.isnan(scores), -np.inf, scores), return_inverse=True)
        self.groups = int(self.group.max()) + 1 if len(scores) else 0

    def _counts(self, mask) -> np.ndarray:
        return np.bincount(self.group[np.asarray(mask, dtype=bool)], minlength=self.groups).astype(float)

    def auroc(self, known, novel) -> float:
        """Probability that a known image scores above a novel one (ties count half)."""
        k, n = self._counts(known), self._counts(novel)
        if not k.sum() or not n.sum():
            return float("nan")
        below = np.cumsum(n) - n  # novel images in lower groups
        return float(((k * below).sum() + 0.5 * (k * n).sum()) / (k.sum() * n.sum()))

    def fpr_at_95(self, known, novel) -> float:
        """Fraction of novel images accepted at the highest threshold that accepts >= 95% of known ones."""
        k, n = self._counts(known), self._counts(novel)
        if not k.sum() or not n.sum():
            return float("nan")
        # The k-th highest known score accepts at least k of them, and no higher threshold accepts k:
        # k = ceil(0.95 n), in integers so that 0.95 n is not rounded below a whole number.
        need = -(-19 * int(k.sum()) // 20)
        threshold = self.groups - 1 - int(np.searchsorted(np.cumsum(k[::-1]), need))
        return float(n[threshold:].sum() / n.sum())

    def oscr(self, known, novel, correct) -> float:
        """Area under correct-and-accepted known rate against accepted novel rate, over all
        thresholds: the known images that are misclassified never raise that curve, so it is the
        ROC curve of correct-known against novel scaled by the closed-set accuracy, its area that
        AUROC times the accuracy. `correct` marks the correctly classified images."""
        known, correct = np.asarray(known, dtype=bool), np.asarray(correct, dtype=bool)
        if not known.any() or not np.asarray(novel, dtype=bool).any():
            return float("nan")
        if not (known & correct).any():
            return 0.0
        return self.auroc(known & correct, novel) * float(correct[known].mean())


def auroc(scores_known, scores_novel) -> float:
    """Probability that a known image scores above a novel one (ties count half)."""
    return _pair(scores_known, scores_novel, RankedScores.auroc)


def fpr_at_95(scores_known, scores_novel) -> float:
    """Fraction of novel images accepted at the highest threshold that accepts >= 95% of known ones."""
    return _pair(scores_known, scores_novel, RankedScores.fpr_at_95)


def oscr(correct_known, scores_known, scores_novel) -> float:
    """RankedScores.oscr of known images with their correctness `correct_known`."""
    correct = np.concatenate([np.asarray(correct_known, dtype=bool).ravel(),
                              np.zeros(np.asarray(scores_novel).size, dtype=bool)])
    return _pair(scores_known, scores_novel, lambda r, k, n: r.oscr(k, n, correct))


def _pair(scores_known, scores_novel, measure) -> float:
    known = np.asarray(scores_known, dtype=float).ravel()
    novel = np.asarray(scores_novel, dtype=float).ravel()
    is_known = np.concatenate([np.ones(len(known), dtype=bool), np.zeros(len(novel), dtype=bool)])
    return measure(RankedScores(np.concatenate([known, novel])), is_known, ~is_known)
