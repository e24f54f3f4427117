"""The rank-one update of an eigendecomposition against torch.linalg.eigh of the updated matrix:
eigenvalues, orthogonality, the eigen-equation, and the subspace of the smallest half (what vim
keeps), on the cases that need deflation as well as the generic one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiertune.novelty.eigen_update import rank_one_eigh

D = 240
HALF = D // 2


def _case(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(CASES.index(name))
    values, w = np.sort(rng.random(D)), rng.standard_normal(D)
    if name == "low rank":  # a covariance of fewer samples than dimensions: exact zero eigenvalues
        values[: D // 3] = 0.0
    elif name == "repeated":  # multiplicity 10: nine of each stay, one moves (the split is at a block's end)
        values = np.sort(np.repeat(rng.random(D // 10), 10))
    elif name == "near-equal":
        values[40:60] = values[40] + np.arange(20) * 1e-16
    elif name == "some components zero":
        w[::3] = 0.0
    elif name == "update zero":
        w[:] = 0.0
    elif name == "update tiny":
        w *= 1e-12
    elif name == "update large":
        w *= 30.0
    elif name == "decaying spectrum":  # as feature covariances are: eigenvalues over many decades
        values = np.sort(10.0 ** rng.uniform(-12, 2, D))
        values[HALF:] += 1.0  # with a gap at the split
    return values, w


CASES = ("generic", "low rank", "repeated", "near-equal", "some components zero", "update zero", "update tiny",
         "update large", "decaying spectrum")


@pytest.mark.parametrize("name", CASES)
def test_the_update_matches_the_decomposition_of_the_updated_matrix(name):
    values, w = (torch.tensor(a) for a in _case(name))
    matrix = torch.diag(values) + torch.outer(w, w)
    expected, expected_vectors = torch.linalg.eigh(matrix)
    got, vectors = rank_one_eigh(values, w)
    scale = float(expected.abs().max())  # the norm of the matrix
    assert got.dtype == vectors.dtype == torch.float64
    assert torch.all(got[1:] >= got[:-1])
    assert (got - expected).abs().max() <= 1e-12 * scale
    assert (vectors.T @ vectors - torch.eye(D, dtype=torch.float64)).abs().max() <= 1e-12
    assert (matrix @ vectors - vectors * got).abs().max() <= 1e-12 * scale
    # vim reads the span of the smallest half. Either decomposition's is accurate to about
    # ε·scale / gap (Davis & Kahan), where the gap at the split is not small:
    gap = float(expected[HALF] - expected[HALF - 1])
    assert gap > 1e-8 * scale
    projector = vectors[:, :HALF] @ vectors[:, :HALF].T
    expected_projector = expected_vectors[:, :HALF] @ expected_vectors[:, :HALF].T
    assert (projector - expected_projector).abs().max() <= 1e-12 + 10 * np.finfo(np.float64).eps * scale / gap


def test_an_update_in_a_basis_is_the_update_of_the_matrix_it_diagonalises():
    """C + v vᵀ's eigenvectors are Q @ vectors, with C = Q diag(values) Qᵀ and w = Qᵀ v: how
    HeadStats.fit uses it, on a covariance of correlated features."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g, dtype=torch.float64)
    cov = torch.cov(x.T, correction=0)
    v = torch.randn(64, generator=g, dtype=torch.float64) * 5
    values, basis = torch.linalg.eigh(cov)
    got, vectors = rank_one_eigh(values, basis.T @ v)
    expected, expected_vectors = torch.linalg.eigh(cov + torch.outer(v, v))
    assert torch.allclose(got, expected, rtol=0, atol=1e-10 * float(expected.abs().max()))
    residual = basis @ vectors[:, :32]
    assert torch.allclose(residual @ residual.T, expected_vectors[:, :32] @ expected_vectors[:, :32].T, rtol=0,
                          atol=1e-10)


def test_a_single_dimension():
    got, vectors = rank_one_eigh(torch.tensor([2.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64))
    assert got.tolist() == [11.0] and vectors.tolist() == [[1.0]]
