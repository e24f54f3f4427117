"""Where a model runs and in what precision: one decision for training and for prediction."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

from hiertune.errors import UserError


def pick_device(requested: str) -> torch.device:
    """`auto` takes a visible GPU; `cuda` insists on one; `cpu` never uses one."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but no CUDA device is visible")
    return torch.device("cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu")


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU has it (no loss scaling needed), else float16."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def precision(device: torch.device, amp: bool) -> torch.dtype:
    """What the forward pass computes in; part of a frozen-feature cache key."""
    return amp_dtype(device) if device.type == "cuda" and amp else torch.float32


def autocast(device: torch.device, amp: bool) -> Callable[[], ContextManager]:
    """A factory of the forward pass's autocast context: mixed precision only on CUDA with `amp`."""
    if device.type == "cuda" and amp:
        dtype = amp_dtype(device)
        return lambda: torch.autocast("cuda", dtype=dtype)
    return nullcontext
