"""Whole-batch augmentation on the training device.

The dataset stays decoded as one uint8 [N, H, W, 3] tensor; the trainer indexes a batch, moves it
to the device and calls a `BatchAugment` on it. Every random parameter is drawn per sample in one
tensor, so a batch costs a fixed handful of kernels whatever its size, and there is no per-sample
Python loop to starve a GPU.

Reproducibility: all draws come from the `generator` passed to `BatchAugment.__call__`, which must
live on the batch's device (torch refuses a CPU generator for CUDA draws). With `generator=None`
the device's global RNG is used.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hiertune.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS = ("bilinear", "bicubic")

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses them, so the jitter below
# matches ColorJitter numerically.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


# Pixels lie in [0, 1]: a smaller std blows them up past half precision (an exported model with
# std 1e-300 scored every image NaN, so predict called every image novel).
MIN_STD = 1e-3


def _number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"augment.{field} must be a finite number, got {value!r}")
    return float(value)


def _triple(field: str, value: object) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise UserError(f"augment.{field} must be 3 numbers (one per RGB channel), got {value!r}")
    return tuple(_number(f"{field}[{i}]", v) for i, v in enumerate(value))


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample random augmentation; magnitudes of 0 switch a part off."""

    hflip: float = 0.5  # probability per sample
    rotation: float = 10.0  # max degrees, uniform in [-rotation, rotation]
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor, uniform in [low, high]; >1 zooms in
    translate: float = 0.1  # max shift per axis, as a fraction of the image size
    brightness: float = 0.2  # ColorJitter semantics: factor uniform in [max(0, 1-b), 1+b]
    contrast: float = 0.2
    saturation: float = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN  # ImageNet statistics, for timm backbones
    std: tuple[float, float, float] = IMAGENET_STD
    # The model's input: batches are resized on the device to size x size (0: kept as stored),
    # so the uint8 cache stays at the data's own size whatever the input size.
    size: int = 0
    interpolation: str = "bilinear"  # bilinear | bicubic, as the backbone was trained

    def __post_init__(self) -> None:
        # Values arrive from YAML and search spaces as ints, lists or numpy scalars; coerce so the
        # frozen config is hashable and compares equal however it was spelled.
        set_ = object.__setattr__
        hflip = _number("hflip", self.hflip)
        if not 0.0 <= hflip <= 1.0:
            raise UserError(f"augment.hflip is a probability and must be in [0, 1], got {hflip}")
        set_(self, "hflip", hflip)
        for field in ("rotation", "brightness", "contrast", "saturation"):
            value = _number(field, getattr(self, field))
            if value < 0:
                raise UserError(f"augment.{field} must be >= 0, got {value}")
            set_(self, field, value)
        translate = _number("translate", self.translate)
        if not 0.0 <= translate <= 1.0:
            raise UserError(
                f"augment.translate is a fraction of the image size and must be in [0, 1], got {translate}"
            )
        set_(self, "translate", translate)
        scale = self.scale
        if isinstance(scale, (str, bytes)) or not hasattr(scale, "__len__") or len(scale) != 2:
            raise UserError(f"augment.scale must be [low, high], got {scale!r}")
        low, high = _number("scale[0]", scale[0]), _number("scale[1]", scale[1])
        if not 0.0 < low <= high:
            raise UserError(f"augment.scale must satisfy 0 < low <= high, got [{low}, {high}]")
        set_(self, "scale", (low, high))
        set_(self, "mean", _triple("mean", self.mean))
        std = _triple("std", self.std)
        if min(std) < MIN_STD:
            raise UserError(f"augment.std must be >= {MIN_STD:g} for every channel, got {list(std)}")
        set_(self, "std", std)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise UserError(f"augment.size must be an integer >= 0, got {self.size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"augment.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                            f"got {self.interpolation!r}")

    @classmethod
    def none(
        cls,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        size: int = 0,
        interpolation: str = "bilinear",
    ) -> AugmentConfig:
        """No augmentation, only the input pipeline (resize, normalisation): what evaluation uses."""
        return cls(
            hflip=0.0, rotation=0.0, scale=(1.0, 1.0), translate=0.0,
            brightness=0.0, contrast=0.0, saturation=0.0, mean=mean, std=std, size=size,
            interpolation=interpolation,
        )

    def pipeline(self) -> dict:
        """What evaluation and prediction apply, as `none(**pipeline)` takes it (JSON-ready)."""
        return {"mean": list(self.mean), "std": list(self.std), "size": self.size, "interpolation": self.interpolation}

    @property
    def geometric(self) -> bool:
        return self.hflip > 0 or self.rotation > 0 or self.scale != (1.0, 1.0) or self.translate > 0

    @property
    def colour(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.saturation > 0


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(dim=1)
    gray = r * _GRAY_WEIGHTS[0]
    gray.add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2])
    return gray.unsqueeze(1)


def _blend_(img: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend, factor*img + (1-factor)*other clamped after every step, as one in-place
    # lerp: on CPU every extra full-batch pass or allocation shows in the throughput.
    return img.lerp_(other, 1.0 - factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_colour_(
    img: torch.Tensor,
    brightness: torch.Tensor | None,
    contrast: torch.Tensor | None,
    saturation: torch.Tensor | None,
) -> torch.Tensor:
    """ColorJitter's brightness, contrast and saturation with explicit per-sample factors.

    Works in place on `img`, [B, 3, H, W] float in [0, 1], and returns it; each factor is a [B]
    tensor, or None to skip that step. Same formulas as torchvision.transforms.functional.adjust_*,
    applied in a fixed order (ColorJitter shuffles the order per call; for these three mild jitters
    the order barely changes the distribution, and a per-sample order would mean masking every step).
    """
    if brightness is not None:
        img.mul_(brightness.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if contrast is not None:
        # The grayscale mean is linear, so take it from the channel means: no grayscale image.
        weights = img.new_tensor(_GRAY_WEIGHTS)
        mean = (img.mean(dim=(2, 3)) @ weights).view(-1, 1, 1, 1)
        _blend_(img, mean, contrast)
    if saturation is not None:
        _blend_(img, _grayscale(img), saturation)
    return img


def _jitter_factors(u: torch.Tensor, magnitude: float) -> torch.Tensor | None:
    if magnitude == 0:
        return None
    low = max(0.0, 1.0 - magnitude)
    return low + (1.0 + magnitude - low) * u


class BatchAugment:
    """uint8 [B, H, W, 3] on `device` -> normalised float32 [B, 3, H, W], augmented when training."""

    def __init__(self, config: AugmentConfig, device: torch.device | str, channels_last: bool = False):
        self.config = config
        self.device = torch.device(device)
        self.channels_last = channels_last
        self._mean = torch.tensor(config.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def __call__(
        self, batch_u8: torch.Tensor, generator: torch.Generator | None = None, train: bool = True
    ) -> torch.Tensor:
        if batch_u8.dtype != torch.uint8 or batch_u8.dim() != 4 or batch_u8.shape[-1] != 3:
            raise ValueError(f"expected a uint8 [B, H, W, 3] batch, got {batch_u8.dtype} {list(batch_u8.shape)}")
        # Transpose while still uint8 (a quarter of the float bytes) so every later op runs on
        # plain NCHW: on CPU, per-channel broadcasting over the channels_last view that a bare
        # permute gives is about 10x slower, and grid_sample returns NCHW anyway.
        x = batch_u8.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        cfg = self.config
        if train and (cfg.geometric or cfg.colour):
            # One draw for every parameter of every sample; each column has a fixed meaning, so
            # switching one augmentation off does not reshuffle the others' randomness.
            u = torch.rand(x.shape[0], 8, generator=generator, device=x.device)
            if cfg.geometric:
                x = self._geometry(x, u[:, :5])
            if cfg.colour:
                adjust_colour_(
                    x,
                    _jitter_factors(u[:, 5], cfg.brightness),
                    _jitter_factors(u[:, 6], cfg.contrast),
                    _jitter_factors(u[:, 7], cfg.saturation),
                )
        if cfg.size and x.shape[-2:] != (cfg.size, cfg.size):
            # After the geometry and the colour jitter: both run on the stored pixels, a
            # quarter of the work at 2x upsampling. Bicubic overshoots [0, 1] a little.
            x = F.interpolate(x, size=(cfg.size, cfg.size), mode=cfg.interpolation, align_corners=False,
                              antialias=cfg.size < max(x.shape[-2:])).clamp_(0.0, 1.0)
        x = x.sub_(self._mean).div_(self._std)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _geometry(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        batch, _, height, width = x.shape
        flip = torch.where(u[:, 0] < cfg.hflip, -1.0, 1.0)
        angle = (2 * u[:, 1] - 1) * math.radians(cfg.rotation)
        zoom = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 2]
        # Normalised coordinates span 2 units per axis, so a shift of f * size is 2f.
        shift_x = (2 * u[:, 3] - 1) * (2 * cfg.translate)
        shift_y = (2 * u[:, 4] - 1) * (2 * cfg.translate)
        cos, sin = angle.cos(), angle.sin()
        # affine_grid wants the output->input map: input = flip . rotate^-1 . (output - shift) / zoom.
        # The rotation is conjugated by the aspect ratio so it stays a true rotation in pixel space
        # on non-square images (normalised x and y have different pixel lengths there).
        a = flip * cos / zoom
        b = flip * sin * (height / width) / zoom
        c = -sin * (width / height) / zoom
        d = cos / zoom
        theta = torch.stack(
            [a, b, -(a * shift_x + b * shift_y), c, d, -(c * shift_x + d * shift_y)], dim=1
        ).view(batch, 2, 3)
        # align_corners=False treats pixels as areas with -1/+1 at the outer edges, which makes a
        # mirror (x -> -x) land exactly on pixel centres, so a pure flip is exact.
        grid = F.affine_grid(theta, [batch, 3, height, width], align_corners=False)
        # Reflection padding, not zeros: on 64x64 images a 10-degree turn plus a 10% shift and 0.9
        # zoom uncovers up to ~10 px of border; black wedges there would be large, off-distribution
        # and correlated with the augmentation rather than the class, while mirrored content keeps
        # the image statistics (and BatchNorm's running estimates) close to the un-augmented ones.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
