"""Seed 001's baseline: a 3-block CNN trained from scratch, two fully connected layers, two heads.

Each block is conv-ReLU-BN-maxpool with cnn_width·{1, 2, 4} channels, as in the seed; the
flattened 8×8 map goes through two fully connected layers whose output is the feature both heads
(and the feature-space novelty scores) read. One conv per block keeps it cheap enough to train
on a CPU. The family has no timm backbone, so backbone, pretrained and finetune do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hiertune.errors import UserError
from hiertune.models.backbone import linear_head
from hiertune.models.registry import Heads, ModelConfig, ModelOutput, register_family


FC_WIDTH = 256
MAX_WIDTH = 1024  # past it a model needs more memory than any machine has; far above what trains well


@dataclass(frozen=True)
class CNNSettings:
    cnn_width: int = 32  # channels of the first block (doubles per block)

    def __post_init__(self) -> None:
        if self.cnn_width < 1:
            raise UserError(f"cnn_width must be >= 1, got {self.cnn_width}")
        if self.cnn_width > MAX_WIDTH:
            raise UserError(f"cnn_width must be <= {MAX_WIDTH:,}, got {self.cnn_width:,}")


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out), nn.MaxPool2d(2)]


@register_family("cnn")
class SmallCNN(nn.Module):
    Settings = CNNSettings
    uses_backbone = False
    always_frozen = False
    kl_loss = False

    @classmethod
    def input_pipeline(cls, config: ModelConfig) -> dict:
        return {"mean": (0.5,) * 3, "std": (0.5,) * 3}  # [-1, 1], as seed 001

    def __init__(self, config: ModelConfig, heads: Heads):
        super().__init__()
        self.heads = heads
        widths = [3] + [config.settings.cnn_width * m for m in (1, 2, 4)]
        blocks = [layer for c_in, c_out in zip(widths, widths[1:]) for layer in _block(c_in, c_out)]
        # Pool to 8×8 whatever the input size, so the fully connected layers keep their shape.
        self.features = nn.Sequential(
            *blocks, nn.AdaptiveAvgPool2d(8), nn.Flatten(),
            nn.Linear(widths[-1] * 64, FC_WIDTH), nn.ReLU(inplace=True),
            nn.Linear(FC_WIDTH, FC_WIDTH), nn.ReLU(inplace=True))
        self.super_head = linear_head(FC_WIDTH, heads.super_outputs, config.dropout)
        self.sub_head = linear_head(FC_WIDTH, heads.sub_outputs, config.dropout)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to schedule: the whole network trains from the first epoch."""

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f = self.features(x)
        return ModelOutput(self.super_head(f), self.sub_head(f), f, f)
