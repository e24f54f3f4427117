"""Fitting the source projection of hiertune.models.projection: which directions of a frozen
backbone's feature space tell generated training images from real ones.

Iterative nullspace projection (Ravfogel et al., 2020, "Null It Out"): fit a linear classifier of
the source (generated labeled images against real ones: the training outliers and the
--shifted-data photos that train), remove its direction from the features, and fit again on what
is left, `directions` times. The classifier is Fisher's discriminant with a shrunk pooled
covariance (closed form: one solve per direction, no iterative fit), each direction solved in the
complement of the earlier ones, so the basis comes out orthonormal. Fitted once per trial on the
clean view of the cached training features; a seeded draw of at most `cap` rows per source keeps
the fit the same cost on any data and the two sources equally weighted.
"""

from __future__ import annotations

import numpy as np
import torch

from hiertune.errors import UserError

SHRINKAGE = 0.1  # share of the pooled covariance replaced by its mean variance: a full-rank, stable solve


def source_basis(generated: np.ndarray, real: np.ndarray, directions: int, seed: int = 0,
                 cap: int = 4000) -> np.ndarray:
    """[directions, width] orthonormal rows: the source directions of [N, width] features, found
    one at a time, each in the nullspace of the ones before it."""
    width = generated.shape[1]
    if directions >= width:
        raise UserError(f"source_directions must be < the feature width {width}, got {directions}")
    rng = np.random.default_rng([seed, 23])
    a, b = (x[np.sort(rng.choice(len(x), cap, replace=False))] if len(x) > cap else x
            for x in (np.asarray(generated, np.float64), np.asarray(real, np.float64)))
    gap = b.mean(0) - a.mean(0)
    pooled = (np.cov(a, rowvar=False) * (len(a) - 1) + np.cov(b, rowvar=False) * (len(b) - 1)) / (len(a) + len(b) - 2)
    pooled = (1 - SHRINKAGE) * pooled + SHRINKAGE * np.trace(pooled) / width * np.eye(width)
    basis = np.zeros((0, width))
    for _ in range(directions):
        keep = np.eye(width) - basis.T @ basis  # projector onto the nullspace of the basis so far
        w = keep @ np.linalg.solve(keep @ pooled @ keep + SHRINKAGE * np.trace(pooled) / width * np.eye(width),
                                   keep @ gap)
        norm = np.linalg.norm(w)
        if norm < 1e-12:  # the sources' means already agree on what is left
            w = keep @ rng.standard_normal(width)
            norm = np.linalg.norm(w)
        basis = np.vstack([basis, w / norm])
    return basis


def fit_source_projection(model: torch.nn.Module, features: dict[str, torch.Tensor], generated: int,
                          seed: int) -> None:
    """Fit `model.source_projection` (one basis per frozen feature) on a trial's cached training
    features (name -> [N, views, width]; rows as hiertune.data.splits.take_rows lays them out:
    the first `generated` are the labeled images, the rest photos and outliers)."""
    projection = model.source_projection
    for name in projection.names:
        clean = features[name][:, 0].float().cpu().numpy()
        if len(clean) - generated < 2:
            raise UserError("source_directions needs real images among the training images (outliers, or "
                            "--shifted-data photos that train): there is no second source to tell apart; set "
                            "source_directions 0")
        basis = source_basis(clean[:generated], clean[generated:], projection.basis(name).shape[0], seed)
        projection.set_basis(name, torch.from_numpy(basis).float())
