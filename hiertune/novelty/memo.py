"""A trial's memo of evaluation work: what depends only on its input tensors is computed once and
kept across epochs and between the levels (hiertune.novelty.scores and .ood_scores both read it)."""

from __future__ import annotations

import torch
from torch import Tensor


class Memo:
    """Results that depend only on their input tensors, kept across a trial's epochs and shared
    between the levels: with a frozen backbone the training and validation features are the same
    every epoch, so the feature statistics and the feature-only scores are computed once, and
    two levels reading one feature (dualhead) share what does not depend on labels or heads.

    Entries match their inputs by identity. Inputs that arrive as new tensors each epoch (a
    forward pass's features) go through `canonical` first, which hands back the tensor seen
    before when the new one equals it element for element: one comparison per tensor and epoch,
    and a changed input (a backbone that trains) is a new tensor, so what depends on it is
    computed again."""

    KEEP = 2  # entries per name and role: one per level, so a trainable backbone keeps no stale epochs

    def __init__(self) -> None:
        self._entries: dict[str, list[tuple[tuple[Tensor, ...], object]]] = {}
        self._canonical: dict[str, list[Tensor]] = {}

    def canonical(self, role: str, t: Tensor) -> Tensor:
        """`t`, or the tensor of this `role` (validation features, say) seen before that equals it."""
        seen_before = self._canonical.setdefault(role, [])
        for i, seen in enumerate(seen_before):
            if seen is t or (seen.shape == t.shape and seen.dtype == t.dtype and seen.device == t.device
                             and torch.equal(seen, t)):
                seen_before.insert(0, seen_before.pop(i))
                return seen
        seen_before.insert(0, t)
        del seen_before[self.KEEP:]
        return t

    def get(self, name: str, inputs: tuple[Tensor, ...], compute):
        entries = self._entries.setdefault(name, [])
        for i, (seen, value) in enumerate(entries):
            if len(seen) == len(inputs) and all(a is b for a, b in zip(seen, inputs)):
                entries.insert(0, entries.pop(i))
                return value
        value = compute()
        entries.insert(0, (inputs, value))
        del entries[self.KEEP:]
        return value


def memo_get(memo: Memo | None, name: str, inputs: tuple[Tensor, ...], compute):
    """`compute()`, through `memo` when there is one."""
    return compute() if memo is None else memo.get(name, inputs, compute)


def canonical(memo: Memo | None, role: str, t: Tensor) -> Tensor:
    return t if memo is None else memo.canonical(role, t)
