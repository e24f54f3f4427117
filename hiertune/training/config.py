"""One trial's settings as a typed, validated dataclass.

A trial's config arrives as a flat dict (the search space's fixed settings merged with what
Optuna sampled, or `--set` overrides); `TrialConfig.from_dict` is the edge where it is checked,
and everything past it works with typed fields. Flat, because Ray Tune, Optuna and `--set`
all address parameters by one name. The families' own settings (cnn_width, layover_stage...) are
fields too: TrialConfig inherits every registered family's Settings dataclass, so a family that
brings a setting declares it in its own module (hiertune.models.registry).
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
from hiertune.models.registry import DEFAULT_FAMILY, ModelConfig, family, family_settings
from hiertune.novelty.registry import list_scores
from hiertune.training.faults import parse_plan
from hiertune.training.losses import LossConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
# Settings that only families with a trait read: a timm backbone's (uses_backbone), the KL term's (kl_loss).
_TIMM = ("backbone", "pretrained", "finetune", "unfreeze_depth", "gradual_every", "feature_views", "source_directions")
_KL = ("kl_alpha", "kl_temperature")
# Upper bounds on the settings that size tensors: past them a model, a batch or the decoded image
# cache needs more memory than any machine has, which the allocator would report as a traceback
# (a 100,000-pixel side is 120 GB per batch of 1,000). Far above anything that trains well.
# A family's own such settings bound themselves (its Settings).
SIZE_LIMITS = {"data_size": 1024, "image_size": 1024, "batch_size": 65536, "feature_views": 64,
               "source_directions": 1024}
_MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "settings")


@dataclass(frozen=True)
class TrialConfig(*family_settings()):
    # model
    family: str = DEFAULT_FAMILY
    # Each sub-config holds its own defaults (and validates itself); these name them.
    backbone: str = ModelConfig.backbone
    pretrained: bool | str = ModelConfig.pretrained
    finetune: str = ModelConfig.finetune
    unfreeze_depth: int = ModelConfig.unfreeze_depth
    gradual_every: int = ModelConfig.gradual_every
    dropout: float = ModelConfig.dropout
    # loss and outliers
    outlier_mode: str = ModelConfig.outlier_mode
    kl_alpha: float = LossConfig.kl_alpha
    kl_temperature: float = LossConfig.kl_temperature
    oe_weight: float = LossConfig.oe_weight
    label_smoothing: float = LossConfig.label_smoothing
    outlier_levels: str = LossConfig.outlier_levels  # heads that train on outliers: both | super | sub
    outlier_weight: float = LossConfig.outlier_weight  # outlier_mode class: an outlier row's weight
    # Frozen backbones: this many directions that tell generated training images from real ones
    # (outliers, training photos) are projected out of the features before the heads; 0: none.
    source_directions: int = ModelConfig.source_directions
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
    # post-hoc settings; the grid sweeps them anyway, these are the single point a user asked for.
    # τ: the share of a level's seen validation images called novel, whatever the score (hiertune.novelty.posthoc)
    tau_super: float = 0.05
    tau_sub: float = 0.1
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
        self.model_config()  # the family and the model's settings validate themselves
        for settings in family_settings():  # and every family's own, though only one family reads them
            settings(**{f.name: getattr(self, f.name) for f in fields(settings)})
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("novelty_score", self.novelty_score, list_scores())
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        for name in ("epochs", "batch_size", "data_size", "image_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, limit in SIZE_LIMITS.items():
            if getattr(self, name) > limit:
                raise UserError(f"{name} must be <= {limit:,}, got {getattr(self, name):,}")
        for name in ("weight_decay", "mixup_alpha", "warmup_epochs", "threads", "trial_number", "feature_views",
                     "scorer_images"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("tau_super", "tau_sub", "momentum", "corrupt_p", "corrupt_severity", "shifted_weight"):
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
        """The settings this trial's family reads: its own, not other families'; a backbone's only
        with one, the KL term's only where it applies (the family's traits say)."""
        spec = family(self.family)
        others = {f.name for s in family_settings() if s is not spec.settings for f in fields(s)}
        skip = others | set(() if spec.uses_backbone else _TIMM) | set(() if spec.kl_loss else _KL)
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def model_config(self) -> ModelConfig:
        own = fields(family(self.family).settings)
        return ModelConfig.of(self.family, **{name: getattr(self, name) for name in _MODEL_FIELDS if name != "family"},
                              **{f.name: getattr(self, f.name) for f in own})

    def loss_config(self) -> LossConfig:
        return LossConfig(kl_alpha=self.kl_alpha if family(self.family).kl_loss else 0.0,
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
        # The family's: a timm backbone gets the statistics and resampling it was trained with,
        # pretrained or not (the weights a from-scratch run could later load expect them).
        pipeline = {**family(self.family).input_pipeline(self.model_config()), "size": self.image_size}
        return AugmentConfig(**pipeline) if self.augment else AugmentConfig.none(**pipeline)

    def torch_threads(self, cpus: float | None = None) -> int:
        if self.threads:
            return self.threads
        return max(1, int(cpus)) if cpus else max(1, len(os.sched_getaffinity(0)))


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
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
