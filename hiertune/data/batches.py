"""Mini-batches from in-memory tensors by permutation indexing, with no per-sample Python work.

Augmentation is not done here: the caller applies a `BatchAugment` to the uint8 batch once it is
on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def _take(t: torch.Tensor, index: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    if not pin:
        return t.index_select(0, index).to(device)
    # Gather straight into pinned memory (one host copy, not index-then-pin). A fresh pinned buffer
    # per batch is cheap, since torch caches pinned host blocks, and safe with non_blocking: the
    # caching allocator does not hand a block out again until its pending copy has finished.
    staged = torch.empty((index.numel(), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    return torch.index_select(t, 0, index, out=staged).to(device, non_blocking=True)


def iterate_batches(
    images: torch.Tensor,
    labels: tuple[torch.Tensor, ...] | torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device | str,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield `(images, *labels)` batches on `device`, each tensor indexed along dim 0.

    `labels` is one tensor or a tuple of them, all with `len(images)` rows and on the same device
    as `images`. The shuffle order comes from `torch.randperm` with `generator`, which must
    therefore live on `images`' device (usually the CPU, unlike the augmentation generator).
    """
    device = torch.device(device)
    label_list = (labels,) if isinstance(labels, torch.Tensor) else tuple(labels)
    n = images.shape[0]
    for i, t in enumerate(label_list):
        if t.shape[0] != n:
            raise ValueError(f"labels[{i}] has {t.shape[0]} rows but images has {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        order = torch.randperm(n, generator=generator, device=images.device)
    else:
        order = torch.arange(n, device=images.device)
    pin = device.type == "cuda" and images.device.type == "cpu"
    for b in range(num_batches(n, batch_size, drop_last)):
        index = order[b * batch_size : (b + 1) * batch_size]
        yield tuple(_take(t, index, device, pin) for t in (images, *label_list))
