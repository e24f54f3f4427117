"""Seed 004 ("layover"): a frozen backbone plus a small side branch that mixes an intermediate
stage back into the pre-logit feature.

    h = stage `layover_stage` feature map          z = pooled pre-logit feature
    ĥ = sigmoid(MLP(avgpool(h)))                   (representation summarisation, eq. 2; the pool is
                                                   on the frozen side, see frozen_features)
    α = sigmoid(W z + b), one scalar per image     (scale learning, eq. 6)
    z' = α ĥ + (1 - α) z                           (representation mixup, eq. 5); both heads read z'

Only the side branch and the heads train, whatever `finetune` says: the method is an
alternative to fine-tuning, with linear-probe cost. The backbone stays in eval mode and runs
without autograd.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from hiertune.errors import UserError
from hiertune.models.backbone import FinetunedModel, feature_dim, linear_head
from hiertune.models.registry import Heads, ModelConfig, ModelOutput, register_family

log = logging.getLogger("hiertune")
MAX_HIDDEN = 65536  # past it the side MLP needs more memory than any machine has


@dataclass(frozen=True)
class LayoverSettings:
    layover_stage: int = -2  # which backbone stage feeds the side branch (checked against the backbone's stages)
    layover_hidden: int = 256  # width of the side MLP

    def __post_init__(self) -> None:
        if self.layover_hidden < 1:
            raise UserError(f"layover_hidden must be >= 1, got {self.layover_hidden}")
        if self.layover_hidden > MAX_HIDDEN:
            raise UserError(f"layover_hidden must be <= {MAX_HIDDEN:,}, got {self.layover_hidden:,}")


@register_family("layover")
class Layover(FinetunedModel):
    Settings = LayoverSettings
    always_frozen = True

    def __init__(self, config: ModelConfig, heads: Heads):
        own = config.settings
        if config.finetune != "linear":
            log.info("layover trains only its side branch and heads; finetune=%s is ignored", config.finetune)
        super().__init__(dataclasses.replace(config, finetune="linear"), heads, n_backbones=1)
        backbone = self.backbones[0]
        n = len(getattr(backbone, "feature_info", None) or [])
        if not hasattr(backbone, "forward_intermediates") or n == 0:
            raise UserError(f"layover needs a backbone with intermediate features (timm feature_info and "
                            f"forward_intermediates); {config.backbone!r} has none")
        if not -n <= own.layover_stage < n:
            raise UserError(f"layover_stage must be in {-n}..{n - 1} ({config.backbone} has {n} stages), "
                            f"got {own.layover_stage}")
        self.stage = own.layover_stage % n
        channels = backbone.feature_info[self.stage]["num_chs"]
        dim = feature_dim(backbone)
        # The paper ends the summary in a sigmoid "throughout all experiments"; kept as published.
        self.summary = nn.Sequential(nn.Linear(channels, own.layover_hidden), nn.ReLU(),
                                     nn.Linear(own.layover_hidden, dim), nn.Sigmoid())
        self.gate = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())
        self.super_head = linear_head(dim, heads.super_outputs, config.dropout)
        self.sub_head = linear_head(dim, heads.sub_outputs, config.dropout)

    def frozen_spec(self) -> dict:
        return {**super().frozen_spec(), "stage": self.stage}

    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # The summary's average pool happens here, on the frozen side: a cached stage is then one
        # vector per image, not a feature map.
        backbone = self.backbones[0]
        with torch.no_grad():
            final, (hidden,) = backbone.forward_intermediates(x, indices=[self.stage])
            return {"pooled": backbone.forward_head(final, pre_logits=True), "stage": hidden.mean(dim=(2, 3))}

    def frozen_widths(self) -> dict[str, int]:
        backbone = self.backbones[0]
        return {"pooled": feature_dim(backbone), "stage": backbone.feature_info[self.stage]["num_chs"]}

    def from_features(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        pooled = features["pooled"]
        alpha = self.gate(pooled)
        mixed = alpha * self.summary(features["stage"]) + (1 - alpha) * pooled
        return ModelOutput(self.super_head(mixed), self.sub_head(mixed), mixed, mixed)
