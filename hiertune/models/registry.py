"""Architecture families by name, in the spirit of timm's register_model/create_model.

A family module decorates its builder with `@register_family("name")`; `create_model` looks the
name up and builds a `HierModel` for a given class hierarchy. Every family returns the same
`ModelOutput`, so the training loop, the losses and the novelty scores never branch on family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from hiertune.errors import UserError, did_you_mean

FINETUNE_STRATEGIES = ("linear", "partial", "full", "gradual", "bn")
OUTLIER_MODES = ("class", "oe")


@dataclass(frozen=True)
class ModelConfig:
    family: str
    backbone: str = "resnet18"  # a timm model name; the cnn family ignores it
    pretrained: bool | str = False  # False | True (timm's hub) | path to a local weights file
    finetune: str = "full"  # one of FINETUNE_STRATEGIES
    unfreeze_depth: int = 2  # partial: last stages trained; gradual: stages trained at epoch 0
    gradual_every: int = 1  # gradual: epochs between unfreezing one more stage
    dropout: float = 0.0  # before each head
    cosine_scale: float = 16.0  # cosine family: logit scale of the cosine classifier
    layover_stage: int = -2  # layover family: which backbone stage feeds the side branch
    layover_hidden: int = 256  # layover family: width of the side MLP
    cnn_width: int = 32  # cnn family: channels of the first block (doubles per block)
    outlier_mode: str = "class"  # class: outliers are each head's novel class; oe: uniform target
    source_directions: int = 0  # frozen-feature directions that tell the image sources apart, projected out


@dataclass(frozen=True)
class Heads:
    """Head sizes for a hierarchy. With outlier_mode='class' each head has a trailing novel
    logit (index = number of seen classes); with 'oe' heads cover seen classes only."""

    n_super: int  # seen superclasses
    n_sub: int  # seen subclasses
    sub_to_super: tuple[int, ...]  # seen subclass -> seen superclass
    novel_logit: bool

    @property
    def super_outputs(self) -> int:
        return self.n_super + int(self.novel_logit)

    @property
    def sub_outputs(self) -> int:
        return self.n_sub + int(self.novel_logit)


@dataclass
class ModelOutput:
    super_logits: torch.Tensor  # [B, heads.super_outputs]
    sub_logits: torch.Tensor  # [B, heads.sub_outputs]
    super_features: torch.Tensor  # [B, D1] penultimate features feeding the superclass head
    sub_features: torch.Tensor  # [B, D2] same for the subclass head (same tensor if shared)


class HierModel(Protocol):
    heads: Heads

    def __call__(self, x: torch.Tensor) -> ModelOutput: ...

    def set_epoch(self, epoch: int) -> None:
        """Apply the fine-tuning schedule for this epoch (gradual unfreezing); idempotent."""

    def parameters(self, recurse: bool = True): ...


Builder = Callable[[ModelConfig, Heads], nn.Module]
_FAMILIES: dict[str, Builder] = {}


def register_family(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        if name in _FAMILIES:
            raise ValueError(f"family {name!r} registered twice")
        _FAMILIES[name] = builder
        return builder

    return add


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def create_model(config: ModelConfig, heads: Heads) -> nn.Module:
    if config.family not in _FAMILIES:
        raise UserError(f"unknown family {config.family!r}{did_you_mean(config.family, _FAMILIES, list_known=True)}")
    model = _FAMILIES[config.family](config, heads)
    if config.source_directions:
        if not hasattr(model, "add_source_projection"):
            raise UserError(f"source_directions: the {config.family} family has no frozen backbone features to "
                            f"project; set it to 0")
        model.add_source_projection(config.source_directions)
    return model
