"""One trial's settings as a typed, validated dataclass.

A trial's config arrives as a flat dict (the search space's fixed settings merged with what
Optuna sampled, or `--set` overrides); `TrialConfig.from_dict` is the edge where it is checked,
and everything past it works with typed fields. Flat, because Ray Tune, Optuna and `--set`
all address parameters by one name.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import asdict, dataclass, fields

from hiertune.data.augment import AugmentConfig
from hiertune.data.corrupt import ShiftConfig
from hiertune.data.splits import SplitConfig
from hiertune.errors import UserError, did_you_mean
from hiertune.models.backbone import backbone_input
from hiertune.models.registry import FINETUNE_STRATEGIES, OUTLIER_MODES, ModelConfig, list_families
from hiertune.novelty.scores import SCORES
from hiertune.training.faults import parse_plan
from hiertune.training.losses import LossConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
# Settings only some families read (the others read every setting but _TIMM's, which cnn ignores).
_ONLY = {"cnn_width": ("cnn",), "cosine_scale": ("cosine",), "layover_stage": ("layover",),
         "layover_hidden": ("layover",), "kl_alpha": ("dualhead",), "kl_temperature": ("dualhead",)}
_TIMM = ("backbone", "pretrained", "finetune", "unfreeze_depth", "gradual_every", "feature_views")
# Upper bounds on the settings that size tensors: past them a model, a batch or the decoded image
# cache needs more memory than any machine has, which the allocator would report as a traceback
# (a 100,000-pixel side is 120 GB per batch of 1,000). Far above anything that trains well.
SIZE_LIMITS = {"data_size": 1024, "image_size": 1024, "cnn_width": 1024, "layover_hidden": 65536,
               "batch_size": 65536, "feature_views": 64}


@dataclass(frozen=True)
class TrialConfig:
    # model
    family: str = "dualhead"
    # Each sub-config holds its own defaults (and validates itself); these name them.
    backbone: str = ModelConfig.backbone
    pretrained: bool | str = ModelConfig.pretrained
    finetune: str = ModelConfig.finetune
    unfreeze_depth: int = ModelConfig.unfreeze_depth
    gradual_every: int = ModelConfig.gradual_every
    dropout: float = ModelConfig.dropout
    cosine_scale: float = ModelConfig.cosine_scale
    layover_stage: int = ModelConfig.layover_stage
    layover_hidden: int = ModelConfig.layover_hidden
    cnn_width: int = ModelConfig.cnn_width
    # loss and outliers
    outlier_mode: str = ModelConfig.outlier_mode
    kl_alpha: float = LossConfig.kl_alpha
    kl_temperature: float = LossConfig.kl_temperature
    oe_weight: float = LossConfig.oe_weight
    label_smoothing: float = LossConfig.label_smoothing
    outlier_levels: str = LossConfig.outlier_levels  # heads that train on outliers: both | super | sub
    outlier_weight: float = LossConfig.outlier_weight  # outlier_mode class: an outlier row's weight
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
    # A frozen backbone (finetune linear; layover): train the heads on its features computed once.
    # 1: the clean (evaluation) view of each image; K > 1 adds K-1 augmented views, made once with
    # seeded augmentation, one drawn per image each epoch; 0: every step through the backbone.
    # Mixup then mixes features, not images.
    feature_views: int = 1
    # share of training images given one camera/pipeline corruption (data.corrupt) each epoch. With
    # cached features it draws among `corrupt_views` corrupted views per image, made once, seeded.
    corrupt_p: float = 0.0
    corrupt_severity: float = 0.5
    corrupt_views: int = 1
    # data: None means the embedded synthetic default
    data: str | None = None
    outliers: str | None = None
    data_size: int = 64  # side length images are decoded and cached at (the data's own size)
    image_size: int = 64  # the model's input side: batches are resized to it on the device
    val_fraction: float = SplitConfig.val_fraction
    pseudo_novel_fraction: float = SplitConfig.pseudo_novel_fraction
    outlier_val_fraction: float = SplitConfig.outlier_val_fraction
    outlier_count: int | None = None  # outlier training images; None: the whole pool
    outlier_fraction: float | None = None  # or as a fraction of the pool, so one range fits any data
    split_seed: int = SplitConfig.seed
    # validation's seen_shifted group: corruptions of the seen validation images, a labeled folder, both, none
    shifted: str = "corrupt"
    shifted_data: str | None = None
    # Real photos as a training source: this share of each subclass's --shifted-data images (a
    # seeded split by image) trains beside the labeled ones, the rest stay in seen_shifted. The
    # subclasses named in shifted_holdout (';'-separated: names hold commas) never train: a leave-species-out run.
    shifted_train_fraction: float = 0.0
    shifted_holdout: str = ""
    shift_severity: float = 0.5
    # post-hoc settings; the grid sweeps them anyway, these are the single point a user asked for
    tau_super: float = 0.99
    tau_sub: float = 0.85
    novelty_score: str = "msp"
    shifted_weight: float = 0.5  # share of seen_shifted in the `seen` objective
    scorer_images: int = 4096  # training images the feature scorers are fitted on each epoch; 0: all
    # runtime
    seed: int = 0
    threads: int = 0  # torch threads; 0: the CPUs this trial owns
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # autocast on CUDA (bf16 where supported); ignored on CPU
    trial_number: int = 0  # the trial's number in its sweep (0-based, in sampling order); set by the sweep
    # Test-only: a fault plan that makes chosen trials fail (hiertune.training.faults, tests/faults).
    faults: str = ""

    def __post_init__(self) -> None:
        _choice("family", self.family, None)
        _choice("finetune", self.finetune, FINETUNE_STRATEGIES)
        _choice("outlier_mode", self.outlier_mode, OUTLIER_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("novelty_score", self.novelty_score, SCORES)
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        for name in ("lr", "cosine_scale"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "data_size", "image_size", "gradual_every", "cnn_width"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, limit in SIZE_LIMITS.items():
            if getattr(self, name) > limit:
                raise UserError(f"{name} must be <= {limit:,}, got {getattr(self, name):,}")
        for name in ("weight_decay", "mixup_alpha", "dropout", "warmup_epochs", "unfreeze_depth", "threads",
                     "trial_number", "feature_views", "scorer_images"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("tau_super", "tau_sub", "dropout", "momentum", "corrupt_p", "corrupt_severity", "shifted_weight"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.outlier_count is not None and self.outlier_fraction is not None:
            raise UserError("set outlier_count or outlier_fraction, not both")
        if self.outlier_fraction is not None and not 0 <= self.outlier_fraction <= 1:
            raise UserError(f"outlier_fraction must be in [0, 1], got {self.outlier_fraction}")
        if self.corrupt_views < 1:
            raise UserError(f"corrupt_views must be >= 1, got {self.corrupt_views}")
        if self.feature_views > 1 and not self.augment:
            raise UserError(f"feature_views {self.feature_views} needs augment: true (augmented views of a "
                            f"non-augmented trial would all be the clean one)")
        if self.warmup_epochs >= self.epochs:
            raise UserError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        self.split_config()  # the sub-configs validate their own settings
        self.shift_config()
        self.loss_config()
        if self.outlier_weight != LossConfig.outlier_weight and self.outlier_mode != "class":
            raise UserError(f"outlier_weight weighs outlier rows of outlier_mode class; with {self.outlier_mode!r} "
                            "set oe_weight")
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
                raise UserError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")
            clean[key] = coerce(hints[key], value, f"{where}: {key}")
        try:
            return cls(**clean)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def used_settings(self) -> dict:
        """The settings this trial's family reads: a cnn has no backbone, only dualhead has a KL term."""
        return {k: v for k, v in asdict(self).items()
                if self.family in _ONLY.get(k, (self.family,)) and not (self.family == "cnn" and k in _TIMM)}

    def model_config(self) -> ModelConfig:
        names = {f.name for f in fields(ModelConfig)}
        return ModelConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def loss_config(self) -> LossConfig:
        return LossConfig(kl_alpha=self.kl_alpha if self.family == "dualhead" else 0.0,
                          kl_temperature=self.kl_temperature, oe_weight=self.oe_weight,
                          label_smoothing=self.label_smoothing, outlier_levels=self.outlier_levels,
                          outlier_weight=self.outlier_weight)

    def split_config(self) -> SplitConfig:
        return SplitConfig(val_fraction=self.val_fraction, pseudo_novel_fraction=self.pseudo_novel_fraction,
                           outlier_val_fraction=self.outlier_val_fraction, outlier_count=self.outlier_count,
                           seed=self.split_seed)

    def cached_views(self) -> int:
        """Views of a frozen backbone's features to compute once and cache; 0: every step through
        the backbone."""
        return self.feature_views

    def cached_corruptions(self) -> int:
        """Corrupted views per training image to cache beside them (0 without corrupt_p)."""
        return self.corrupt_views if self.corrupt_p > 0 and self.feature_views > 0 else 0

    def shift_config(self) -> ShiftConfig:
        return ShiftConfig(source=self.shifted, data=self.shifted_data, severity=self.shift_severity,
                           seed=self.split_seed, train_fraction=self.shifted_train_fraction,
                           holdout=tuple(n.strip() for n in self.shifted_holdout.split(";") if n.strip()))

    def augment_config(self) -> AugmentConfig:
        # A timm backbone gets the statistics and resampling it was trained with, pretrained or
        # not (the weights a from-scratch run could later load expect them); the cnn family
        # keeps [-1, 1] as seed 001.
        own = dict(mean=(0.5,) * 3, std=(0.5,) * 3) if self.family == "cnn" else backbone_input(self.backbone)
        pipeline = {**own, "size": self.image_size}
        return AugmentConfig(**pipeline) if self.augment else AugmentConfig.none(**pipeline)

    def torch_threads(self, cpus: float | None = None) -> int:
        if self.threads:
            return self.threads
        return max(1, int(cpus)) if cpus else max(1, len(os.sched_getaffinity(0)))


def _choice(name: str, value: str, allowed: tuple[str, ...] | None) -> None:
    if allowed is None:
        allowed = tuple(list_families())
    if value not in allowed:
        raise UserError(f"unknown {name} {value!r}{did_you_mean(value, allowed, list_known=True)}")


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
