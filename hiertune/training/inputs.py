"""What a trial's model reads, batch by batch: images through the augmentation and the whole
model, or a frozen backbone's cached features through the trainable part only.

Both give `batches(...)` of (inputs, *labels) on the device and `forward(model, inputs)`, so the
training loop and the evaluation pass in hiertune.training.loop are the same code for either.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from hiertune.data.augment import BatchAugment
from hiertune.data.batches import iterate_batches
from hiertune.data.corrupt import corrupt_batch
from hiertune.models.registry import ModelOutput

Inputs = torch.Tensor | dict[str, torch.Tensor]


class ImageInputs:
    """uint8 [N, H, W, 3] images; when training, a share `corrupt_p` of each batch gets one
    camera/pipeline corruption (hiertune.data.corrupt) before the augmentation, on the device;
    the eval view otherwise."""

    EVAL_BATCH = 256  # images per evaluation batch

    def __init__(self, images: torch.Tensor, augment: BatchAugment, corrupt_p: float = 0.0,
                 corrupt_severity: float = 0.5):
        self.images, self.augment = images, augment
        self.corrupt_p, self.corrupt_severity = corrupt_p, corrupt_severity

    def __len__(self) -> int:
        return len(self.images)

    def rows(self, idx: torch.Tensor) -> ImageInputs:
        """These images, for evaluation-view passes."""
        return ImageInputs(self.images[idx], self.augment)

    def batches(self, labels: tuple[torch.Tensor, ...], batch_size: int, device: torch.device, *, train: bool,
                order_gen: torch.Generator | None = None, aug_gen: torch.Generator | None = None
                ) -> Iterator[tuple[Inputs, ...]]:
        for xb, *ys in iterate_batches(self.images, labels, batch_size, shuffle=train, generator=order_gen,
                                       device=device, drop_last=train):
            if train:
                xb = corrupt_batch(xb, self.corrupt_p, self.corrupt_severity, aug_gen)
            yield (self.augment(xb, aug_gen, train=train), *ys)

    @staticmethod
    def forward(model, x: torch.Tensor) -> ModelOutput:
        return model(x)


class FeatureInputs:
    """A frozen backbone's outputs per image: name -> [M, K + C views, ...] float32, view 0 the
    clean (evaluation) one, the last `corrupted` views corrupted ones; these inputs are the rows
    `index` of them (default all, in order), so a trial's training and validation share one array
    and copy nothing. Training draws one of the K views per image each epoch from `aug_gen`, the
    generator that would otherwise draw the augmentation, and for a share `corrupt_p` of images
    one of the corrupted views instead, as ImageInputs corrupts that share of each batch;
    evaluation reads view 0."""

    EVAL_BATCH = 4096  # a head's pass over features is cheap: few, large evaluation batches

    def __init__(self, features: dict[str, torch.Tensor], device: torch.device, corrupted: int = 0,
                 corrupt_p: float = 0.0, index: torch.Tensor | None = None):
        # On the device once: a batch is then a gather there, with no host copy per step.
        self.features = {name: t.to(device) for name, t in features.items()}
        first = next(iter(self.features.values()))
        self.device = first.device
        self.index = None if index is None else index.to(self.device)
        self.n, self.views = first.shape[0] if index is None else len(index), first.shape[1] - corrupted
        self.corrupted, self.corrupt_p = corrupted, corrupt_p

    def _source(self, rows: torch.Tensor | slice) -> torch.Tensor | slice:
        """Rows of these inputs as rows of `features` (all of them in order: as they are, so that
        a slice stays a view)."""
        return rows if self.index is None else self.index[rows]

    def __len__(self) -> int:
        return self.n

    def rows(self, idx: torch.Tensor) -> FeatureInputs:
        """These rows' clean view (view 0), for evaluation-view passes: no backbone runs again."""
        rows = self._source(idx.to(self.device))
        return FeatureInputs({name: t[rows, :1] for name, t in self.features.items()}, self.device)

    def batches(self, labels: tuple[torch.Tensor, ...], batch_size: int, device: torch.device, *, train: bool,
                order_gen: torch.Generator | None = None, aug_gen: torch.Generator | None = None
                ) -> Iterator[tuple[Inputs, ...]]:
        if not train:  # the clean view in order: without an index, slices (views, no copy)
            for start in range(0, self.n, batch_size):
                stop = min(start + batch_size, self.n)
                rows = self._source(slice(start, stop))
                yield ({name: t[rows, 0] for name, t in self.features.items()},
                       *(y[start:stop].to(device) for y in labels))
            return
        rows = torch.arange(self.n)  # on the CPU, where order_gen draws the permutation
        if self.views > 1:
            view = torch.randint(self.views, (self.n,), generator=aug_gen, device=aug_gen.device).to(device)
        else:
            view = torch.zeros(self.n, dtype=torch.long, device=device)
        if self.corrupted and self.corrupt_p > 0:
            u = torch.rand(self.n, 2, generator=aug_gen, device=aug_gen.device).to(device)
            pick = self.views + (u[:, 1] * self.corrupted).long().clamp_(max=self.corrupted - 1)
            view = torch.where(u[:, 0] < self.corrupt_p, pick, view)
        for idx, *ys in iterate_batches(rows, labels, batch_size, shuffle=True, generator=order_gen, device=device,
                                        drop_last=True):
            source = self._source(idx)
            yield ({name: t[source, view[idx]] for name, t in self.features.items()}, *ys)

    @staticmethod
    def forward(model, features: dict[str, torch.Tensor]) -> ModelOutput:
        return model.from_frozen(features)


def mix(x: Inputs, lam: float, perm: torch.Tensor) -> Inputs:
    """Mixup of a batch with its permutation: images, or each feature (manifold mixup)."""
    if isinstance(x, dict):
        return {name: lam * t + (1 - lam) * t[perm] for name, t in x.items()}
    return lam * x + (1 - lam) * x[perm]
