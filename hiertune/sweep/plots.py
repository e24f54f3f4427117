"""The pictures a person would rather look at than a table: the front, learning curves, and the
shifted validation group's examples."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: sweeps run on servers
import matplotlib.pyplot as plt  # noqa: E402

from hiertune.data.corrupt import CORRUPTIONS  # noqa: E402
from hiertune.fsutil import atomic_file  # noqa: E402


def plot_front(points: list[dict], front: list[dict], path: Path, title: str) -> None:
    """Left: every (trial × post-hoc setting) point in grey, the non-dominated ones joined in
    colour. Right: each validation group's accuracy, and seen_shifted acceptance, along the front."""
    fig, (ax, groups) = plt.subplots(1, 2, figsize=(12.4, 5.2), gridspec_kw={"width_ratios": [1, 1.1]})
    ax.scatter([p["seen"] for p in points], [p["unseen"] for p in points], s=6, c="0.75",
               label="trial × post-hoc setting")
    ordered = sorted(front, key=lambda p: p["seen"])
    ax.plot([p["seen"] for p in ordered], [p["unseen"] for p in ordered], "-o", ms=4, c="tab:red",
            label=f"front ({len(front)} points)")
    ax.set_xlabel("seen accuracy (mean of superclass and subclass)")
    ax.set_ylabel("unseen accuracy (mean of superclass and subclass)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title)
    seen = [p["seen"] for p in ordered]
    for key, style in (("seen_acc", "-o"), ("seen_shifted_acc", "-s"), ("novel_sub_acc", "-^"),
                       ("novel_super_acc", "-v"), ("accept_shifted", ":x")):
        values = [p.get(key, float("nan")) for p in ordered]
        if any(v == v for v in values):  # a group without images has NaN everywhere: leave it out
            groups.plot(seen, values, style, ms=4, label=key.removesuffix("_acc"))
    groups.set_xlabel("seen accuracy of the front point")
    groups.set_ylabel("accuracy per validation group (acceptance for accept_shifted)")
    groups.set_ylim(0, 1.02)
    groups.grid(alpha=0.3)
    groups.legend(loc="lower left", fontsize=8)
    groups.set_title("the front, group by group")
    _save(fig, path)


def plot_learning_curves(history: list[dict], path: Path, title: str) -> None:
    """Losses on the left, the trial's seen/unseen/hypervolume on the right, by epoch."""
    epochs = [m["epoch"] for m in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        left.plot(epochs, [m.get(key) for m in history], "-o", ms=3, label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    for key in ("seen", "unseen", "hypervolume", "closed_seen_super_acc"):
        right.plot(epochs, [m.get(key) for m in history], "-o", ms=3, label=key)
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.02)
    right.legend(loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def plot_sweep_curves(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    """Every trial's hypervolume by epoch: where ASHA stopped whom is visible at a glance."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, history in sorted(histories.items()):
        ax.plot([m["epoch"] for m in history], [m["hypervolume"] for m in history], "-o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("hypervolume of the trial's own front")
    ax.grid(alpha=0.3)
    if len(histories) <= 12:
        ax.legend(fontsize=7)
    ax.set_title(title)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_shifted_examples(originals: np.ndarray, corrupted: np.ndarray, kinds: np.ndarray, path, columns: int = 14) -> None:
    """A PNG of originals (top row) above their corrupted copies (bottom row), one per column,
    each column titled with its corruption; the first image of every corruption comes first."""
    firsts = [int(np.flatnonzero(kinds == k)[0]) for k in range(len(CORRUPTIONS)) if (kinds == k).any()]
    rest = [i for i in range(len(kinds)) if i not in set(firsts)]
    order = (firsts + rest)[:columns]
    fig, axes = plt.subplots(2, len(order), figsize=(1.3 * len(order), 3.0), squeeze=False)
    for col, i in enumerate(order):
        for row, images in enumerate((originals, corrupted)):
            ax = axes[row, col]
            ax.imshow(images[i])
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(CORRUPTIONS[kinds[i]], fontsize=8)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("shifted", fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
