"""Seed 001's baseline: a 3-block CNN trained from scratch, two fully connected layers, two heads.

Each block is conv-ReLU-BN-maxpool with cnn_width·{1, 2, 4} channels, as in the seed; the
flattened 8×8 map goes through two fully connected layers whose output is the feature both heads
(and the feature-space novelty scores) read. One conv per block keeps it cheap enough to train
on a CPU. The family has no timm backbone, so backbone, pretrained and finetune do not apply.
"""

from __future__ import annotations

import torch
from torch import nn

from hiertune.errors import UserError
from hiertune.models.backbone import check_config, linear_head
from hiertune.models.registry import Heads, ModelConfig, ModelOutput, register_family


FC_WIDTH = 256


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out), nn.MaxPool2d(2)]


@register_family("cnn")
class SmallCNN(nn.Module):
    def __init__(self, config: ModelConfig, heads: Heads):
        super().__init__()
        check_config(config)
        if config.cnn_width < 1:
            raise UserError(f"cnn_width must be >= 1, got {config.cnn_width}")
        self.heads = heads
        widths = [3] + [config.cnn_width * m for m in (1, 2, 4)]
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
