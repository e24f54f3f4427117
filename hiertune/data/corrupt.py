"""Camera and pipeline corruptions: the `seen_shifted` validation group and its training-time
counterpart.

Validation's seen images come from the training source, so they say nothing about how a
threshold treats a known subclass photographed differently. `shifted_copy` makes a seeded,
deterministic copy of them under one corruption per image, drawn from

    downup      down-sample by up to 4x (antialiased) and back up: a low-resolution camera
    blur        Gaussian blur, sigma 0.5 to 3 px at 64 px: defocus
    jpeg        JPEG recompression (PIL), quality down to 10
    contrast    contrast reduced by up to 80%: haze, a flat exposure
    brightness  brightness scaled by up to ±60%
    crop        a random crop of down to 50% of the side, rescaled: another framing
    grey        grey scale: a monochrome camera or pipeline

`severity` in [0, 1] scales every corruption's strength; each image gets a strength uniform in
[severity / 2, severity]. All but JPEG run as whole-batch tensor operations; JPEG has no tensor
form and goes through PIL per image. `corrupt_batch` applies the tensor ones to a random share of
a training batch on its device (augment.corrupt in a search space).

Corruptions are only a proxy for a change of source (generated training images vs real photos);
`shifted_data` lets a labeled folder from another source stand in for them or beside them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hiertune.errors import UserError

CORRUPTIONS = ("downup", "blur", "jpeg", "contrast", "brightness", "crop", "grey")
TENSOR_CORRUPTIONS = tuple(c for c in CORRUPTIONS if c != "jpeg")
SHIFTED_SOURCES = ("corrupt", "data", "both", "none")
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class ShiftConfig:
    """Where validation's seen_shifted group comes from."""

    source: str = "corrupt"  # corrupt | data (a labeled folder) | both | none
    data: str | None = None  # competition-format folder of labeled images of known subclasses
    severity: float = 0.5
    seed: int = 0
    train_fraction: float = 0.0  # of each subclass's folder images, drawn by image, that train instead
    holdout: tuple[str, ...] = ()  # subclass names whose folder images never train

    def __post_init__(self) -> None:
        if not 0.0 <= self.train_fraction <= 1.0:
            raise UserError(f"shifted_train_fraction must be in [0, 1], got {self.train_fraction}")
        if (self.train_fraction or self.holdout) and self.source not in ("data", "both"):
            what = "shifted_train_fraction" if self.train_fraction else "shifted_holdout"
            raise UserError(f"{what} splits --shifted-data photos; it needs shifted=data or both "
                            f"(--shifted-data DIR), got shifted={self.source}")
        if self.source not in SHIFTED_SOURCES:
            raise UserError(f"shifted must be one of {', '.join(SHIFTED_SOURCES)}; got {self.source!r}")
        if not 0.0 <= self.severity <= 1.0:
            raise UserError(f"shift_severity must be in [0, 1], got {self.severity}")
        if self.source in ("data", "both") and not self.data:
            raise UserError(f"shifted={self.source} needs shifted_data (--shifted-data DIR)")

    @property
    def corrupts(self) -> bool:
        return self.source in ("corrupt", "both")


def shifted_copy(images: np.ndarray, severity: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted uint8 [N, H, W, 3], index into CORRUPTIONS per image); a function of the
    images, severity and seed only."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 13]))
    kind = rng.integers(0, len(CORRUPTIONS), len(images))
    strength = severity * rng.uniform(0.5, 1.0, len(images))
    sign = rng.choice([-1.0, 1.0], len(images))
    offset = rng.uniform(0, 1, (len(images), 2))
    out = images.copy()
    for k, name in enumerate(CORRUPTIONS):
        rows = np.flatnonzero(kind == k)
        if len(rows) == 0:
            continue
        if name == "jpeg":
            out[rows] = np.stack([_jpeg(images[r], strength[r]) for r in rows])
            continue
        x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float().div_(255)
        params = (torch.from_numpy(strength[rows]).float(), torch.from_numpy(sign[rows]).float(),
                  torch.from_numpy(offset[rows]).float())
        y = _apply(name, x, *params)
        out[rows] = y.mul_(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out, kind


def corrupt_batch(batch_u8: torch.Tensor, p: float, severity: float, generator: torch.Generator) -> torch.Tensor:
    """The tensor corruptions on a random share `p` of a uint8 [B, H, W, 3] batch, on its device;
    draws come from `generator` (on that device) only."""
    if p <= 0:
        return batch_u8
    n, device = len(batch_u8), batch_u8.device
    u = torch.rand(n, 5, generator=generator, device=device)
    hit = u[:, 0] < p
    kind = (u[:, 1] * len(TENSOR_CORRUPTIONS)).long().clamp_(max=len(TENSOR_CORRUPTIONS) - 1)
    strength = severity * (0.5 + 0.5 * u[:, 2])
    sign = torch.where(u[:, 3] < 0.5, -1.0, 1.0)
    offset = torch.rand(n, 2, generator=generator, device=device)
    out = batch_u8.clone()
    for k, name in enumerate(TENSOR_CORRUPTIONS):
        rows = torch.nonzero(hit & (kind == k)).flatten()
        if len(rows) == 0:
            continue
        x = batch_u8[rows].permute(0, 3, 1, 2).float().div_(255)
        y = _apply(name, x, strength[rows], sign[rows], offset[rows])
        out[rows] = y.mul_(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def _apply(name: str, x: torch.Tensor, strength: torch.Tensor, sign: torch.Tensor,
           offset: torch.Tensor) -> torch.Tensor:
    """One corruption on float [n, 3, H, W] in [0, 1], per-image strength in [0, 1]."""
    s = strength.view(-1, 1, 1, 1)
    if name == "contrast":
        mean = _grey(x).mean((1, 2, 3), keepdim=True)
        return (mean + (x - mean) * (1 - 0.8 * s)).clamp_(0, 1)
    if name == "brightness":
        return (x * (1 + 0.6 * s * sign.view(-1, 1, 1, 1))).clamp_(0, 1)
    if name == "grey":
        return _grey(x).expand_as(x).clone()
    if name == "blur":
        return _blur(x, (0.5 + 2.5 * strength) * x.shape[-1] / 64)
    if name in ("downup", "crop"):
        return _resample(name, x, strength, offset)
    raise ValueError(f"unknown corruption {name!r}")


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma: one grouped convolution per axis."""
    n, c, h, w = x.shape
    radius = max(1, int(np.ceil(3 * float(sigma.max()))))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n·c, 2r+1]
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, k.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(flat, k.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def _resample(name: str, x: torch.Tensor, strength: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """downup and crop through one affine grid per image: both are "sample a smaller window or a
    coarser grid, then bring it back to the full size"."""
    n, _, h, w = x.shape
    if name == "downup":
        # Down-sampling by a per-image factor: each image at its own size, then back up.
        out = torch.empty_like(x)
        for r in range(n):
            size = max(4, int(round(h / (1 + 3 * float(strength[r])))))
            small = F.interpolate(x[r:r + 1], size=(size, size * w // h), mode="bilinear", antialias=True,
                                  align_corners=False)
            out[r:r + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp_(0, 1)
    side = 1 - 0.5 * strength  # kept fraction of each side
    centre = (offset * 2 - 1) * (1 - side)[:, None]  # anywhere the window still fits
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = side, side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jpeg(image: np.ndarray, strength: float) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(round(90 - 80 * strength)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))

