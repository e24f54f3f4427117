"""Seed 000, approach B: two independent backbones, one per level, each with its own linear head.
Each specialises on its level; the price is twice the parameters and no shared regularisation."""

from __future__ import annotations

import torch
from torch import nn

from hiertune.models.backbone import FinetunedModel, feature_dim, linear_head
from hiertune.models.registry import Heads, ModelConfig, ModelOutput, register_family


@register_family("twomodel")
class TwoModel(FinetunedModel):
    def __init__(self, config: ModelConfig, heads: Heads):
        super().__init__(config, heads, n_backbones=2)
        dim = feature_dim(self.backbones[0])
        self.super_head = linear_head(dim, heads.super_outputs, config.dropout)
        self.sub_head = self.make_sub_head(config, dim)

    def make_sub_head(self, config: ModelConfig, dim: int) -> nn.Module:
        return linear_head(dim, self.heads.sub_outputs, config.dropout)

    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"super": self.backbones[0](x), "sub": self.backbones[1](x)}

    def frozen_widths(self) -> dict[str, int]:
        return {"super": feature_dim(self.backbones[0]), "sub": feature_dim(self.backbones[1])}

    def from_features(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        f_super, f_sub = features["super"], features["sub"]
        return ModelOutput(self.super_head(f_super), self.sub_head(f_sub), f_super, f_sub)
