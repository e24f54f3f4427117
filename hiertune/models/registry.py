"""Architecture families by name, in the spirit of timm's register_model/create_model.

A family is a module class decorated with `@register_family("name")`. Like a timm model it says
what it is on the class itself, and the registry reads it once, into a `FamilySpec`:

    Settings        a frozen dataclass of the family's own settings (fields named as the trial
                    setting they come from, each with its default), validated in __post_init__;
                    TrialConfig gains every family's fields, and ModelConfig carries the one
                    family's instance
    uses_backbone   a timm backbone: backbone, pretrained, finetune... apply (False: cnn)
    always_frozen   the backbone never trains, whatever finetune says (layover)
    kl_loss         the KL term that ties the subclass head to the superclass head applies
    input_pipeline  (classmethod) the normalisation and resampling its input gets

`create_model` looks the name up and builds a `HierModel` for a class hierarchy. Every family
returns the same `ModelOutput`, so the training loop, the losses and the novelty scores never
branch on family; code outside hiertune.models asks a family's traits, never its name. This module
imports no family: the package's `__init__` imports them, and their decorators fill the registry.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from hiertune.errors import UserError, did_you_mean

FINETUNE_STRATEGIES = ("linear", "partial", "full", "gradual", "bn")
OUTLIER_MODES = ("class", "oe")
DEFAULT_FAMILY = "dualhead"


@dataclass(frozen=True)
class NoSettings:
    """The settings of a family that has none of its own."""


@dataclass(frozen=True)
class ModelConfig:
    """What builds a model: the settings every family reads, and the family's own (`settings`,
    an instance of its Settings class). Validated here, once; only what needs the built backbone
    (its number of stages) is checked when the model is made."""

    family: str
    backbone: str = "resnet18"  # a timm model name; families without a backbone ignore it
    pretrained: bool | str = False  # False | True (timm's hub) | path to a local weights file
    finetune: str = "full"  # one of FINETUNE_STRATEGIES
    unfreeze_depth: int = 2  # partial: last stages trained; gradual: stages trained at epoch 0
    gradual_every: int = 1  # gradual: epochs between unfreezing one more stage
    dropout: float = 0.0  # before each head
    outlier_mode: str = "class"  # class: outliers are each head's novel class; oe: uniform target
    source_directions: int = 0  # frozen-feature directions that tell the image sources apart, projected out
    settings: Any = None  # the family's Settings instance; None: its defaults

    def __post_init__(self) -> None:
        spec = family(self.family)
        if self.settings is None:
            object.__setattr__(self, "settings", spec.settings())
        elif not isinstance(self.settings, spec.settings):
            raise TypeError(f"{self.family} settings must be a {spec.settings.__name__}, got {type(self.settings).__name__}")
        for name, allowed in (("finetune", FINETUNE_STRATEGIES), ("outlier_mode", OUTLIER_MODES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"unknown {name} {getattr(self, name)!r}"
                                f"{did_you_mean(getattr(self, name), allowed, list_known=True)}")
        if not 0 <= self.dropout <= 1:
            raise UserError(f"dropout must be in [0, 1], got {self.dropout}")
        if self.gradual_every < 1:
            raise UserError(f"gradual_every must be >= 1, got {self.gradual_every}")
        if self.unfreeze_depth < 0:
            raise UserError(f"unfreeze_depth must be >= 0, got {self.unfreeze_depth}")
        if self.source_directions < 0:
            raise UserError(f"source_directions must be >= 0, got {self.source_directions}")
        if self.source_directions and not self.backbone_frozen:
            why = (f"finetune {self.finetune} trains the backbone" if self.spec.uses_backbone else
                   f"the {self.family} family has no timm backbone")
            raise UserError(f"source_directions {self.source_directions} needs a frozen backbone (finetune linear, "
                            f"or partial with unfreeze_depth 0) to fit its directions on: {why}")

    @classmethod
    def of(cls, family_name: str, **values) -> ModelConfig:
        """A config from flat values: the family's own settings among them go to its Settings."""
        own = {f.name for f in fields(family(family_name).settings)}
        settings = family(family_name).settings(**{k: v for k, v in values.items() if k in own})
        return cls(family_name, **{k: v for k, v in values.items() if k not in own}, settings=settings)

    @property
    def spec(self) -> FamilySpec:
        return family(self.family)

    @property
    def backbone_frozen(self) -> bool:
        """No backbone parameter trains in any epoch, so its features can be computed once
        (hiertune.training.features): the one answer the models, the sweep's shared feature
        precompute and its cost estimate all read."""
        spec = self.spec
        if not spec.uses_backbone:
            return False
        return spec.always_frozen or self.finetune == "linear" or (self.finetune == "partial" and self.unfreeze_depth == 0)


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


@dataclass(frozen=True)
class FamilySpec:
    """What a family declared on its class (see the module docstring)."""

    name: str
    builder: Builder
    settings: type
    uses_backbone: bool
    always_frozen: bool
    kl_loss: bool
    input_pipeline: Callable[[ModelConfig], dict]  # mean, std and interpolation for AugmentConfig


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in _FAMILIES:
            raise ValueError(f"family {name!r} registered twice")
        settings = getattr(cls, "Settings", NoSettings)
        if not (is_dataclass(settings) and settings.__dataclass_params__.frozen):
            raise TypeError(f"family {name!r}: Settings must be a frozen dataclass")
        missing = [f.name for f in fields(settings) if f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise TypeError(f"family {name!r}: setting {missing[0]!r} needs a default")
        taken = {f.name: other.name for other in _FAMILIES.values() for f in fields(other.settings)
                 if other.settings is not settings}
        clash = [f.name for f in fields(settings) if f.name in taken]
        if clash:
            raise TypeError(f"family {name!r}: setting {clash[0]!r} is already family {taken[clash[0]]!r}'s")
        if not callable(getattr(cls, "input_pipeline", None)):
            raise TypeError(f"family {name!r}: needs an input_pipeline(config) classmethod")
        _FAMILIES[name] = FamilySpec(name, cls, settings, uses_backbone=getattr(cls, "uses_backbone", True),
                                     always_frozen=getattr(cls, "always_frozen", False),
                                     kl_loss=getattr(cls, "kl_loss", False), input_pipeline=cls.input_pipeline)
        return cls

    return add


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def family(name: str) -> FamilySpec:
    if name not in _FAMILIES:
        raise UserError(f"unknown family {name!r}{did_you_mean(name, _FAMILIES, list_known=True)}")
    return _FAMILIES[name]


def family_settings() -> tuple[type, ...]:
    """Every registered family's Settings class, once each, in registration order."""
    return tuple(dict.fromkeys(spec.settings for spec in _FAMILIES.values() if spec.settings is not NoSettings))


def create_model(config: ModelConfig, heads: Heads) -> nn.Module:
    model = family(config.family).builder(config, heads)
    if config.source_directions:  # a frozen backbone's (ModelConfig checked it)
        model.add_source_projection(config.source_directions)
    return model
