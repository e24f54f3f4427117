"""One trial's settings as a typed, validated dataclass.

A trial's config arrives as a flat dict (the search space's fixed settings merged with what
Optuna sampled, or `--set` overrides); `TrialConfig.from_dict` is the edge where it is checked,
and everything past it works with typed fields. Flat, because Ray Tune, Optuna and `--set`
all address parameters by one name.
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, fields

from hiertune.data.augment import AugmentConfig
from hiertune.data.splits import SplitConfig
from hiertune.errors import UserError
from hiertune.faults import parse_plan
from hiertune.losses import LossConfig
from hiertune.models.registry import FINETUNE_STRATEGIES, OUTLIER_MODES, ModelConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
NOVELTY_SCORES = ("msp", "energy", "maxlogit", "mahalanobis", "knn")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrialConfig:
    # model
    family: str = "dualhead"
    backbone: str = "resnet18"
    pretrained: bool | str = False
    finetune: str = "full"
    unfreeze_depth: int = 2
    gradual_every: int = 1
    dropout: float = 0.0
    cosine_scale: float = 16.0
    layover_stage: int = -2
    layover_hidden: int = 256
    cnn_width: int = 32
    # loss and outliers
    outlier_mode: str = "class"
    kl_alpha: float = 0.1
    kl_temperature: float = 1.0
    oe_weight: float = 0.5
    label_smoothing: float = 0.0
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    epochs: int = 10
    warmup_epochs: int = 0
    batch_size: int = 64
    mixup_alpha: float = 0.0
    augment: bool = True
    # data: None means the embedded synthetic default
    data: str | None = None
    outliers: str | None = None
    image_size: int = 64
    val_fraction: float = 0.2
    pseudo_novel_fraction: float = 0.15
    outlier_val_fraction: float = 0.3
    outlier_count: int | None = None  # outlier training images; None: the whole pool
    outlier_fraction: float | None = None  # or as a fraction of the pool, so one range fits any data
    split_seed: int = 0
    # post-hoc settings; the grid sweeps them anyway, these are the single point a user asked for
    tau_super: float = 0.99
    tau_sub: float = 0.85
    novelty_score: str = "msp"
    # runtime
    seed: int = 0
    threads: int = 0  # torch threads; 0: the CPUs this trial owns
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # autocast on CUDA (bf16 where supported); ignored on CPU
    trial_number: int = 0  # the trial's number in its sweep (0-based, in sampling order); set by the sweep
    # Test-only: a fault plan that makes chosen trials fail (hiertune.faults, tests/faults).
    faults: str = ""

    def __post_init__(self) -> None:
        _choice("family", self.family, None)
        _choice("finetune", self.finetune, FINETUNE_STRATEGIES)
        _choice("outlier_mode", self.outlier_mode, OUTLIER_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("novelty_score", self.novelty_score, NOVELTY_SCORES)
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        for name in ("lr", "kl_temperature", "cosine_scale"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "image_size", "gradual_every", "cnn_width"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("weight_decay", "kl_alpha", "oe_weight", "mixup_alpha", "label_smoothing",
                     "dropout", "warmup_epochs", "unfreeze_depth", "threads", "trial_number"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("tau_super", "tau_sub", "dropout", "label_smoothing", "momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.outlier_count is not None and self.outlier_fraction is not None:
            raise UserError("set outlier_count or outlier_fraction, not both")
        if self.outlier_fraction is not None and not 0 <= self.outlier_fraction <= 1:
            raise UserError(f"outlier_fraction must be in [0, 1], got {self.outlier_fraction}")
        if self.warmup_epochs >= self.epochs:
            raise UserError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        self.split_config()  # validates the split fractions
        parse_plan(self.faults)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "TrialConfig":
        """Check names and types, then build; every problem is one UserError line."""
        known = {f.name: f for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        clean = {}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"{where}: unknown key {key!r}{hint}")
            clean[key] = coerce(hints[key], value, f"{where}: {key}")
        try:
            return cls(**clean)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def model_config(self) -> ModelConfig:
        names = {f.name for f in fields(ModelConfig)}
        return ModelConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def loss_config(self) -> LossConfig:
        return LossConfig(kl_alpha=self.kl_alpha if self.family == "dualhead" else 0.0,
                          kl_temperature=self.kl_temperature, oe_weight=self.oe_weight,
                          label_smoothing=self.label_smoothing)

    def split_config(self) -> SplitConfig:
        return SplitConfig(val_fraction=self.val_fraction, pseudo_novel_fraction=self.pseudo_novel_fraction,
                           outlier_val_fraction=self.outlier_val_fraction, outlier_count=self.outlier_count,
                           seed=self.split_seed)

    def augment_config(self) -> AugmentConfig:
        # Pretrained timm backbones expect ImageNet statistics; from scratch, [-1, 1] as seed 001.
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.pretrained else ((0.5,) * 3, (0.5,) * 3)
        return AugmentConfig(mean=mean, std=std) if self.augment else AugmentConfig.none(mean=mean, std=std)

    def torch_threads(self, cpus: float | None = None) -> int:
        if self.threads:
            return self.threads
        return max(1, int(cpus)) if cpus else max(1, len(os.sched_getaffinity(0)))


def _choice(name: str, value: str, allowed: tuple[str, ...] | None) -> None:
    if allowed is None:
        from hiertune.models.registry import list_families

        allowed = tuple(list_families())
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(allowed)}"
        raise UserError(f"unknown {name} {value!r} ({hint})")


def coerce(hint, value, where: str):
    """`value` as the annotated type, accepting what YAML and the command line produce
    (an int where a float is expected, say); anything else is a one-line UserError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise UserError(f"{where} must not be empty")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # YAML's .inf / .nan: no setting here means "unbounded"
                raise UserError(f"{where} must be a finite number, got {value!r}")
            return float(value)
        if option is str and isinstance(value, str):
            return value
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise UserError(f"{where} must be {names}, got {value!r}")
