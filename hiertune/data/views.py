"""Test-time views: transforms of uint8 [N, H, W, 3] images that a test-time augmentation
averages a model's outputs over (beside the images as they are).

`flip` mirrors left to right (training's hflip); `zoom` keeps the central ZOOM_KEEP of each side
and resizes it back to the stored size, a second scale at the same input size. Each is a new
uint8 array, so a frozen backbone's features of a view are keyed by its own pixels' digest in the
feature cache (hiertune.training.features) and computed once.
"""

from __future__ import annotations

import numpy as np

from hiertune.errors import UserError

ZOOM_KEEP = 0.875  # the central share of each side that `zoom` keeps (a 64 px image: its central 56 px)


def flip(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images[:, :, ::-1])


def zoom(images: np.ndarray) -> np.ndarray:
    # torch here, not at the top: the CLI checks --views before torch is imported (a wrong
    # sweep name or view must fail in a blink).
    import torch
    import torch.nn.functional as F

    n, h, w, _ = images.shape
    ch, cw = max(1, round(h * ZOOM_KEEP)), max(1, round(w * ZOOM_KEEP))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = torch.from_numpy(np.ascontiguousarray(images[:, top:top + ch, left:left + cw])).permute(0, 3, 1, 2)
    out = F.interpolate(crop.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


VIEWS = {"flip": flip, "zoom": zoom}


def check_views(names: object, where: str) -> tuple[str, ...]:
    """A list of view names, each known and each once, as a tuple; else one UserError naming `where`."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(v, str) and v in VIEWS for v in names) \
            or len(set(names)) != len(names):
        raise UserError(f"{where}: test-time views must be distinct names among {', '.join(VIEWS)}, got {names!r}")
    return tuple(names)


def parse_views(text: str) -> tuple[str, ...]:
    """`flip`, `zoom`, `flip,zoom` (or empty: none) as view names."""
    return check_views([v.strip() for v in text.split(",") if v.strip()], "--views")
