"""Seed 000, approach C: two independent backbones as in twomodel, with a cosine-similarity
classifier as the subclass head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hiertune.errors import UserError
from hiertune.models.registry import ModelConfig, register_family
from hiertune.models.twomodel import TwoModel


class CosineClassifier(nn.Module):
    """logits = scale · cos(feature, class weight).

    The scale is a fixed hyperparameter, not learned: under cross-entropy a learned scale keeps
    growing to sharpen the softmax on the training set, which makes max-softmax confidences, the
    novelty score, overconfident and drift between runs. Fixed, it stays a sweepable temperature.
    """

    def __init__(self, dim: int, outputs: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(outputs, dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = scale

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(f, dim=1) @ F.normalize(self.weight, dim=1).T


@dataclass(frozen=True)
class CosineSettings:
    cosine_scale: float = 16.0  # logit scale of the cosine classifier

    def __post_init__(self) -> None:
        if not self.cosine_scale > 0:
            raise UserError(f"cosine_scale must be > 0, got {self.cosine_scale}")


@register_family("cosine")
class CosineTwoModel(TwoModel):
    Settings = CosineSettings

    def make_sub_head(self, config: ModelConfig, dim: int) -> nn.Module:
        classifier = CosineClassifier(dim, self.heads.sub_outputs, config.settings.cosine_scale)
        return nn.Sequential(nn.Dropout(config.dropout), classifier)
