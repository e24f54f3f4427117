"""The post-hoc grid: every (score, τ_super, τ_sub) evaluated on one forward pass, and the
hierarchical decision at raw thresholds.

Thresholds: τ in [0, 1] for every score, higher τ = more images called novel, and an image is
novel at a level when its score is below the raw threshold (a NaN score counts as novel). For
msp τ is the probability threshold itself, as in the seeds (τ_super 0.99, τ_sub 0.85). The
other scores have arbitrary scales, so τ is the fraction of seen validation images rejected: the
raw threshold is the τ-quantile of the score over validation images whose true class at that
level is seen.
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from torch import Tensor

from hiertune.errors import UserError
from hiertune.fsutil import atomic_file
from hiertune.models.registry import Heads
from hiertune.novelty.metrics import (ACCURACIES, LEADERBOARD_KEYS, auroc, fpr_at_95, hypervolume_2d, knee_distance,
                                      leaderboard_metrics, objective, oscr, pareto_front, rank_points)
from hiertune.novelty.scores import (LEVELS, LOGIT_SCORES, SCORES, FeatureScorer, LevelScores, has_scorers,
                                     score_levels)

MEASURES = ("auroc", "fpr95", "oscr")

# One grid serves both meanings of τ. It is dense near 1, where useful msp thresholds live (the
# seeds' 0.85 and 0.99 are on it), and near 0, where quantile scores reject a few percent of
# seen images; τ = 0 is the closed-set classifier.
TAU_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
            0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)


@dataclass(frozen=True)
class PosthocConfig:
    scores: tuple[str, ...] = SCORES
    tau_super: tuple[float, ...] = TAU_GRID
    tau_sub: tuple[float, ...] = TAU_GRID
    knn_k: int = 10

    def __post_init__(self) -> None:
        for name in ("scores", "tau_super", "tau_sub"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # YAML gives lists
        unknown = [s for s in self.scores if s not in SCORES]
        if unknown or not self.scores:
            raise UserError(f"posthoc: scores must be a non-empty subset of {', '.join(SCORES)}; "
                            f"got {list(self.scores)}")
        for name in ("tau_super", "tau_sub"):
            taus = getattr(self, name)
            if not taus or not all(0.0 <= t <= 1.0 for t in taus):
                raise UserError(f"posthoc: {name} must be a non-empty list of values in [0, 1]; "
                                f"got {list(taus)}")
        if self.knn_k < 1:
            raise UserError(f"posthoc: knn_k must be >= 1, got {self.knn_k}")


@dataclass
class EvalBatch:
    """One forward pass over the validation set, CPU tensors; targets use novel = n_super / n_sub."""

    super_logits: Tensor
    sub_logits: Tensor
    super_features: Tensor
    sub_features: Tensor
    super_target: Tensor
    sub_target: Tensor


def decide(s: LevelScores, heads: Heads, thr_super: float, thr_sub: float) -> tuple[Tensor, Tensor]:
    """(pred_super, pred_sub) on CPU for raw thresholds; novel is n_super / n_sub. A novel
    superclass forces a novel subclass, and a seen subclass always belongs to the predicted
    superclass."""
    novel_super = ~(s.super_score >= thr_super)
    novel_sub = novel_super | ~(s.sub_score >= thr_sub)
    return (s.super_argmax.masked_fill(novel_super, heads.n_super),
            s.sub_argmax.masked_fill(novel_sub, heads.n_sub))


def point_metrics(batch: EvalBatch, heads: Heads, score: str, tau_super: float, tau_sub: float,
                  scorers: dict[str, FeatureScorer] | None = None, knn_k: int = 10) -> dict:
    """Leaderboard accuracies at one (score, τ_super, τ_sub), τ meaning what it means on the grid
    (also off the grid: a τ that Optuna sampled, say), with the raw thresholds it resolved to."""
    s = score_levels(batch, heads, score, scorers, knn_k)
    true_super = batch.super_target.cpu().numpy()
    true_sub = batch.sub_target.cpu().numpy()
    thr_super = float(raw_thresholds(score, [tau_super], s.super_score.numpy(), true_super < heads.n_super)[0])
    thr_sub = float(raw_thresholds(score, [tau_sub], s.sub_score.numpy(), true_sub < heads.n_sub)[0])
    pred_super, pred_sub = decide(s, heads, thr_super, thr_sub)
    metrics = leaderboard_metrics(pred_super.numpy(), pred_sub.numpy(), true_super, true_sub,
                                  heads.n_super, heads.n_sub)
    return {**metrics, "thr_super": thr_super, "thr_sub": thr_sub,
            "accept_super": seen_acceptance(s.super_score.numpy(), true_super < heads.n_super, thr_super),
            "accept_sub": seen_acceptance(s.sub_score.numpy(), true_sub < heads.n_sub, thr_sub)}


def seen_acceptance(scores, seen, thr: float) -> float:
    """Fraction of the images whose true class at this level is seen that the level's threshold
    accepts (score >= thr): the rate an exported model's calibration reproduces."""
    ref = np.asarray(scores, dtype=float)[np.asarray(seen, dtype=bool)]
    return float((ref >= thr).mean()) if len(ref) else float("nan")


def raw_thresholds(score: str, tau, scores, seen) -> np.ndarray:
    """Raw thresholds for grid values `tau`, given one level's `scores` and which images' true
    class at that level is `seen`. msp: τ itself. Others: the τ-quantile of the seen images'
    scores (method 'lower': always an attained score, and no arithmetic on infinite ones);
    NaN, i.e. everything novel, when there are no seen images."""
    tau = np.asarray(tau, dtype=float)
    if score == "msp":
        return tau.copy()
    ref = np.asarray(scores, dtype=float)[np.asarray(seen, dtype=bool)]
    if len(ref) == 0:
        return np.full(tau.shape, np.nan)
    return np.quantile(ref, tau, method="lower")


def posthoc_grid(batch: EvalBatch, heads: Heads, config: PosthocConfig = PosthocConfig(),
                 scorers: dict[str, FeatureScorer] | None = None) -> PosthocResult:
    """Leaderboard accuracies at every (score, τ_super, τ_sub); feature scores are skipped when
    `scorers` lacks either level."""
    S, K = heads.n_super, heads.n_sub
    true_super = np.minimum(batch.super_target.cpu().numpy(), S)
    true_sub = np.minimum(batch.sub_target.cpu().numpy(), K)
    seen_super, seen_sub = true_super < S, true_sub < K
    counts = {"seen_super": int(seen_super.sum()), "novel_super": int((~seen_super).sum()),
              "seen_sub": int(seen_sub.sum()), "novel_sub": int((~seen_sub).sum())}
    names = tuple(s for s in config.scores if s in LOGIT_SCORES or has_scorers(scorers))
    tau_super, tau_sub = np.asarray(config.tau_super, float), np.asarray(config.tau_sub, float)
    grid = np.empty((len(names), len(tau_super), len(tau_sub), len(ACCURACIES)))
    thr_super = np.empty((len(names), len(tau_super)))
    thr_sub = np.empty((len(names), len(tau_sub)))
    accept = {"super": np.empty_like(thr_super), "sub": np.empty_like(thr_sub)}
    free = np.empty((len(names), len(LEVELS), len(MEASURES)))
    for i, name in enumerate(names):
        s = score_levels(batch, heads, name, scorers, config.knn_k)
        score_super, score_sub = s.super_score.numpy(), s.sub_score.numpy()
        hit_super = seen_super & (s.super_argmax.numpy() == true_super)
        hit_sub = seen_sub & (s.sub_argmax.numpy() == true_sub)
        thr_super[i] = raw_thresholds(name, tau_super, score_super, seen_super)
        thr_sub[i] = raw_thresholds(name, tau_sub, score_sub, seen_sub)
        accept_super = (score_super[None, :] >= thr_super[i][:, None]).astype(float)  # [T_super, N]
        accept_sub = (score_sub[None, :] >= thr_sub[i][:, None]).astype(float)  # [T_sub, N]
        accept["super"][i] = _rate(accept_super @ seen_super, counts["seen_super"])
        accept["sub"][i] = _rate(accept_sub @ seen_sub, counts["seen_sub"])
        # A subclass counts as accepted only if its superclass is too, so the sub-level tallies
        # are sums over images of accept_super * accept_sub * indicator: one matrix product.
        grid[i, ..., 0] = _rate(accept_super @ hit_super, counts["seen_super"])[:, None]
        grid[i, ..., 1] = _rate((1 - accept_super) @ ~seen_super, counts["novel_super"])[:, None]
        grid[i, ..., 2] = _rate((accept_super * hit_sub) @ accept_sub.T, counts["seen_sub"])
        grid[i, ..., 3] = _rate(counts["novel_sub"] - (accept_super * ~seen_sub) @ accept_sub.T,
                                counts["novel_sub"])
        free[i, 0] = _threshold_free(score_super, seen_super, hit_super)
        free[i, 1] = _threshold_free(score_sub, seen_sub, hit_sub)
    return PosthocResult(names, tau_super, tau_sub, thr_super, thr_sub, grid, free, counts, accept["super"],
                         accept["sub"])


def _rate(count, n: int) -> np.ndarray:
    count = np.asarray(count, dtype=float)
    return count / n if n else np.full(count.shape, np.nan)


def _threshold_free(score: np.ndarray, seen: np.ndarray, hit: np.ndarray) -> tuple[float, float, float]:
    known, novel = score[seen], score[~seen]
    return auroc(known, novel), fpr_at_95(known, novel), oscr(hit[seen], known, novel)


@dataclass
class PosthocResult:
    scores: tuple[str, ...]
    tau_super: np.ndarray  # [T_super]
    tau_sub: np.ndarray  # [T_sub]
    thr_super: np.ndarray  # [n_scores, T_super] raw thresholds
    thr_sub: np.ndarray  # [n_scores, T_sub]
    grid: np.ndarray  # [n_scores, T_super, T_sub, 4] accuracies in ACCURACIES order
    threshold_free: np.ndarray  # [n_scores, 2, 3]: LEVELS x MEASURES
    counts: dict[str, int]  # validation images per group: seen_super, novel_super, seen_sub, novel_sub
    accept_super: np.ndarray  # [n_scores, T_super]: fraction of seen-superclass images accepted
    accept_sub: np.ndarray  # [n_scores, T_sub]: fraction of seen-subclass images accepted (sub score alone)

    @property
    def seen(self) -> np.ndarray:  # [n_scores, T_super, T_sub]
        return objective(self.grid[..., 0], self.grid[..., 2])

    @property
    def unseen(self) -> np.ndarray:
        return objective(self.grid[..., 1], self.grid[..., 3])

    def point(self, score: int, i: int, j: int) -> dict:
        """Everything about one grid point; accuracy keys match leaderboard_metrics."""
        acc = dict(zip(ACCURACIES, map(float, self.grid[score, i, j])))
        c = self.counts
        acc["overall_super_acc"] = _pooled(acc["seen_super_acc"], c["seen_super"],
                                           acc["unseen_super_acc"], c["novel_super"])
        acc["overall_sub_acc"] = _pooled(acc["seen_sub_acc"], c["seen_sub"],
                                         acc["unseen_sub_acc"], c["novel_sub"])
        acc["seen"] = objective(acc["seen_super_acc"], acc["seen_sub_acc"])
        acc["unseen"] = objective(acc["unseen_super_acc"], acc["unseen_sub_acc"])
        return {"score": self.scores[score],
                "tau_super": float(self.tau_super[i]), "tau_sub": float(self.tau_sub[j]),
                "thr_super": float(self.thr_super[score, i]), "thr_sub": float(self.thr_sub[score, j]),
                "accept_super": float(self.accept_super[score, i]), "accept_sub": float(self.accept_sub[score, j]),
                **acc}

    @cached_property
    def front(self) -> list[dict]:
        """Non-dominated (seen, unseen) grid points over all scores, seen descending."""
        flat = pareto_front(np.stack([self.seen.ravel(), self.unseen.ravel()], 1))
        return [self.point(*np.unravel_index(k, self.grid.shape[:3])) for k in flat]

    @cached_property
    def hypervolume(self) -> float:
        return hypervolume_2d([(p["seen"], p["unseen"]) for p in self.front])

    @cached_property
    def recommended(self) -> dict:
        """The knee of this trial's own front (hiertune.novelty.metrics.knee_distance): the point a trial
        reports as its seen/unseen, rather than a corner such as rejecting everything."""
        if not self.front:  # every grid point NaN: nothing to recommend
            return self.point(0, 0, 0)
        seen = np.array([p["seen"] for p in self.front])
        unseen = np.array([p["unseen"] for p in self.front])
        return self.front[rank_points(seen, unseen, knee_distance(seen, unseen))[0]]

    def to_metrics(self) -> dict[str, float]:
        """Flat floats for Ray Tune / MLflow: the recommended point's accuracies and τ, the front's
        hypervolume (overall and per score), and the threshold-free measures per level and score."""
        metrics = {key: self.recommended[key] for key in LEADERBOARD_KEYS}
        metrics.update(tau_super=self.recommended["tau_super"], tau_sub=self.recommended["tau_sub"],
                       hypervolume=self.hypervolume, front_size=float(len(self.front)))
        for s, name in enumerate(self.scores):
            points = np.stack([self.seen[s].ravel(), self.unseen[s].ravel()], 1)
            metrics[f"hypervolume_{name}"] = hypervolume_2d(points)
            for l, level in enumerate(LEVELS):
                for m, measure in enumerate(MEASURES):
                    metrics[f"{level}_{measure}_{name}"] = float(self.threshold_free[s, l, m])
        return metrics

    def save(self, path: str | os.PathLike) -> None:
        """One .npz of plain arrays; names and counts ride along as a JSON string (no pickle)."""
        meta = json.dumps({"scores": list(self.scores), "counts": self.counts})
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), tau_super=self.tau_super, tau_sub=self.tau_sub,
                     thr_super=self.thr_super, thr_sub=self.thr_sub, grid=self.grid,
                     threshold_free=self.threshold_free, accept_super=self.accept_super, accept_sub=self.accept_sub)

    @classmethod
    def load(cls, path: str | os.PathLike | typing.BinaryIO) -> PosthocResult:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(tuple(meta["scores"]), z["tau_super"], z["tau_sub"], z["thr_super"], z["thr_sub"],
                       z["grid"], z["threshold_free"], meta["counts"], z["accept_super"], z["accept_sub"])


def _pooled(acc_a: float, n_a: int, acc_b: float, n_b: int) -> float:
    hits = (acc_a * n_a if n_a else 0.0) + (acc_b * n_b if n_b else 0.0)
    return hits / (n_a + n_b) if n_a + n_b else float("nan")
