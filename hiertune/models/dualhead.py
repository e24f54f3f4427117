"""Seed 000, approach A: one shared backbone, a linear superclass head and a linear subclass head
on its pooled feature (the KL interaction term that ties the heads lives in hiertune.training.losses)."""

from __future__ import annotations

import torch

from hiertune.models.backbone import FinetunedModel, feature_dim, linear_head
from hiertune.models.registry import Heads, ModelConfig, ModelOutput, register_family


@register_family("dualhead")
class DualHead(FinetunedModel):
    kl_loss = True  # its heads share a feature, and seed 000's KL term ties them

    def __init__(self, config: ModelConfig, heads: Heads):
        super().__init__(config, heads, n_backbones=1)
        dim = feature_dim(self.backbones[0])
        self.super_head = linear_head(dim, heads.super_outputs, config.dropout)
        self.sub_head = linear_head(dim, heads.sub_outputs, config.dropout)

    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": self.backbones[0](x)}

    def frozen_widths(self) -> dict[str, int]:
        return {"pooled": feature_dim(self.backbones[0])}

    def from_features(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        f = features["pooled"]
        return ModelOutput(self.super_head(f), self.sub_head(f), f, f)
