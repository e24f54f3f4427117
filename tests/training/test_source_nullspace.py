"""The source projection: directions that tell generated from real images, projected out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiertune.training.config import TrialConfig
from hiertune.errors import UserError
from hiertune.models.projection import SourceProjection
from hiertune.models.registry import Heads, create_model
from hiertune.novelty.source import source_auroc
from hiertune.training.source_nullspace import source_basis


def test_the_basis_finds_the_planted_source_directions_and_blinds_a_probe():
    rng = np.random.default_rng(0)
    width = 24
    planted = rng.normal(size=width)
    planted /= np.linalg.norm(planted)
    scale = np.linspace(0.5, 2.0, width)  # anisotropic noise: Fisher's direction is not the mean gap
    generated = rng.normal(size=(400, width)) * scale
    real = rng.normal(size=(300, width)) * scale + 3.0 * planted
    assert source_auroc(generated, real) > 0.9
    basis = source_basis(generated, real, 3)
    assert np.allclose(basis @ basis.T, np.eye(3), atol=1e-8)
    # The planted source direction lies (almost) inside the basis, and a probe is blind without it.
    assert np.linalg.norm(basis @ planted) == pytest.approx(1, abs=0.05)
    keep = np.eye(width) - basis.T @ basis
    assert source_auroc(generated @ keep, real @ keep) < 0.65
    with pytest.raises(UserError, match="must be < the feature width 24"):
        source_basis(generated, real, 24)


def test_projection_removes_only_its_basis_and_starts_as_the_identity():
    projection = SourceProjection({"pooled": 3}, 1)
    f = {"pooled": torch.tensor([[1.0, 2.0, 3.0]]), "other": torch.ones(1, 2)}
    assert torch.equal(projection(f)["pooled"], f["pooled"])  # unfitted: zeros, nothing removed
    projection.set_basis("pooled", torch.tensor([[0.0, 1.0, 0.0]]))
    out = projection(f)
    assert torch.equal(out["pooled"], torch.tensor([[1.0, 0.0, 3.0]])) and out["other"] is f["other"]
    assert "basis_pooled" in projection.state_dict()  # exported with the weights


def test_source_directions_need_a_frozen_timm_backbone():
    heads = Heads(2, 4, (0, 0, 1, 1), novel_logit=False)
    frozen = create_model(TrialConfig(backbone="resnet10t", finetune="linear", source_directions=3).model_config(),
                          heads)
    assert frozen.state_dict()["source_projection.basis_pooled"].shape == (3, frozen.frozen_widths()["pooled"])
    with pytest.raises(UserError, match="needs a frozen backbone .*: finetune full trains the backbone"):
        create_model(TrialConfig(backbone="resnet10t", finetune="full", source_directions=3).model_config(), heads)
    with pytest.raises(UserError, match="the cnn family has no timm backbone"):
        create_model(TrialConfig(family="cnn", source_directions=3).model_config(), heads)
    with pytest.raises(UserError, match="source_directions must be >= 0"):
        TrialConfig(source_directions=-1)
