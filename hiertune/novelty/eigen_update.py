"""The eigendecomposition of a symmetric matrix after a rank-one update, from the matrix's own.

vim's second moment about a head's origin is the features' covariance plus an outer product
(hiertune.novelty.ood_scores.HeadStats.fit): with a frozen backbone the covariance is the same
every epoch and only the origin moves. With C = Q diag(λ) Qᵀ decomposed once, C + v vᵀ =
Q (diag(λ) + w wᵀ) Qᵀ with w = Qᵀ v, and the inner problem is solved in O(D²) as LAPACK's
divide-and-conquer solves its merge step (dlaed2, dlaed3; Bunch, Nielsen & Sorensen 1978):

- deflation: a component of w that is negligible leaves its eigenpair as it was, and two
  eigenvalues closer than the tolerance are rotated so that only one of them keeps a component;
- the remaining eigenvalues are the roots of the secular equation 1 + Σ w_j² / (λ_j - μ) = 0,
  found by LAPACK's dlasd4 (the singular-value form of dlaed4, the one scipy exposes) with
  their distances to every pole computed accurately;
- the eigenvectors (diag(λ) - μ_i)⁻¹ ŵ use the ŵ for which the computed roots are exact (Gu &
  Eisenstat 1994), which keeps them orthogonal to working precision however close the roots.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg.lapack import dlasd4
from torch import Tensor


def rank_one_eigh(values: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns, the same order) of diag(`values`) +
    w wᵀ, `values` [D] ascending (as torch.linalg.eigh returns them) and `w` [D], float64.

    The eigenvectors are in the basis where the matrix before the update is diagonal: those of
    C + v vᵀ are Q @ vectors when C = Q diag(values) Qᵀ and w = Qᵀ v."""
    d = values.detach().to("cpu", torch.float64).numpy().copy()
    z = w.detach().to("cpu", torch.float64).numpy().copy()
    dim = len(d)
    rho = float(z @ z)
    if rho == 0.0:
        return torch.from_numpy(d), torch.eye(dim, dtype=torch.float64)
    z /= np.sqrt(rho)
    # dlaed2's tolerance: a component, or the coupling of two close eigenvalues, below it changes
    # nothing at working precision.
    tol = 8 * np.finfo(np.float64).eps * max(np.abs(d).max(), np.abs(z).max())
    kept: list[int] = []
    rotations: list[tuple[int, int, float, float]] = []
    for j in np.flatnonzero(rho * np.abs(z) > tol):  # the others are eigenpairs (d_j, e_j) already
        prev = kept[-1] if kept else -1
        if prev >= 0:
            tau = np.hypot(z[j], z[prev])
            c, s = z[j] / tau, -z[prev] / tau
            if abs((d[j] - d[prev]) * c * s) <= tol:
                # Rotate the pair so that j carries the whole component and prev none: prev's
                # eigenpair is then exact up to the dropped coupling, which is below tol.
                z[j], z[prev] = tau, 0.0
                d[prev], d[j] = d[prev] * c * c + d[j] * s * s, d[prev] * s * s + d[j] * c * c
                rotations.append((prev, j, c, s))
                kept.pop()
        kept.append(j)
    if len(kept) == dim:  # nothing deflated (nor rotated): the secular equation is the whole problem
        mu, vectors = _secular(d, z, rho)
        return torch.from_numpy(mu), torch.from_numpy(vectors)
    vectors = np.zeros((dim, dim))
    deflated = np.setdiff1d(np.arange(dim), kept)
    vectors[deflated, deflated] = 1.0
    if kept:
        idx = np.array(kept)
        norm = np.linalg.norm(z[idx])  # below one by what was deflated
        d[idx], vectors[np.ix_(idx, idx)] = _secular(d[idx], z[idx] / norm, rho * norm * norm)
    # Back from the rotated basis: the rotations, last first, on the rows.
    for p, j, c, s in reversed(rotations):
        vectors[p], vectors[j] = c * vectors[p] - s * vectors[j], s * vectors[p] + c * vectors[j]
    order = np.argsort(d, kind="stable")
    return torch.from_numpy(d[order]), torch.from_numpy(vectors[:, order])


def _secular(d: np.ndarray, z: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of diag(d) + rho z zᵀ, d strictly ascending,
    z of norm one with no zero component, rho > 0."""
    k = len(d)
    if k == 1:
        return d + rho * z * z, np.ones((1, 1))
    # dlasd4 takes nonnegative poles and returns, for root i, delta = s_j - σ_i and work = s_j + σ_i
    # (s_j = sqrt(d_j - shift), σ_i² = μ_i - shift): their product is d_j - μ_i without cancellation.
    shift = d[0]
    s = np.sqrt(np.maximum(d - shift, 0.0))
    gaps = np.empty((k, k))  # gaps[i, j] = d_j - μ_i
    mu = np.empty(k)
    for i in range(k):
        delta, sigma, work, info = dlasd4(i, s, z, rho)
        if info != 0:
            raise np.linalg.LinAlgError(f"dlasd4 did not converge for root {i} of {k} (info {info})")
        np.multiply(delta, work, out=gaps[i])
        mu[i] = sigma * sigma + shift
    # The z for which the computed roots are exact (dlasd3's products, each factor in (0, 1]):
    # ẑ_j² = (μ_{k-1} - d_j) Π_{i<j} (μ_i - d_j)/(d_i - d_j) Π_{j≤i<k-1} (μ_i - d_j)/(d_{i+1} - d_j).
    g, st = torch.from_numpy(gaps), torch.from_numpy(s)
    poles = (st[:, None] - st) * (st[:, None] + st)  # [i, j] d_i - d_j, from the s the gaps use
    further = torch.ones(k - 1, k, dtype=torch.bool).tril()  # i ≥ j: the pole one further on
    ratios = torch.where(further, poles[1:], poles[:-1]).reciprocal_().mul_(g[:-1]).neg_()
    z_hat = (ratios.prod(0) * -g[-1]).sqrt_().copysign_(torch.from_numpy(z))
    vectors = z_hat / g  # [i, j]: eigenvector i's component j
    vectors /= torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    return mu, vectors.T.numpy()
