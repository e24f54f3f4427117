"""Novelty scores per level, and the streaming feature bank behind the feature-space ones.

Every score (hiertune.novelty.registry) is "higher = more familiar" and is computed per level
(super / sub). At the subclass level the class-conditional scores only look at the subclasses of
the predicted superclass, so the subclass decision never contradicts the superclass one; knn is
label-free and unrestricted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from hiertune.models.registry import Heads
from hiertune.novelty.memo import Memo, canonical
from hiertune.novelty.ood_scores import HeadStats
from hiertune.novelty.registry import LEVELS, LevelInput, score, unavailable


class FeatureBank:
    """Streaming statistics of training features, collected during the training epoch."""

    def __init__(self, n_classes: int, dim: int, knn_capacity: int = 4096, seed: int = 0):
        if knn_capacity < 1:
            raise ValueError(f"knn_capacity must be >= 1, got {knn_capacity}")
        self.n_classes, self.dim = n_classes, dim
        self.count = torch.zeros(n_classes, dtype=torch.int64)
        self.sum = torch.zeros(n_classes, dim, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)  # within-class, summed over classes
        self.reservoir = torch.zeros(knn_capacity, dim, dtype=torch.float32)
        self.offered = 0  # rows offered to the reservoir so far
        self._rng = np.random.default_rng(seed)

    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch; rows labelled novel or outlier (label >= n_classes) are ignored."""
        x = features.detach().to("cpu", torch.float64).reshape(len(features), -1)
        y = labels.detach().to("cpu", torch.int64)
        keep = (y >= 0) & (y < self.n_classes)
        x, y = x[keep], y[keep]
        if len(y):
            self._update_moments(x, y)
            self._update_reservoir(F.normalize(x, dim=1).float())

    def _update_moments(self, x: Tensor, y: Tensor) -> None:
        n_b = torch.bincount(y, minlength=self.n_classes).double()
        sum_b = torch.zeros_like(self.sum).index_add_(0, y, x)
        mean_b = sum_b / n_b.clamp(min=1)[:, None]
        centred = x - mean_b[y]
        n_a = self.count.double()
        delta = self.sum / n_a.clamp(min=1)[:, None] - mean_b
        weight = n_a * n_b / (n_a + n_b).clamp(min=1)
        # Chan et al.'s pairwise merge of centred scatters: unlike E[xx^T] - mu mu^T it does not
        # cancel catastrophically for features with large means (post-ReLU), and it makes the
        # result independent of how the epoch was chunked.
        self.scatter += centred.T @ centred + delta.T @ (weight[:, None] * delta)
        self.count += n_b.long()
        self.sum += sum_b

    def _update_reservoir(self, x: Tensor) -> None:
        capacity = len(self.reservoir)
        t = self.offered + np.arange(len(x))  # each row's position in the whole stream
        self.offered += len(x)
        fill = np.flatnonzero(t < capacity)
        self.reservoir[t[fill]] = x[fill]
        rest = np.flatnonzero(t >= capacity)
        # Algorithm R: row t takes a uniform slot with probability capacity / (t + 1). One uniform
        # draw per row keeps the random stream, hence the sample, independent of chunking.
        slot = np.floor(self._rng.random(len(rest)) * (t[rest] + 1)).astype(np.int64)
        taken = slot < capacity
        slot, rows = slot[taken], rest[taken]
        # Of rows drawing the same slot the last one wins, as in the sequential algorithm.
        _, last = np.unique(slot[::-1], return_index=True)
        last = len(slot) - 1 - last
        self.reservoir[slot[last]] = x[rows[last]]

    def fit(self, shrinkage: float = 0.1, head: HeadStats | None = None) -> FeatureScorer:
        present = self.count > 0
        if not present.any():
            raise ValueError("FeatureBank.fit: no seen-class features were added")
        means = self.sum / self.count.clamp(min=1)[:, None]
        cov = self.scatter / self.count.sum()
        # With D-dimensional features and N samples the tied covariance is singular when N <= D
        # and noisy unless N >> D (small sweeps, 512-d backbones). Shrinking toward the identity
        # scaled by the mean variance (Ledoit-Wolf style) keeps it invertible and well
        # conditioned, and does not depend on the features' scale.
        scale = (cov.trace() / self.dim).clamp(min=1e-12)
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov = (1 - shrinkage) * cov + shrinkage * scale * eye
        chol = torch.linalg.cholesky(cov)
        whiten = torch.linalg.solve_triangular(chol, eye, upper=False).T  # x @ whiten: unit covariance
        bank = self.reservoir[: min(self.offered, len(self.reservoir))].clone()
        return FeatureScorer(means=means, present=present, whiten=whiten, bank=bank, head=head)


@dataclass
class FeatureScorer:
    means: Tensor  # [C, D] float64 class means; rows of classes never seen are unused
    present: Tensor  # [C] bool: class had training features
    whiten: Tensor  # [D, D] float64, whiten @ whiten.T = inverse of the shrunk tied covariance
    bank: Tensor  # [M, D] float32, L2-normalised training features
    head: HeadStats | None = None  # what rmds, fdbd, scale and vim need; None: those are unavailable

    def mahalanobis(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """Minus the smallest squared Mahalanobis distance to a class mean (Lee et al. 2018),
        over classes that were seen in training and, if given, allowed by `mask` [N, C].
        -inf where no class qualifies. Float64, CPU."""
        return self.nearest(self.distances(features), mask)

    def distances(self, features: Tensor) -> Tensor:
        """[N, C] squared Mahalanobis distances to every class mean (what mahalanobis minimises)."""
        z = features.detach().to("cpu", torch.float64) @ self.whiten
        m = self.means @ self.whiten
        return ((z * z).sum(1, keepdim=True) - 2 * z @ m.T + (m * m).sum(1)).clamp(min=0)

    def nearest(self, d2: Tensor, mask: Tensor | None = None) -> Tensor:
        allowed = self.present.expand_as(d2) if mask is None else mask.cpu() & self.present
        return -d2.masked_fill(~allowed, torch.inf).amin(1)

    def knn(self, features: Tensor, k: int, chunk: int = 2048) -> Tensor:
        """Minus the distance between the L2-normalised feature and its k-th nearest normalised
        training feature (Sun et al. 2022); k is capped at the bank size. Float32, CPU."""
        k = min(k, len(self.bank))
        queries = F.normalize(features.detach().to("cpu", torch.float32), dim=1)
        out = []
        for block in queries.split(chunk):  # bounds the [chunk, M] similarity matrix
            kth = (block @ self.bank.T).topk(k, dim=1).values[:, -1]
            out.append(-(2 - 2 * kth).clamp(min=0).sqrt())  # unit vectors: |a-b|^2 = 2 - 2 a.b
        return torch.cat(out)

    def state_dict(self) -> dict[str, Tensor]:
        head = {f"head.{k}": v for k, v in self.head.state_dict().items()} if self.head else {}
        return {"means": self.means, "present": self.present, "whiten": self.whiten, "bank": self.bank, **head}

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor]) -> FeatureScorer:
        head = {k.split(".", 1)[1]: v for k, v in d.items() if k.startswith("head.")}
        return cls(means=d["means"], present=d["present"].bool(), whiten=d["whiten"], bank=d["bank"],
                   head=HeadStats.from_state_dict(head) if head else None)


def save_scorers(scorers: dict[str, FeatureScorer], path: str | os.PathLike) -> None:
    tensors, stored = {}, set()
    for level, sc in scorers.items():
        for k, v in sc.state_dict().items():
            v = v.contiguous()
            # Levels that read one feature share statistics (Memo); the file keeps a copy each.
            tensors[f"{level}.{k}"] = v.clone() if v.data_ptr() in stored else v
            stored.add(v.data_ptr())
    save_file(tensors, str(path))


def load_scorers(path: str | os.PathLike) -> dict[str, FeatureScorer]:
    tensors = load_file(str(path))
    return {level: FeatureScorer.from_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items()
                                                  if k.split(".", 1)[0] == level})
            for level in LEVELS}


@dataclass
class LevelScores:
    super_argmax: Tensor  # [N] seen superclass with the highest logit
    sub_argmax: Tensor  # [N] seen subclass of super_argmax with the highest logit
    super_score: Tensor  # [N] float64 familiarity at each level
    sub_score: Tensor


def subclass_mask(heads: Heads) -> Tensor:
    """[n_super, n_sub] bool: True where the subclass belongs to the superclass."""
    owner = torch.tensor(heads.sub_to_super)
    return owner[None, :] == torch.arange(heads.n_super)[:, None]


def hierarchical_argmax(output, heads: Heads) -> tuple[Tensor, Tensor, Tensor]:
    """(super_argmax, sub_argmax, mask): the seen superclass with the highest logit, the seen
    subclass of it with the highest logit, and [N, n_sub] which subclasses that superclass owns."""
    super_logits, sub_logits = output.super_logits.detach().cpu(), output.sub_logits.detach().cpu()
    super_argmax = super_logits[:, : heads.n_super].argmax(1)
    mask = subclass_mask(heads)[super_argmax]
    sub_argmax = sub_logits[:, : heads.n_sub].float().masked_fill(~mask, -torch.inf).argmax(1)
    return super_argmax, sub_argmax, mask


def score_levels(output, heads: Heads, name: str, scorers: dict[str, FeatureScorer] | None = None,
                 knn_k: int = 10) -> LevelScores:
    """Hierarchical argmaxes and per-level scores of a ModelOutput or EvalBatch, on CPU.

    `scorers` maps "super" / "sub" to the FeatureScorer of that level's features, which every
    score that needs more than logits reads (hiertune.novelty.registry)."""
    return all_level_scores(output, heads, (name,), scorers, knn_k)[name]


def all_level_scores(output, heads: Heads, names, scorers: dict[str, FeatureScorer] | None = None,
                     knn_k: int = 10, memo: Memo | None = None) -> dict[str, LevelScores]:
    """score_levels of every score in `names` from one pass: the argmaxes once, and through
    `memo` what depends on features alone (class and background distances, knn, scale's rescaled
    inputs), so a trial whose features do not change computes those once, and levels with the
    same features share them."""
    super_argmax, sub_argmax, mask = hierarchical_argmax(output, heads)
    # float64 once for every score, so that predict() and the grid compare the same numbers with
    # the same thresholds
    inputs = {level: LevelInput(logits.detach().cpu().double(), n, level_mask, argmax,
                                canonical(memo, "features", features.detach().cpu()),
                                (scorers or {}).get(level), knn_k, memo)
              for level, logits, n, level_mask, argmax, features in (
                  ("super", output.super_logits, heads.n_super, None, super_argmax, output.super_features),
                  ("sub", output.sub_logits, heads.n_sub, mask, sub_argmax, output.sub_features))}
    out = {}
    for name in names:
        spec = score(name)
        reason = unavailable(name, scorers)
        if reason:
            raise ValueError(f"score {name!r} unavailable: {reason}")
        levels = [spec.level(inputs[level]).double() for level in LEVELS]
        out[name] = LevelScores(super_argmax, sub_argmax, *levels)
    return out
