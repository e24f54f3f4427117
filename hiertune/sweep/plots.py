"""The pictures a person would rather look at than a table: the front, learning curves, and the
shifted validation group's examples."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: sweeps run on servers
import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hiertune.data.corrupt import CORRUPTIONS  # noqa: E402
from hiertune.fsutil import atomic_file  # noqa: E402
from hiertune.novelty.records import GridPoint  # noqa: E402
from hiertune.sweep.records import FrontPoint, SweepPoints  # noqa: E402
from hiertune.training.records import EpochMetrics  # noqa: E402


def plot_front(points: SweepPoints, front: list[FrontPoint], best: FrontPoint | None, path: Path,
               title: str, extra: list[tuple[str, list[GridPoint]]] = ()) -> None:
    """Left: every (trial × post-hoc setting) point coloured by its novelty score, the front joined,
    the recommended point marked and labelled, the axes fitted to where the points are; `extra`
    fronts (an ensemble's own) joined in grey. Right: each validation group's accuracy, and
    seen_shifted acceptance, along the front."""
    fig, (ax, groups) = plt.subplots(1, 2, figsize=(13.6, 5.6), gridspec_kw={"width_ratios": [1.15, 1]})
    scores = sorted(set(points.score))
    colours = dict(zip(scores, plt.get_cmap("tab10").colors))
    for score in scores:
        mine = points.score == score
        ax.scatter(points.seen[mine], points.unseen[mine], s=5, alpha=0.35, color=colours[score],
                   label=f"{score} ({mine.sum():,})", rasterized=True)
    ordered = sorted(front, key=lambda p: p.seen)
    ax.plot([p.seen for p in ordered], [p.unseen for p in ordered], "-", c="black", lw=1.2, zorder=3)
    ax.scatter([p.seen for p in ordered], [p.unseen for p in ordered], s=22, zorder=4, edgecolors="black",
               color=[colours[p.score] for p in ordered], label=f"front ({len(front)} points)")
    for label, other in extra:
        line = sorted(other, key=lambda p: p.seen)
        ax.plot([p.seen for p in line], [p.unseen for p in line], "--", c="0.45", lw=1.2, zorder=3,
                label=f"{label} ({len(line)} points)")
    if best is not None:
        ax.scatter([best.seen], [best.unseen], marker="*", s=320, c="gold", edgecolors="black", zorder=5,
                   label="recommended")
        ax.annotate(f"recommended: {best.trial} ({best.epochs} ep)\n{best.score}, τ_super "
                    f"{best.point.tau_super:.3f}, τ_sub {best.point.tau_sub:.3f}\nseen {best.seen:.3f}, unseen "
                    f"{best.unseen:.3f}", (best.seen, best.unseen), xytext=_inward(ax, best, points),
                    textcoords="offset points", fontsize=8, zorder=6,
                    bbox=dict(boxstyle="round", fc="white", ec="0.5", alpha=0.9),
                    arrowprops=dict(arrowstyle="-", color="0.4"))
    if len(points):
        for lim, values in ((ax.set_xlim, points.seen), (ax.set_ylim, points.unseen)):
            lo, hi = float(values.min()), float(values.max())
            pad = max(0.02, 0.05 * (hi - lo))
            lim(max(0.0, lo - pad), min(1.0, hi + pad) + 0.01)
    ax.set_xlabel("seen accuracy (mean of superclass and subclass)")
    ax.set_ylabel("unseen accuracy (mean of superclass and subclass)")
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="best", fontsize=7, title="novelty score", title_fontsize=7)
    for handle in legend.legend_handles:  # one size for every marker in the legend, the star included
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([30])
    ax.set_title(title, fontsize=10)
    seen = [p.seen for p in ordered]
    for key, style in (("seen_acc", "-o"), ("seen_shifted_acc", "-s"), ("novel_sub_acc", "-^"),
                       ("novel_super_acc", "-v"), ("accept_shifted", ":x")):
        values = [getattr(p.point, key) for p in ordered]
        if any(v == v for v in values):  # a group without images has NaN everywhere: leave it out
            groups.plot(seen, values, style, ms=4, label=key.removesuffix("_acc"))
    if best is not None:
        groups.axvline(best.seen, color="gold", lw=2, zorder=0, label="recommended")
    groups.set_xlabel("seen accuracy of the front point")
    groups.set_ylabel("accuracy per validation group (acceptance for accept_shifted)")
    groups.set_ylim(0, 1.02)
    groups.grid(alpha=0.3)
    if groups.get_legend_handles_labels()[0]:  # an empty front (nothing reported yet) has nothing to name
        groups.legend(loc="lower left", fontsize=8)
    groups.set_title("the front, group by group", fontsize=10)
    _save(fig, path)


def _inward(ax, best: FrontPoint, points: SweepPoints) -> tuple[int, int]:
    """Where the label goes, in points from the marker: toward the middle of the data, so it
    stays inside the axes whichever corner the recommended point is in."""
    mid_x = (points.seen.min() + points.seen.max()) / 2
    mid_y = (points.unseen.min() + points.unseen.max()) / 2
    return (20 if best.seen <= mid_x else -170, -60 if best.unseen >= mid_y else 30)


def front_html(points: SweepPoints, front: list[FrontPoint], best: FrontPoint | None, path: Path,
               title: str) -> None:
    """The front as one self-contained HTML page (plotly): hover a point for its trial, params,
    novelty score and thresholds. The cloud is thinned to the front plus a sample, so the page
    stays small however large the grid."""
    def hover(p: FrontPoint) -> str:
        params = "<br>".join(f"{k}: {_short(v)}" for k, v in sorted(p.params.items()))
        return (f"<b>{p.trial}</b> ({p.status}, {p.epochs} epochs)<br>score {p.score}, "
                f"τ_super {p.point.tau_super:.3f}, τ_sub {p.point.tau_sub:.3f}<br>seen {p.seen:.3f}, "
                f"unseen {p.unseen:.3f}<br>{params}")

    sample = points.at(range(0, len(points), max(1, len(points) // 4000)))
    fig = go.Figure()
    for score in sorted(set(points.score)):
        mine = [p for p in sample if p.score == score]
        fig.add_trace(go.Scattergl(x=[p.seen for p in mine], y=[p.unseen for p in mine], mode="markers",
                                   name=score, opacity=0.45, marker={"size": 4},
                                   hovertext=[hover(p) for p in mine], hoverinfo="text"))
    ordered = sorted(front, key=lambda p: p.seen)
    fig.add_trace(go.Scatter(x=[p.seen for p in ordered], y=[p.unseen for p in ordered], mode="lines+markers",
                             name=f"front ({len(front)})", line={"color": "black"}, marker={"size": 7},
                             hovertext=[hover(p) for p in ordered], hoverinfo="text"))
    if best is not None:
        fig.add_trace(go.Scatter(x=[best.seen], y=[best.unseen], mode="markers+text", name="recommended",
                                 marker={"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1}},
                                 text=["recommended"], textposition="top right",
                                 hovertext=[hover(best)], hoverinfo="text"))
    fig.update_layout(title=title, xaxis_title="seen accuracy", yaxis_title="unseen accuracy",
                      template="plotly_white", legend_title="novelty score")
    with atomic_file(path) as tmp:
        tmp.write_text(fig.to_html(include_plotlyjs=True, full_html=True), encoding="utf-8")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_learning_curves(history: list[EpochMetrics], path: Path, title: str) -> None:
    """Losses on the left, the trial's seen/unseen/hypervolume on the right, by epoch."""
    epochs = [m.epoch for m in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, values in (("train_loss", [m.train_loss for m in history]), ("val_loss", [m.val_loss for m in history])):
        left.plot(epochs, values, "-o", ms=3, label=label)
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    for label, values in (("seen", [m.recommended.seen for m in history]),
                          ("unseen", [m.recommended.unseen for m in history]),
                          ("hypervolume", [m.hypervolume for m in history]),
                          ("closed_seen_super_acc", [m.closed_seen_super_acc for m in history])):
        right.plot(epochs, values, "-o", ms=3, label=label)
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.02)
    right.legend(loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    _save(fig, path)


def plot_sweep_curves(histories: dict[str, list[EpochMetrics]], stopped: set[str], path: Path, title: str,
                      stopped_by: str) -> None:
    """Every trial's hypervolume by epoch, an ✕ where the scheduler (`stopped_by`) stopped a trial."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, history in sorted(histories.items()):
        epochs, values = [m.epoch for m in history], [m.hypervolume for m in history]
        (line,) = ax.plot(epochs, values, "-o", ms=3, label=name + (f" (stopped by {stopped_by})" if name in stopped else ""))
        if name in stopped:
            ax.plot(epochs[-1:], values[-1:], "x", ms=10, mew=2, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def plot_importances(importances: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Optuna's per-objective parameter importances side by side, one bar group per parameter."""
    params = sorted({p for imp in importances.values() for p in imp},
                    key=lambda p: sum(imp.get(p, 0.0) for imp in importances.values()))
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.5 * len(params) * max(1, len(importances)) ** 0.5))
    height = 0.8 / len(importances)
    for k, (name, imp) in enumerate(importances.items()):
        ax.barh([i + k * height for i in range(len(params))], [imp.get(p, 0.0) for p in params], height,
                label=name)
    ax.set_yticks([i + height * (len(importances) - 1) / 2 for i in range(len(params))], params)
    ax.set_xlabel("importance (fANOVA, sums to 1 per objective)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
