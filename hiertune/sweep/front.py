"""The sweep's Pareto front of seen vs unseen accuracy, over trials × post-hoc settings.

Rule for what is comparable: every trial's latest checkpoint holds the whole post-hoc grid of
its last evaluation, on the same validation split and protocol for every trial. Each is a real
model measured the same way, so all of them enter the front, completed trials and those ASHA
stopped early alike; the `epochs` column says at which fidelity, and a winner is retrained for
that many epochs. Failed trials and trials without a checkpoint do not enter.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiertune.data.splits import GROUPS
from hiertune.errors import UserError
from hiertune.fsutil import atomic_file
from hiertune.novelty.metrics import ACCURACIES, knee_distance, pareto_front, rank_points
from hiertune.novelty.photos import PHOTO_KEYS
from hiertune.novelty.records import NOVEL_GROUPS
from hiertune.sweep.plots import front_html, plot_front
from hiertune.sweep.place import SweepPlace
from hiertune.sweep.records import FrontPoint, PointPhotos, SweepFront, SweepPoints
from hiertune.sweep.state import TrialRecord, find_meta
from hiertune.training.checkpoint import read_posthoc
from hiertune.training.records import RECOMMENDED_SCORE, EpochMetrics


def front_points(trials: list[TrialRecord], sampled_thresholds: bool = False) -> SweepPoints:
    """Every (trial × score × τ_super × τ_sub) point of trials that have a checkpoint; or, when
    Optuna sampled the thresholds, each trial's one point at its sampled thresholds."""
    usable = [t for t in trials if t.checkpoint is not None and t.status != "failed"]
    if sampled_thresholds:
        return SweepPoints.of([_sampled_point(t) for t in usable])
    sources, parts = [], []  # parts: per trial, its measured cells' (seen, unseen, score, cell)
    for t in usable:
        result = read_posthoc(t.checkpoint)
        seen, unseen = result.seen.ravel(), result.unseen.ravel()
        measured = np.flatnonzero(~(np.isnan(seen) | np.isnan(unseen)))
        sources.append((t, result))
        parts.append((seen[measured], unseen[measured],
                      np.asarray(result.scores)[np.unravel_index(measured, result.grid.shape[:3])[0]], measured))
    seen, unseen, score, cell = (np.concatenate([part[k] for part in parts]) if parts else np.empty(0)
                                 for k in range(4))
    owner = np.repeat(np.arange(len(parts)), [len(part[3]) for part in parts])
    return SweepPoints(seen.astype(float), unseen.astype(float), score.astype(str), owner, cell.astype(int),
                       tuple(sources))


def _sampled_point(t: TrialRecord) -> FrontPoint:
    try:
        last = EpochMetrics.from_flat(t.metrics)
    except ValueError as exc:
        raise UserError(f"{t.name}: its metrics in the sweep's records are not an epoch's ({exc})") from None
    return FrontPoint(t.name, t.trial_id, t.status, t.epochs, t.params, last.point, last.by_score)


def point_photos(trials: list[TrialRecord], best: FrontPoint | None) -> PointPhotos | None:
    """The real photos' figures that `best`'s trial logged at its last evaluation (the epoch its
    front points come from), or None without photos in its validation."""
    trial = next((t for t in trials if best is not None and t.trial_id == best.trial_id), None)
    if trial is None or not all(isinstance(trial.metrics.get(k), (int, float)) for k in PHOTO_KEYS):
        return None
    m = trial.metrics
    prefix = [f"{k}." for k in PHOTO_KEYS]
    names = [k[len(prefix[0]):] for k in m if k.startswith(prefix[0])]
    species = {n: tuple(float(m.get(f"{p}{n}", math.nan)) for p in prefix) for n in names}
    own = (m.get(RECOMMENDED_SCORE), m.get("tau_super"), m.get("tau_sub"))
    same = own[0] == best.score and all(isinstance(v, (int, float)) and math.isclose(v, w, abs_tol=1e-9)
                                        for v, w in zip(own[1:], (best.point.tau_super, best.point.tau_sub)))
    other = None if same else f"{own[0]} with τ_super {float(own[1]):.3f}, τ_sub {float(own[2]):.3f}"
    return PointPhotos(*(float(m[k]) for k in PHOTO_KEYS), species, other)


def compute_front(points: list) -> list:
    """The non-dominated points (anything with `seen` and `unseen`), seen descending."""
    if not points:
        return []
    index = pareto_front(np.array([[p.seen, p.unseen] for p in points]))
    return [points[k] for k in index]


def sweep_front(trials: list[TrialRecord], sampled_thresholds: bool) -> tuple[SweepPoints, list[FrontPoint]]:
    """(every point, the non-dominated ones): the one place a sweep's front is decided."""
    points = front_points(trials, sampled_thresholds)
    return points, points.front()


@dataclass(frozen=True)
class Pick:
    """Which front point is recommended (marked in the table, the plots and `pareto --json`, the
    parent run's `best_*`) and which points `export-best` retrains: `knee`, `max-seen`,
    `max-unseen` or `weight=W` (maximise W·seen + (1−W)·unseen). The knee is the default; a
    space may name another (`pick:`). The knee: hiertune.novelty.metrics.knee_distance."""

    kind: str
    weight: float = 0.5

    @classmethod
    def parse(cls, text: str) -> "Pick":
        if text in ("knee", "max-seen", "max-unseen"):
            return cls(text)
        key, _, value = text.partition("=")
        if key == "weight":
            try:
                weight = float(value)
            except ValueError:
                weight = math.nan
            if 0.0 <= weight <= 1.0:
                return cls("weight", weight)
            raise UserError(f"--pick weight=W needs W in [0, 1], got {value!r}")
        raise UserError(f"--pick {text!r}: expected knee, max-seen, max-unseen or weight=W")

    def __str__(self) -> str:
        return f"weight={self.weight:g}" if self.kind == "weight" else self.kind

    def rank(self, front: list) -> list:
        """The front (anything with `seen` and `unseen`), best first under this pick; ties go to
        the higher seen + unseen."""
        seen = np.array([p.seen for p in front], dtype=float)
        unseen = np.array([p.unseen for p in front], dtype=float)
        if self.kind == "max-seen":
            key = seen + 1e-9 * unseen
        elif self.kind == "max-unseen":
            key = unseen + 1e-9 * seen
        elif self.kind == "weight":
            key = self.weight * seen + (1 - self.weight) * unseen
        else:
            key = knee_distance(seen, unseen)
        return [front[i] for i in rank_points(seen, unseen, key)]

    def choose(self, front: list[FrontPoint], top: int) -> list[FrontPoint]:
        """The `top` best points of distinct trials: two points of one trial differ only in
        thresholds, and retraining the same configuration twice would buy nothing."""
        chosen, trials = [], set()
        for p in self.rank(front):
            if p.trial_id not in trials:
                chosen.append(p)
                trials.add(p.trial_id)
            if len(chosen) == top:
                break
        return chosen


def recommended(front: list[FrontPoint], pick: Pick) -> FrontPoint | None:
    """The sweep's one recommended point: the best front point under the sweep's pick."""
    return pick.rank(front)[0] if front else None


def write_front(sweep_dir: Path, name: str, points: SweepPoints, front: list[FrontPoint],
                best: FrontPoint | None) -> tuple[Path, Path, Path]:
    csv_path, png_path, html_path = sweep_dir / "pareto.csv", sweep_dir / "pareto.png", sweep_dir / "pareto.html"
    rows = [p.row() for p in front]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_file(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, "recommended"])
        writer.writeheader()
        writer.writerows({**r, "recommended": int(p is best)} for p, r in zip(front, rows))
    title = f"{name}: seen vs unseen ({len(points):,} trial × post-hoc points)"
    plot_front(points, front, best, png_path, title)
    front_html(points, front, best, html_path, title)
    return csv_path, png_path, html_path


def front_files(place: SweepPlace, trials: list[TrialRecord]) -> SweepFront:
    """The front from the stored per-trial results, as pareto.csv, pareto.png and pareto.html in
    the sweep's (working) folder, with its recommended point under the sweep's pick: what
    `hiertune pareto` does, which touches neither MLflow nor S3."""
    meta = find_meta(place.dir)
    points, front = sweep_front(trials, meta.sampled_thresholds if meta else False)
    pick = Pick.parse(meta.pick if meta else "knee")  # sweeps from before `pick:`: the knee
    best = recommended(front, pick)
    csv_path, png_path, html_path = write_front(place.dir, place.name, points, front, best)
    return SweepFront(len(points), front, str(pick), best, str(csv_path), str(png_path), str(html_path),
                      point_photos(trials, best))


def render(front: list[FrontPoint], best: FrontPoint | None = None, rows: int | None = None,
           groups: bool = False) -> str:
    """The front as a table; `*` marks the recommended point. With `rows`, that many points
    spread along the front, the recommended one always among them (the whole is in pareto.csv).
    `groups`: each point's per-group accuracy and, for its score, the AUROC on novel_sub and
    novel_super instead."""
    if groups:
        return render_groups(front)
    params = sorted({k for p in front for k in p.params})
    shown = front
    if rows is not None and len(front) > rows:
        keep = {round(i * (len(front) - 1) / (rows - 1)) for i in range(rows)}
        keep |= {i for i, p in enumerate(front) if p is best}
        shown = [p for i, p in enumerate(front) if i in keep]
    head = ["", "trial", "epochs", *params, "score", "tau_sup", "tau_sub",
            "seen_sup", "unseen_sup", "seen_sub", "unseen_sub", "seen", "unseen"]
    table = [["*" if p is best else "", p.trial, p.epochs, *[_fmt(p.params.get(k), ".3g") for k in params], p.score,
              _fmt(p.point.tau_super), _fmt(p.point.tau_sub), *[_fmt(getattr(p.point, k)) for k in ACCURACIES],
              _fmt(p.seen), _fmt(p.unseen)]
             for p in shown]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    more = [f"({len(front) - len(shown)} more front points in pareto.csv)"] if len(shown) < len(front) else []
    return "\n".join(["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *table]]
                     + more)


def render_groups(front: list[FrontPoint]) -> str:
    head = ["trial", "score", "tau_sup", "tau_sub", "seen", "unseen", *(f"{g}_acc" for g in GROUPS),
            "accept_shifted", "auroc_novel_sub", "auroc_novel_super"]
    rows = [[p.trial, p.score, _fmt(p.point.tau_super), _fmt(p.point.tau_sub), _fmt(p.seen), _fmt(p.unseen),
             *(_fmt(getattr(p.point, f"{g}_acc")) for g in GROUPS), _fmt(p.point.accept_shifted),
             *(_fmt(p.auroc(g)) for g in NOVEL_GROUPS)]
            for p in front]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [head, *rows])


def point_report(p: FrontPoint) -> str:
    """One point in full: each group's accuracy, every score's AUROC on novel_sub and novel_super
    (the trial's, so one table says which score wins per group), and acceptance on seen_shifted."""
    q = p.point
    scores = sorted(p.by_score)
    lines = [f"{p.trial} (epochs {p.epochs}), {p.score} at tau_super {_fmt(q.tau_super)}, "
             f"tau_sub {_fmt(q.tau_sub)}: seen {_fmt(p.seen)}  unseen {_fmt(p.unseen)}",
             "  group accuracy: " + "  ".join(f"{g} {_fmt(getattr(q, f'{g}_acc'))}" for g in GROUPS),
             f"  seen_shifted acceptance: both levels {_fmt(q.accept_shifted)}, superclass "
             f"{_fmt(q.accept_shifted_super)}, subclass {_fmt(q.accept_shifted_sub)} "
             f"(in-source seen: superclass {_fmt(q.accept_super)}, subclass {_fmt(q.accept_sub)})",
             f"  {'score':<12}{'auroc novel_sub':>16}{'auroc novel_super':>19}"]
    best = {g: max(scores, key=lambda s: _or_minus(p.auroc(g, s)), default=None) for g in NOVEL_GROUPS}
    for s in scores:
        marks = [_fmt(p.auroc(g, s)) + ("*" if best[g] == s else " ") for g in NOVEL_GROUPS]
        lines.append(f"  {s:<12}{marks[0]:>16}{marks[1]:>19}")
    lines.append("  * best score for that group")
    return "\n".join(lines)


def _or_minus(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def _fmt(value, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, float) else str(value)
