"""The post-hoc scores that lead OpenOOD v1.5, in their "higher = more familiar" form.

All of them need only what a trial already has: logits, the pooled feature that feeds a head,
that head's weights, and statistics of clean (eval-mode) training features.

- gen   Generalized entropy (Liu et al., CVPR 2023): -sum over the top-M probabilities of
        p^γ (1 - p)^γ, p the softmax over the classes ranked (the seen ones). Logits only.
- rmds  Relative Mahalanobis distance (Ren et al. 2021): the class-conditional distance minus
        the distance under one Gaussian fitted to all training features, which removes the
        part of the distance that every class shares (feature norm, background).
- fdbd  Feature distance to decision boundaries (Liu & Qin, ICML 2024): the mean over other
        classes c of |(w_ŷ - w_c)·z + b_ŷ - b_c| / ||w_ŷ - w_c||, divided by ||z - μ_train||.
- scale SCALE (Xu et al., ICLR 2024): the energy of the head applied to z·exp(r), where
        r = sum(z) / sum of z's top (100 - p)% activations. Meant for non-negative (post-ReLU)
        features; with others r is still defined but is no longer an activation ratio.
- vim   Virtual-logit matching (Wang et al., CVPR 2022): energy minus α·||residual||, the
        residual being the feature's part outside the principal subspace of training features
        (centred at the head's origin u = -pinv(W) b), α matching its scale to the max logit's.

A head is a `LinearHead`: a linear map of the feature, or of the L2-normalised feature for the
cosine classifier, whose logits are exactly scale·normalize(w_c)·normalize(z) (so every head-based
score is defined for it too, on the normalised feature). Only the seen classes' rows enter: a
trailing novel logit is no class with a decision boundary or a class-conditional energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hiertune.models.cosine import CosineClassifier
from hiertune.novelty.eigen_update import rank_one_eigh
from hiertune.novelty.memo import memo_get

GEN_GAMMA = 0.1  # the paper's value for every benchmark
SCALE_PERCENTILE = 85.0  # the paper's ImageNet setting
VIM_FRACTION = 0.5  # principal dimensions as a fraction of the feature width


@dataclass
class LinearHead:
    weight: Tensor  # [C, D] float64, seen classes only
    bias: Tensor  # [C] float64
    normalize: bool  # the head reads the L2-normalised feature (cosine classifier)

    def inputs(self, features: Tensor) -> Tensor:
        z = features.detach().to("cpu", torch.float64)
        return F.normalize(z, dim=1) if self.normalize else z

    def products(self, z: Tensor) -> Tensor:
        return z @ self.weight.T

    def logits(self, z: Tensor) -> Tensor:
        return self.products(z) + self.bias


def head_of(module: nn.Module, n_seen: int) -> LinearHead | None:
    """The last linear (or cosine) layer of a head module, as a LinearHead; None when the head
    ends in anything else, so the head-based scores are unavailable for that level."""
    last = list(module.modules())[-1]
    if isinstance(last, nn.Linear):
        bias = last.bias if last.bias is not None else torch.zeros(last.out_features)
        return LinearHead(last.weight.detach().cpu().double()[:n_seen], bias.detach().cpu().double()[:n_seen], False)
    if isinstance(last, CosineClassifier):
        w = last.scale * F.normalize(last.weight.detach().cpu().double(), dim=1)[:n_seen]
        return LinearHead(w, torch.zeros(n_seen, dtype=torch.float64), True)
    return None


def allowed_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """`logits` with the classes outside `mask` at -inf: out of a max or logsumexp, and p = 0 in a
    softmax, which then renormalises over the allowed classes."""
    return logits if mask is None else logits.masked_fill(~mask.cpu(), -torch.inf)


def gen(logits: Tensor, gamma: float = GEN_GAMMA, top: int | None = None) -> Tensor:
    """Minus the generalized entropy of the `top` largest probabilities (all when None; OpenOOD's
    M = 100 covers every class here) of the softmax over `logits` [N, C], the classes ranked,
    -inf for those excluded (allowed_logits).

    As in the paper, the probabilities are a distribution over exactly the classes ranked. Unlike
    msp, G is not monotone in the mass those classes claim: mass taken by a novel logit, or by
    classes outside the mask, shrinks every p toward 0 and so lowers G, which would make an image
    the head confidently calls novel read as familiar."""
    p = logits.detach().cpu().double().softmax(1)
    m = p.shape[1] if top is None else min(top, p.shape[1])
    p = p.topk(m, dim=1).values
    return -(p.pow(gamma) * (1 - p).pow(gamma)).sum(1)


def energy(logits: Tensor, mask: Tensor | None) -> Tensor:
    return allowed_logits(logits, mask).logsumexp(1)


def scale_ratio(z: Tensor, percentile: float = SCALE_PERCENTILE) -> Tensor:
    """SCALE's factor per head input: exp of its sum over the sum of its top-(100 - percentile)%."""
    dim = z.shape[1]
    k = max(1, dim - round(dim * percentile / 100.0))
    return (z.sum(1) / z.topk(k, dim=1).values.sum(1)).exp()


def background(cov: Tensor, shrinkage: float) -> Tensor:
    """The whitening of the Gaussian of the features with covariance `cov` [D, D] float64, shrunk
    as the class-conditional fit's is (FeatureBank.fit), so the two distances that rmds
    subtracts are on the same footing."""
    dim = len(cov)
    eye = torch.eye(dim, dtype=torch.float64)
    cov = (1 - shrinkage) * cov + shrinkage * (cov.trace() / dim).clamp(min=1e-12) * eye
    return torch.linalg.solve_triangular(torch.linalg.cholesky(cov), eye, upper=False).T


def _covariance(z: Tensor) -> tuple[Tensor, Tensor]:
    """(biased covariance, mean) of the rows of `z`."""
    mean = z.mean(0)
    centred = z - mean
    return centred.T @ centred / len(z), mean


@dataclass
class HeadStats:
    """What the head-based scores fit on clean training features of one level."""

    head: LinearHead
    mean: Tensor  # [D] mean training feature (raw), the background Gaussian's mean
    whiten: Tensor  # [D, D] whitening of the background Gaussian (shrunk covariance of all features)
    head_mean: Tensor  # [D] mean head input (normalised for cosine heads): fdbd's centre
    vim_origin: Tensor | None  # [D] u = -pinv(W) b, in head-input space; None: vim not fitted
    vim_residual: Tensor | None  # [D, D - d] basis of the complement of the principal subspace
    vim_alpha: Tensor | None  # [] scalar

    @classmethod
    def fit(cls, features: Tensor, head: LinearHead, shrinkage: float = 0.1,
            vim_fraction: float = VIM_FRACTION, vim: bool = True, memo=None) -> HeadStats:
        """`vim` False leaves vim's principal subspace (an eigendecomposition of the feature
        width) unfitted; `memo` (hiertune.novelty.memo.Memo) keeps what depends on the features
        alone across epochs and levels, for the same `features` tensor (the caller's canonical one)."""
        x = memo_get(memo, "fit_features64", (features,), lambda: features.detach().to("cpu", torch.float64))
        cov, mean = memo_get(memo, "covariance", (x,), lambda: _covariance(x))
        whiten = memo_get(memo, f"background{shrinkage}", (cov,), lambda: background(cov, shrinkage))
        # A linear head reads the features as they are; a cosine head normalises them.
        z, cov_z, mean_z = x, cov, mean
        if head.normalize:
            z = memo_get(memo, "normalized", (x,), lambda: head.inputs(x))
            cov_z, mean_z = memo_get(memo, "normalized_covariance", (z,), lambda: _covariance(z))
        if not vim:
            return cls(head, mean, whiten, mean_z, None, None, None)
        n, dim = x.shape
        origin = -torch.linalg.pinv(head.weight) @ head.bias
        shifted = z - origin
        # The second moment about the origin is the covariance of the head inputs plus the outer
        # product of their mean minus the origin. The covariance stays while the features do (a
        # frozen backbone): it is decomposed once (torch.linalg.eigh, LAPACK's divide and conquer),
        # and each epoch's new origin is a rank-one update of that decomposition, O(D²) instead
        # of O(D³) (hiertune.novelty.eigen_update). Only the smallest eigenvalues' vectors are kept.
        keep = min(dim - 1, max(1, round(vim_fraction * dim)))
        values, basis = memo_get(memo, "covariance_eigh", (cov_z,), lambda: torch.linalg.eigh(cov_z))
        inner = rank_one_eigh(values, basis.T @ (mean_z - origin))[1]
        residual = basis @ inner[:, : dim - keep]  # eigenvalues ascending
        virtual = (shifted @ residual).norm(dim=1)
        alpha = head.logits(z).amax(1).mean() / virtual.mean().clamp(min=1e-12)
        return cls(head, mean, whiten, mean_z, origin, residual, alpha)

    def background_distance(self, features: Tensor) -> Tensor:
        """Squared Mahalanobis distance under the background Gaussian (rmds's MD_0)."""
        d = (features.detach().to("cpu", torch.float64) - self.mean) @ self.whiten
        return (d * d).sum(1)

    def fdbd(self, features: Tensor, predicted: Tensor, z: Tensor | None = None, logits: Tensor | None = None,
             spread: Tensor | None = None) -> Tensor:
        """`z`, `logits` and `spread`, when given, are the head's inputs and logits of `features`
        and spread(z)."""
        z = self.head.inputs(features) if z is None else z
        w = self.head.weight
        y = predicted.cpu().long()
        # (w_ŷ - w_c)·z + b_ŷ - b_c is the logit margin, and ||w_ŷ - w_c|| depends on the class
        # pair only: O(N·C) instead of materialising w_ŷ - w_c per image ([N, C, D]).
        logits = self.head.logits(z) if logits is None else logits
        margin = logits.gather(1, y[:, None]) - logits
        gram = w @ w.T
        pair = (gram.diagonal()[:, None] + gram.diagonal()[None, :] - 2 * gram).clamp(min=0).sqrt()
        dist = margin.abs() / pair[y].clamp(min=1e-12)
        # The predicted class's own term is an exact 0 (a zero margin over a clamped zero), so the
        # sum over the others is the sum over all; NaN with a single class: no boundary.
        mean_dist = dist.sum(1) / (dist.shape[1] - 1) if dist.shape[1] > 1 else torch.full_like(dist[:, 0], torch.nan)
        return mean_dist / (self.spread(z) if spread is None else spread)

    def spread(self, z: Tensor) -> Tensor:
        """fdbd's denominator: the distance of head inputs `z` from the mean training head input."""
        return (z - self.head_mean).norm(dim=1).clamp(min=1e-12)

    def scale(self, features: Tensor, mask: Tensor | None = None, percentile: float = SCALE_PERCENTILE,
              z: Tensor | None = None, products: Tensor | None = None, ratio: Tensor | None = None) -> Tensor:
        """`z`, `products` and `ratio`, when given, are the head's inputs of `features`, their
        products with its weights (z·Wᵀ) and scale_ratio(z)."""
        z = self.head.inputs(features) if z is None else z
        products = self.head.products(z) if products is None else products
        ratio = scale_ratio(z, percentile) if ratio is None else ratio
        # The head is linear and the rescaling one factor per image: its logits of z·exp(r) are
        # exp(r)·(z·Wᵀ) + b, with no second product over the feature width. A factor that
        # overflowed leaves the score undefined (NaN, the least familiar), as rescaling by it would.
        score = energy(ratio[:, None] * products + self.head.bias, mask)
        return score.where(ratio.isfinite(), torch.nan)

    def vim(self, features: Tensor, mask: Tensor | None = None, z: Tensor | None = None,
            logits: Tensor | None = None) -> Tensor:
        z = self.head.inputs(features) if z is None else z
        logits = self.head.logits(z) if logits is None else logits
        virtual = ((z - self.vim_origin) @ self.vim_residual).norm(dim=1)
        return energy(logits, mask) - self.vim_alpha * virtual

    def state_dict(self) -> dict[str, Tensor]:
        vim = {k: v for k, v in (("vim_origin", self.vim_origin), ("vim_residual", self.vim_residual),
                                 ("vim_alpha", self.vim_alpha)) if v is not None}
        return {"head_weight": self.head.weight, "head_bias": self.head.bias,
                "head_normalize": torch.tensor(self.head.normalize), "mean": self.mean, "whiten": self.whiten,
                "head_mean": self.head_mean, **vim}

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor]) -> HeadStats:
        head = LinearHead(d["head_weight"], d["head_bias"], bool(d["head_normalize"]))
        return cls(head, d["mean"], d["whiten"], d["head_mean"], d.get("vim_origin"), d.get("vim_residual"),
                   d.get("vim_alpha"))
