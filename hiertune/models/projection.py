"""The source nullspace projection a frozen-backbone model applies before its heads.

Every competition training image is generated and every outlier a real photo, so directions of
the frozen feature space tell the sources apart, and heads trained on them can call an image
novel for its source rather than its species. `SourceProjection` removes such directions: each
frozen feature f becomes f − (f·Bᵀ)·B for an orthonormal basis B [k, width] of source directions
(fitted on a trial's training features by hiertune.training.source_nullspace). The bases are
buffers, so the exported model's weights carry them and `predict` projects exactly as training
did; an all-zero basis (before fitting) leaves features unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class SourceProjection(nn.Module):
    def __init__(self, widths: dict[str, int], directions: int):
        super().__init__()
        self.names = tuple(widths)
        for name, width in widths.items():
            self.register_buffer(f"basis_{name}", torch.zeros(directions, width))

    def basis(self, name: str) -> torch.Tensor:
        return getattr(self, f"basis_{name}")

    def set_basis(self, name: str, basis: torch.Tensor) -> None:
        self.basis(name).copy_(basis)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(features)
        for name in self.names:
            f, b = features[name], self.basis(name).to(features[name].dtype)
            out[name] = f - (f @ b.T) @ b
        return out
