"""The post-hoc grid: every (score, τ_super, τ_sub) evaluated on one forward pass, and the
hierarchical decision at raw thresholds.

Thresholds: τ is the share of a level's seen validation images called novel at that level, the
same for every score: the raw threshold is the τ-quantile of the score over the (in-source)
validation images whose true class at that level is seen, and an image is novel at a level when
its score is below it (a NaN score counts as novel). Scores differ in scale (msp in [0, 1],
energy and max-logit unbounded, Mahalanobis a negative distance), so one τ range serves them all
only as a rate: τ 0.05 rejects 5% of seen images whichever score ranks them, and a space's
`tau_super: {low: 0, high: 0.3}` means the same for msp as for knn. The raw thresholds ride
along with every point (`thr_super`, `thr_sub`); msp's is the probability threshold the seeds set
by hand. An export carries the rate over by calibration (hiertune.export.predictor.calibrate).
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from torch import Tensor

from hiertune.data.splits import GROUPS, NOVEL_SUB, NOVEL_SUPER, SEEN, SHIFTED
from hiertune.errors import UserError
from hiertune.fsutil import atomic_file
from hiertune.models.registry import Heads
from hiertune.novelty.metrics import (ACCURACIES, RankedScores, hypervolume_2d, knee_distance,
                                      objective, pareto_front, rank_points)
from hiertune.novelty.memo import Memo
from hiertune.novelty.records import MEASURES, NOVEL_GROUPS, GridPoint, ScoreFigures
from hiertune.novelty.registry import LEVELS, list_scores, unavailable
from hiertune.novelty.scores import FeatureScorer, LevelScores, all_level_scores

GROUP_KEYS = (*(f"{g}_acc" for g in GROUPS), "accept_shifted")  # per-group keys of every grid point

# 21 places in a τ range, as fractions of it: dense at its low end, where rejecting one more
# percent of seen images buys the most unseen ones; the range's ends are always on the grid.
UNIT_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
             0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def tau_grid(low: float = 0.0, high: float = 1.0, log: bool = False, step: float | None = None) -> tuple[float, ...]:
    """The grid's τ values in [low, high], spaced as a search space declares the range: on its
    `step` grid, geometric with `log`, else UNIT_GRID stretched over it."""
    if step:
        values = np.arange(low, high + step / 2, step)
    elif log:
        values = np.geomspace(low, high, len(UNIT_GRID))
    else:
        values = low + (high - low) * np.asarray(UNIT_GRID)
    return tuple(sorted({min(high, max(low, round(float(v), 10))) for v in values}))


@dataclass(frozen=True)
class PosthocConfig:
    """The grid a trial evaluates (a search space declares it: SearchSpace.posthoc_grid)."""

    scores: tuple[str, ...] = field(default_factory=list_scores)
    tau_super: tuple[float, ...] = field(default_factory=tau_grid)
    tau_sub: tuple[float, ...] = field(default_factory=tau_grid)
    knn_k: int = 10
    shifted_weight: float = 0.5  # share of seen_shifted in the `seen` objective, when that group exists

    def __post_init__(self) -> None:
        for name in ("scores", "tau_super", "tau_sub"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # YAML gives lists
        unknown = [s for s in self.scores if s not in list_scores()]
        if unknown or not self.scores:
            raise UserError(f"posthoc: scores must be a non-empty subset of {', '.join(list_scores())}; "
                            f"got {list(self.scores)}")
        for name in ("tau_super", "tau_sub"):
            taus = getattr(self, name)
            if not taus or not all(0.0 <= t <= 1.0 for t in taus):
                raise UserError(f"posthoc: {name} must be a non-empty list of values in [0, 1]; "
                                f"got {list(taus)}")
        if self.knn_k < 1:
            raise UserError(f"posthoc: knn_k must be >= 1, got {self.knn_k}")
        if not 0.0 <= self.shifted_weight <= 1.0:
            raise UserError(f"posthoc: shifted_weight must be in [0, 1], got {self.shifted_weight}")


@dataclass
class EvalBatch:
    """One forward pass over the validation set, CPU tensors; targets use novel = n_super / n_sub."""

    super_logits: Tensor
    sub_logits: Tensor
    super_features: Tensor
    sub_features: Tensor
    super_target: Tensor
    sub_target: Tensor
    group: Tensor | None = None  # [N] index into GROUPS; None: derived from the targets (no shifted group)

    def groups(self, heads: Heads) -> np.ndarray:
        if self.group is not None:
            return self.group.cpu().numpy().astype(np.int64)
        sup, sub = self.super_target.cpu().numpy(), self.sub_target.cpu().numpy()
        return np.where(sup >= heads.n_super, NOVEL_SUPER, np.where(sub >= heads.n_sub, NOVEL_SUB, SEEN))


def decide(s: LevelScores, heads: Heads, thr_super: float, thr_sub: float) -> tuple[Tensor, Tensor]:
    """(pred_super, pred_sub) on CPU for raw thresholds; novel is n_super / n_sub. A novel
    superclass forces a novel subclass, and a seen subclass always belongs to the predicted
    superclass."""
    novel_super = ~(s.super_score >= thr_super)
    novel_sub = novel_super | ~(s.sub_score >= thr_sub)
    return (s.super_argmax.masked_fill(novel_super, heads.n_super),
            s.sub_argmax.masked_fill(novel_sub, heads.n_sub))


def point_metrics(batch: EvalBatch, heads: Heads, score: str, tau_super: float, tau_sub: float,
                  scorers: dict[str, FeatureScorer] | None = None, knn_k: int = 10,
                  shifted_weight: float = 0.5, memo: Memo | None = None) -> dict:
    """Leaderboard accuracies at one (score, τ_super, τ_sub), τ meaning what it means on the grid
    (also off the grid: a τ that Optuna sampled, say), with the raw thresholds it resolved to:
    the grid of that single point, so both agree by construction."""
    config = PosthocConfig(scores=(score,), tau_super=(tau_super,), tau_sub=(tau_sub,), knn_k=knn_k,
                           shifted_weight=shifted_weight)
    return posthoc_grid(batch, heads, config, scorers, memo).point(0, 0, 0)


def seen_acceptance(scores, seen, thr: float) -> float:
    """Fraction of the images whose true class at this level is seen that the level's threshold
    accepts (score >= thr): the rate an exported model's calibration reproduces."""
    ref = np.asarray(scores, dtype=float)[np.asarray(seen, dtype=bool)]
    return float((ref >= thr).mean()) if len(ref) else float("nan")


def raw_thresholds(tau, scores, seen) -> np.ndarray:
    """Raw thresholds for grid values `tau`, given one level's `scores` and which images' true
    class at that level is `seen`: the τ-quantile of the seen images' scores (method 'lower':
    always an attained score, and no arithmetic on infinite ones); NaN, i.e. everything novel,
    when there are no seen images."""
    tau = np.asarray(tau, dtype=float)
    ref = np.asarray(scores, dtype=float)[np.asarray(seen, dtype=bool)]
    if len(ref) == 0:
        return np.full(tau.shape, np.nan)
    return np.quantile(ref, tau, method="lower")


def posthoc_grid(batch: EvalBatch, heads: Heads, config: PosthocConfig | None = None,
                 scorers: dict[str, FeatureScorer] | None = None, memo: Memo | None = None) -> PosthocResult:
    """Leaderboard and per-group accuracies at every (score, τ_super, τ_sub); a score these
    `scorers` cannot compute is skipped, with its reason in `skipped`. `memo` keeps the
    feature-only parts of the scores across a trial's epochs (hiertune.novelty.scores.Memo).

    Thresholds (τ as a quantile) and the threshold-free measures use the in-source images only,
    so τ means what it did before a shifted group existed; the `seen` objective's accuracies are
    (1 - w)·in-source + w·seen_shifted with w = config.shifted_weight when that group has images.

    Every count on the grid is a sum over the images a pair of thresholds accepts. Each level's
    score is placed once among that level's sorted thresholds (`_levels_reached`), so one
    histogram per weighted set of images, over the pair of places, and its suffix sums give the
    count at every grid point: O(N log N) per score rather than a re-thresholding per point."""
    config = config or PosthocConfig()
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
    levels = all_level_scores(batch, heads, names, scorers, config.knn_k, memo)
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
    novel_sub_in_group = (member & novel_sub).sum(1)
    for i, name in enumerate(names):
        s = levels[name]
        score_super, score_sub = s.super_score.numpy(), s.sub_score.numpy()
        hit_super = (true_super < S) & (s.super_argmax.numpy() == true_super)
        hit_sub = (true_sub < K) & (s.sub_argmax.numpy() == true_sub)
        thr_super[i] = raw_thresholds(tau_super, score_super, seen_super)
        thr_sub[i] = raw_thresholds(tau_sub, score_sub, seen_sub)
        reach_super, place_super = _levels_reached(score_super, thr_super[i])
        reach_sub, place_sub = _levels_reached(score_sub, thr_sub[i])
        # One level: images accepted at each threshold, per weighted set.
        one = _accepted(reach_super, place_super, np.stack([seen_super, shifted, *(member & hit_super),
                                                            *(member & novel_super)]))
        sub_one = _accepted(reach_sub, place_sub, np.stack([seen_sub, shifted]))
        accept["super"][i] = _rate(one[0], counts["seen_super"])
        accept["sub"][i] = _rate(sub_one[0], counts["seen_sub"])
        accept["shifted_super"][i] = _rate(one[1], n_group[SHIFTED])
        accept["shifted_sub"][i] = _rate(sub_one[1], n_group[SHIFTED])
        # Correct per image: superclass, accepted with the right argmax if seen, rejected if not;
        # subclass, accepted at both levels with the right argmax if seen, rejected at either if
        # not. The subclass one folds "rejected" into n - accepted, so hits and novel rows enter
        # one pair count with weights +1 / -1.
        super_hits = (one[2:2 + G] + (member & novel_super).sum(1)[:, None] - one[2 + G:]).T  # [T_s, G]
        weight = (member & hit_sub).astype(np.int64) - (member & novel_sub)  # [G, N]
        both = _accepted_pairs(reach_super, place_super, reach_sub, place_sub, np.concatenate([weight, shifted[None]]))
        sub_hits = both[:G].transpose(1, 2, 0) + novel_sub_in_group  # [T_s, T_u, G]
        accept_shifted[i] = _rate(both[G], n_group[SHIFTED])
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
        # One sort per level for its six threshold-free measures.
        ranked_super, ranked_sub = RankedScores(score_super), RankedScores(score_sub)
        free[i, 0] = _threshold_free(ranked_super, seen_super, insource & ~seen_super, hit_super)
        free[i, 1] = _threshold_free(ranked_sub, seen_sub, insource & ~seen_sub, hit_sub)
        group_auroc[i] = (ranked_sub.auroc(member[SEEN], member[NOVEL_SUB]),
                          ranked_super.auroc(member[SEEN], member[NOVEL_SUPER]))
    return PosthocResult(tuple(names), tau_super, tau_sub, thr_super, thr_sub, grid, free, counts, accept["super"],
                         accept["sub"], group_acc=group_acc, group_auroc=group_auroc, accept_shifted=accept_shifted,
                         accept_shifted_super=accept["shifted_super"], accept_shifted_sub=accept["shifted_sub"],
                         skipped=skipped, shifted_weight=float(w))


def _levels_reached(score: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reach [N], place [T]) with `score >= thr[t]` exactly when reach > place[t]: reach counts
    the thresholds at or below an image's score (0 for a NaN score, which is novel), place the
    thresholds strictly below thr[t] (all of them for a NaN threshold, which accepts nothing)."""
    ordered = np.sort(thr[~np.isnan(thr)])
    reach = np.searchsorted(ordered, score, side="right")
    reach[np.isnan(score)] = 0
    place = np.searchsorted(ordered, thr, side="left")
    place[np.isnan(thr)] = len(ordered)
    return reach, place


def _accepted(reach: np.ndarray, place: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[W, T]: for each row of `weights` [W, N], the sum over the images threshold t accepts."""
    bins = len(place) + 1
    hist = np.stack([np.bincount(reach, w, minlength=bins) for w in weights.astype(float)])  # [W, bins]
    above = np.cumsum(hist[:, ::-1], 1)[:, ::-1]  # above[:, r] = weight of images with reach >= r
    return np.concatenate([above, np.zeros((len(weights), 1))], 1)[:, place + 1]


def _accepted_pairs(reach_a: np.ndarray, place_a: np.ndarray, reach_b: np.ndarray, place_b: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """[W, T_a, T_b]: for each row of `weights` [W, N], the sum over the images both threshold a
    (of the first score) and threshold b (of the second) accept."""
    ba, bb = len(place_a) + 1, len(place_b) + 1
    cell = reach_a * bb + reach_b
    hist = np.stack([np.bincount(cell, w, minlength=ba * bb) for w in weights.astype(float)]).reshape(-1, ba, bb)
    above = np.cumsum(np.cumsum(hist[:, ::-1, ::-1], 1), 2)[:, ::-1, ::-1]  # reach_a >= r and reach_b >= q
    above = np.pad(above, ((0, 0), (0, 1), (0, 1)))
    return above[:, place_a + 1][:, :, place_b + 1]


def _rate(count, n) -> np.ndarray:
    """count / n elementwise (n broadcasts), NaN where n is 0."""
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    shape = np.broadcast_shapes(count.shape, n.shape)
    return np.divide(count, n, out=np.full(shape, np.nan), where=np.broadcast_to(n > 0, shape))


def _threshold_free(ranked: RankedScores, known: np.ndarray, novel: np.ndarray, hit: np.ndarray
                    ) -> tuple[float, float, float]:
    return ranked.auroc(known, novel), ranked.fpr_at_95(known, novel), ranked.oscr(known, novel, hit)


@dataclass
class PosthocResult:
    scores: tuple[str, ...]
    tau_super: np.ndarray  # [T_super]
    tau_sub: np.ndarray  # [T_sub]
    thr_super: np.ndarray  # [n_scores, T_super] raw thresholds
    thr_sub: np.ndarray  # [n_scores, T_sub]
    grid: np.ndarray  # [n_scores, T_super, T_sub, 4] accuracies in ACCURACIES order
    threshold_free: np.ndarray  # [n_scores, 2, 3]: LEVELS x MEASURES
    counts: dict[str, int]  # in-source images seen_super, novel_super, seen_sub, novel_sub; group_<name> per group
    accept_super: np.ndarray  # [n_scores, T_super]: fraction of in-source seen-superclass images accepted
    accept_sub: np.ndarray  # [n_scores, T_sub]: fraction of in-source seen-subclass images accepted (sub score alone)
    group_acc: np.ndarray  # [n_scores, T_super, T_sub, len(GROUPS), 2]: each group's super / sub accuracy
    group_auroc: np.ndarray  # [n_scores, 2]: AUROC seen vs novel_sub (sub score), seen vs novel_super (super score)
    accept_shifted: np.ndarray  # [n_scores, T_super, T_sub]: seen_shifted images accepted at both levels
    accept_shifted_super: np.ndarray  # [n_scores, T_super]: seen_shifted images the super threshold accepts
    accept_shifted_sub: np.ndarray  # [n_scores, T_sub]: ... the sub threshold accepts (sub score alone)
    skipped: dict[str, str]  # score -> why it is not on the grid
    shifted_weight: float  # the weight seen_shifted had in `seen` (0 without that group)

    @property
    def seen(self) -> np.ndarray:  # [n_scores, T_super, T_sub]
        return objective(self.grid[..., 0], self.grid[..., 2])

    @property
    def unseen(self) -> np.ndarray:
        return objective(self.grid[..., 1], self.grid[..., 3])

    def find(self, score: str, tau_super: float, tau_sub: float) -> GridPoint | None:
        """point() of (score, τ_super, τ_sub) when the grid has it, else None."""
        if score not in self.scores or tau_super not in self.tau_super or tau_sub not in self.tau_sub:
            return None
        return self.point(self.scores.index(score), int(np.flatnonzero(self.tau_super == tau_super)[0]),
                          int(np.flatnonzero(self.tau_sub == tau_sub)[0]))

    def point(self, score: int, i: int, j: int) -> GridPoint:
        """Everything about one grid point; accuracy names match leaderboard_metrics."""
        acc = dict(zip(ACCURACIES, map(float, self.grid[score, i, j])))
        c = self.counts
        return GridPoint(
            score=self.scores[score], tau_super=float(self.tau_super[i]), tau_sub=float(self.tau_sub[j]),
            thr_super=float(self.thr_super[score, i]), thr_sub=float(self.thr_sub[score, j]),
            accept_super=float(self.accept_super[score, i]), accept_sub=float(self.accept_sub[score, j]),
            accept_shifted=float(self.accept_shifted[score, i, j]),
            accept_shifted_super=float(self.accept_shifted_super[score, i]),
            accept_shifted_sub=float(self.accept_shifted_sub[score, j]),
            **acc,
            overall_super_acc=_pooled(acc["seen_super_acc"], c["seen_super"], acc["unseen_super_acc"], c["novel_super"]),
            overall_sub_acc=_pooled(acc["seen_sub_acc"], c["seen_sub"], acc["unseen_sub_acc"], c["novel_sub"]),
            seen=objective(acc["seen_super_acc"], acc["seen_sub_acc"]),
            unseen=objective(acc["unseen_super_acc"], acc["unseen_sub_acc"]),
            **{f"{g}_acc": objective(*self.group_acc[score, i, j, k]) for k, g in enumerate(GROUPS)})

    @cached_property
    def by_score(self) -> dict[str, ScoreFigures]:
        """Each score's threshold-free figures: trial-level facts that each of its points shares."""
        out = {}
        for s, name in enumerate(self.scores):
            points = np.stack([self.seen[s].ravel(), self.unseen[s].ravel()], 1)
            free = {f"{level}_{measure}": float(self.threshold_free[s, l, m])
                    for l, level in enumerate(LEVELS) for m, measure in enumerate(MEASURES)}
            aurocs = {f"auroc_{g}": float(self.group_auroc[s, k]) for k, g in enumerate(NOVEL_GROUPS)}
            out[name] = ScoreFigures(hypervolume=hypervolume_2d(points), **free, **aurocs)
        return out

    @cached_property
    def front(self) -> list[GridPoint]:
        """Non-dominated (seen, unseen) grid points over all scores, seen descending."""
        flat = pareto_front(np.stack([self.seen.ravel(), self.unseen.ravel()], 1))
        return [self.point(*np.unravel_index(k, self.grid.shape[:3])) for k in flat]

    @cached_property
    def hypervolume(self) -> float:
        return hypervolume_2d([(p.seen, p.unseen) for p in self.front])

    @cached_property
    def recommended(self) -> GridPoint:
        """The knee of this trial's own front (hiertune.novelty.metrics.knee_distance): the point a trial
        reports as its seen/unseen, rather than a corner such as rejecting everything."""
        if not self.front:  # every grid point NaN: nothing to recommend
            return self.point(0, 0, 0)
        seen = np.array([p.seen for p in self.front])
        unseen = np.array([p.unseen for p in self.front])
        return self.front[rank_points(seen, unseen, knee_distance(seen, unseen))[0]]

    def save(self, path: str | os.PathLike) -> None:
        """One .npz of plain arrays; names and counts ride along as a JSON string (no pickle)."""
        meta = json.dumps({"scores": list(self.scores), "counts": self.counts, "skipped": self.skipped,
                           "shifted_weight": self.shifted_weight})
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), **{k: getattr(self, k) for k in _ARRAYS})

    @classmethod
    def load(cls, path: str | os.PathLike | typing.BinaryIO) -> PosthocResult:
        """A saved result, checked whole here: a sweep's front reads its cells as arrays, so a
        damaged file must fail now (ValueError), not as one odd point of the front later."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            result = cls(tuple(meta["scores"]), counts=meta["counts"], skipped=meta["skipped"],
                         shifted_weight=meta["shifted_weight"], **{k: z[k] for k in _ARRAYS})
        result._check()
        return result

    def _check(self) -> None:
        n, t_super, t_sub = len(self.scores), len(self.tau_super), len(self.tau_sub)
        if not n or not all(isinstance(s, str) and s for s in self.scores):
            raise ValueError(f"scores must be names, got {list(self.scores)}")
        if not isinstance(self.counts, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.counts.values()):
            raise ValueError("counts must map names to image counts")
        shapes = {"tau_super": (t_super,), "tau_sub": (t_sub,), "thr_super": (n, t_super), "thr_sub": (n, t_sub),
                  "grid": (n, t_super, t_sub, len(ACCURACIES)), "threshold_free": (n, len(LEVELS), len(MEASURES)),
                  "accept_super": (n, t_super), "accept_sub": (n, t_sub),
                  "group_acc": (n, t_super, t_sub, len(GROUPS), 2), "group_auroc": (n, len(NOVEL_GROUPS)),
                  "accept_shifted": (n, t_super, t_sub), "accept_shifted_super": (n, t_super),
                  "accept_shifted_sub": (n, t_sub)}
        for name, shape in shapes.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype.kind != "f":
                raise ValueError(f"{name}: expected floats of shape {shape}, got {array.dtype} {array.shape}")
        for name in set(_ARRAYS) - {"thr_super", "thr_sub"}:  # rates, accuracies and AUROC-like measures
            values = getattr(self, name)
            if ((values < 0) | (values > 1)).any():
                raise ValueError(f"{name}: values outside [0, 1]")
        if np.isnan(self.tau_super).any() or np.isnan(self.tau_sub).any():
            raise ValueError("tau: NaN")


_ARRAYS = ("tau_super", "tau_sub", "thr_super", "thr_sub", "grid", "threshold_free", "accept_super", "accept_sub",
           "group_acc", "group_auroc", "accept_shifted", "accept_shifted_super", "accept_shifted_sub")


def _pooled(acc_a: float, n_a: int, acc_b: float, n_b: int) -> float:
    hits = (acc_a * n_a if n_a else 0.0) + (acc_b * n_b if n_b else 0.0)
    return hits / (n_a + n_b) if n_a + n_b else float("nan")
