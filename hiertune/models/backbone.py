"""timm backbones for the timm families: creation (random, timm's hub, or a local weights file)
and the fine-tuning strategies that decide which backbone parameters train.

Stages come from timm's `feature_info`, the list of modules that end each feature (reduction)
stage, which resnet, efficientnet, convnext, mobilenet, regnet, densenet, swin and vit all
provide; the layover family indexes the same list, so "stage k" means one thing everywhere.
"""

from __future__ import annotations

import logging
import pickle
from itertools import chain
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from hiertune.data.augment import INTERPOLATIONS
from hiertune.errors import UserError, did_you_mean
from hiertune.models.projection import SourceProjection
from hiertune.models.registry import Heads, ModelConfig, ModelOutput
from hiertune.models.weights import PACKAGES, install_hint, package_for, package_weights

log = logging.getLogger("hiertune")

NORM_LAYERS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)  # timm's LayerNorm2d is an nn.LayerNorm


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        raise UserError(f"unknown backbone {name!r}{did_you_mean(name, timm.list_models())}")


def backbone_input(name: str) -> dict:
    """The normalisation and resampling `name` was trained with, from its timm pretrained_cfg:
    training, evaluation, export and predict all take them from here."""
    check_backbone(name)
    cfg = timm.models.get_pretrained_cfg(name)
    data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
    interpolation = data["interpolation"] if data["interpolation"] in INTERPOLATIONS else "bilinear"
    return {"mean": tuple(data["mean"]), "std": tuple(data["std"]), "interpolation": interpolation}


def create_backbone(config: ModelConfig) -> nn.Module:
    """A timm model without classifier: `backbone(x)` is the pooled pre-logit feature."""
    name = config.backbone
    check_backbone(name)
    if config.pretrained is False:
        # Training says "trains from scratch" (hiertune.training.loop.build); an exported model
        # built this way is about to load its own weights.
        return timm.create_model(name, pretrained=False, num_classes=0)
    if config.pretrained is True:
        # An installed weights package works offline; timm's hub is the fallback.
        if (converted := package_weights(name)) is not None:
            return _from_file(name, converted)
        try:
            return timm.create_model(name, pretrained=True, num_classes=0)
        except (OSError, RuntimeError) as exc:  # hub/HTTP errors are OSErrors; no weights: RuntimeError
            package = package_for(name)
            offline = (f"install its weights: {install_hint(package)}" if package else
                       f"pass the path of a local weights file as pretrained, or use a backbone whose "
                       f"weights install from the registry ({', '.join(PACKAGES)})")
            raise UserError(f"pretrained=True: cannot get timm's weights for {name!r} "
                            f"({type(exc).__name__}: {_one_line(exc)}); offline, {offline}") from exc
    return _from_file(name, Path(config.pretrained))


_ANNOUNCED: set[tuple[str, Path]] = set()


def _from_file(name: str, path: Path) -> nn.Module:
    # timm honours pretrained_cfg['file'] ahead of its hub and URL sources, reading it with
    # timm.models.load_state_dict (safetensors by extension, else torch.load(weights_only=True)),
    # then applies any checkpoint filter the model defines and drops the classifier keys.
    # Dropping them makes timm load with strict=False, so a file with foreign key names would
    # silently leave the backbone random, or half of it another model's: check_weights_file first.
    check_weights_file(name, path)
    try:
        backbone = timm.create_model(name, pretrained=True, num_classes=0,
                                     pretrained_cfg_overlay=dict(file=str(path)))
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as exc:
        raise UserError(f"pretrained weights file {path} does not fit backbone {name!r}: "
                        f"{type(exc).__name__}: {_one_line(exc)}") from exc
    if (name, path) not in _ANNOUNCED:  # the cost probe and the feature step build it again in one process
        _ANNOUNCED.add((name, path))
        log.info("backbone %s: weights from %s", name, path)
    return backbone


def check_weights_file(name: str, path: Path) -> None:
    """`path` holds exactly backbone `name`'s weights, or a one-line UserError: a search space
    checks its `pretrained:` file when it is read, before any data loads or trial starts."""
    if path.is_dir():
        raise UserError(f"pretrained weights file {path} is a folder, not a weights file")
    if path.exists() and not path.is_file():
        raise UserError(f"pretrained weights file {path} is not a regular file")
    if not path.is_file():
        raise UserError(f"pretrained weights file not found: {path}")
    try:
        problem = _misfit(timm.create_model(name, pretrained=False, num_classes=0),
                          timm.models.load_state_dict(str(path)))
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as exc:
        raise UserError(f"pretrained weights file {path} does not fit backbone {name!r}: "
                        f"{type(exc).__name__}: {_one_line(exc)}") from exc
    if problem:
        raise UserError(f"pretrained weights file {path} does not fit backbone {name!r}: {problem}")


def _misfit(backbone: nn.Module, found: dict) -> str | None:
    """What keeps `found` (the file's tensors) from being exactly this backbone's weights: every
    tensor present (BatchNorm's step counters aside: only momentum=None reads them), none left
    over but the classifier timm drops, the same shapes, and only numbers. Another model's weights
    (resnet34's for resnet18) share many names: the tensors left over give them away."""
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    if missing:
        return f"{len(missing)} of its tensors are missing from the file (first: {missing[0]})"
    classifier = backbone.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    extra = [k for k in found if k not in expected and not k.startswith(heads)]
    if extra:
        return f"{len(extra)} tensors of the file have no place in it (first: {extra[0]}); another model's weights?"
    for key, tensor in found.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            return f"{key} has shape {list(tensor.shape)}, the backbone needs {list(expected[key].shape)}"
        if key in expected and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"tensor {key!r} holds NaN or infinite values"
    return None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    # torch puts the useful part of a load error ("size mismatch for ...") on its later lines.
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def feature_dim(backbone: nn.Module) -> int:
    # Where a head has a hidden layer (mobilenetv3) the pooled feature is wider than num_features.
    return getattr(backbone, "head_hidden_size", None) or backbone.num_features


def linear_head(dim: int, outputs: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, outputs))


def backbone_stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """The modules that hold parameters or buffers, grouped by feature_info stage.

    A module inside a stage's module belongs to it. One outside every stage module (resnet's
    conv1/bn1 before `act1`, efficientnet's blocks.3 between two listed blocks) joins the next
    stage in registration order, which in timm is forward order; one after the last stage
    (final norms, efficientnet's conv_head) joins the last stage.
    """
    names = [info["module"] for info in getattr(backbone, "feature_info", None) or []]
    modules = dict(backbone.named_modules())
    if not names or any(n not in modules for n in names):
        raise UserError(f"backbone {type(backbone).__name__} does not describe its stages (timm "
                        f"feature_info); use finetune full, linear or bn, or another backbone")
    position = {name: i for i, name in enumerate(modules)}
    starts = [position[n] for n in names]
    stages: list[list[nn.Module]] = [[] for _ in names]
    for name, module in modules.items():
        if not _holds_state(module):
            continue
        inside = [k for k, n in enumerate(names) if name == n or name.startswith(n + ".")]
        after = [k for k, start in enumerate(starts) if start > position[name]]
        stages[(inside or after or [-1])[0]].append(module)
    return stages


def _holds_state(module: nn.Module) -> bool:
    return next(chain(module.parameters(recurse=False), module.buffers(recurse=False)), None) is not None


class FinetunedModel(nn.Module):
    """Base of the timm families: owns `backbones` and applies `config.finetune` to them.

    Heads and other modules a subclass adds always train. Hand the optimizer every parameter:
    frozen ones get no gradient, and torch optimizers skip those, so gradual unfreezing only
    has to flip requires_grad.
    """

    uses_backbone = True  # the family traits the registry reads (hiertune.models.registry)
    always_frozen = False
    kl_loss = False

    @classmethod
    def input_pipeline(cls, config: ModelConfig) -> dict:
        return backbone_input(config.backbone)

    def __init__(self, config: ModelConfig, heads: Heads, n_backbones: int):
        super().__init__()
        self.heads = heads
        self.frozen = config.backbone_frozen
        self.finetune = config.finetune
        self.unfreeze_depth = config.unfreeze_depth
        self.gradual_every = config.gradual_every
        self.backbones = nn.ModuleList(create_backbone(config) for _ in range(n_backbones))
        staged = self.finetune in ("partial", "gradual")
        self._stages = [backbone_stages(b) if staged else [] for b in self.backbones]
        n = len(self._stages[0])
        if staged and self.unfreeze_depth > n:
            raise UserError(f"unfreeze_depth must be in 0..{n} ({config.backbone} has {n} stages), "
                            f"got {self.unfreeze_depth}")
        self._kept_in_eval: list[nn.Module] = []
        self.set_epoch(0)

    def trained_stages(self, epoch: int) -> int:
        """How many of the last backbone stages train at this epoch (partial and gradual)."""
        grown = epoch // self.gradual_every if self.finetune == "gradual" else 0
        return min(len(self._stages[0]), self.unfreeze_depth + grown)

    def set_epoch(self, epoch: int) -> None:
        self._kept_in_eval = []
        for backbone, stages in zip(self.backbones, self._stages):
            trainable = self._trainable(backbone, stages, epoch)
            for module in backbone.modules():
                for p in module.parameters(recurse=False):
                    p.requires_grad_(module in trainable)
            if trainable:
                self._kept_in_eval += [m for m in backbone.modules()
                                       if isinstance(m, _BatchNorm) and m not in trainable]
            else:  # a fixed feature extractor: its dropout and drop-path would only add noise
                self._kept_in_eval.append(backbone)
        self.train(self.training)

    def _trainable(self, backbone: nn.Module, stages: list[list[nn.Module]], epoch: int) -> set[nn.Module]:
        if self.finetune == "full":
            return set(backbone.modules())
        if self.finetune == "linear":
            return set()
        if self.finetune == "bn":
            return {m for m in backbone.modules() if isinstance(m, NORM_LAYERS)}
        return {m for stage in stages[len(stages) - self.trained_stages(epoch):] for m in stage}

    @property
    def backbone_frozen(self) -> bool:
        """No backbone parameter trains in any epoch (ModelConfig.backbone_frozen decides):
        `frozen_features` are then fixed per image, computed once (hiertune.training.features)
        and the heads train on them."""
        return self.frozen

    def frozen_spec(self) -> dict:
        """What `frozen_features` computes, beyond the weights: part of the feature cache key."""
        return {"family": type(self).__name__}

    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbones' outputs the trainable part reads, per image."""
        raise NotImplementedError

    def frozen_widths(self) -> dict[str, int]:
        """The width of each of `frozen_features`' outputs (what a source projection covers)."""
        raise NotImplementedError

    def from_features(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        """The trainable part: heads (and side branches) on `frozen_features`' outputs."""
        raise NotImplementedError

    def add_source_projection(self, directions: int) -> None:
        """Project `directions` source directions out of the frozen features before the heads
        (hiertune.models.projection); the bases are fitted by the training loop. ModelConfig
        has checked that the backbone is frozen."""
        self.source_projection = SourceProjection(self.frozen_widths(), directions)

    def from_frozen(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        """The heads on frozen features, through the source projection when there is one: what
        training on cached features and a forward pass from images both run."""
        projection = getattr(self, "source_projection", None)
        return self.from_features(projection(features) if projection is not None else features)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        # One code path for both: training on cached features runs exactly this head code.
        return self.from_frozen(self.frozen_features(x))

    def train(self, mode: bool = True) -> FinetunedModel:
        # A frozen BatchNorm keeps its running statistics too: updating them from our batches
        # would shift the features under layers that cannot adapt, so it stays in eval mode.
        super().train(mode)
        for module in self._kept_in_eval:
            module.eval()
        return self
