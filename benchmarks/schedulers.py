"""Early stopping on one scalar or on the front: FIFO at full budget, ASHA on each trial's front
hypervolume, and MO-ASHA (hiertune.sweep.moasha), on the same space, budget and seeds.

    python benchmarks/schedulers.py [--seeds 0 1 2] [--num-samples 12] [--epochs 9] [--grace 1]
        [--eta 3] [--cpus-per-trial 1] [--synthetic] [--frozen] [--out schedulers.png]
        [--workdir DIR] [--report-only]

Each (seed, scheduler) is one `run_sweep` with post-hoc thresholds: the 3-block CNN (width 16,
64 px) from scratch, or with --frozen the dualhead's two heads on cached ImageNet lite0 features;
on the competition data and the Tiny ImageNet outliers from /work/shared (or the synthetic default
with --synthetic). The seed is Optuna's, so the three schedulers draw the same first
configurations (TPE samples its first 10 at random). From every trial's reported results (Ray's
result.json: a timestamp and the epoch's own front) it rebuilds the sweep's front over time, as
the union of each trial's latest front, and prints per scheduler: the final front's hypervolume,
the wall time, the epochs trained, the time to reach 95%, 99% and 99.5% of FIFO's final
hypervolume (same seed), and how many stopped trials, when they were stopped, held a point of
their rung's front, one of its two corners (highest seen, highest unseen) alone, or such a corner
by more than MO-ASHA's ε. The plot is the front's hypervolume against wall time and against
epochs trained. Each run's clock is kept beside its sweep (<name>.run.json), so
`--report-only --workdir DIR` re-reads finished runs. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from hiertune.cli import run_script
from hiertune.data.cache import default_cache_root
from hiertune.fsutil import atomic_file
from hiertune.novelty.metrics import hypervolume_2d, pareto_front
from hiertune.sweep.schedulers import SchedulerSettings
from hiertune.sweep.space import load_space
from hiertune.sweep.moasha import nondominated_levels
from hiertune.sweep.place import SweepPlace
from hiertune.sweep.run import run_sweep
from hiertune.sweep.state import load_trials
from hiertune.training.records import FRONT as FRONT_KEY

SCHEDULERS = ("fifo", "asha", "moasha")
TARGETS = (0.95, 0.99, 0.995)  # shares of FIFO's final hypervolume
DATA = "/work/shared/data/nndl2025"
OUTLIERS = "/work/shared/data/outliers/tinyimagenet-ood"
SPACE = """
family: cnn
fixed: {{epochs: {epochs}, batch_size: 64, cnn_width: 16, image_size: 64, data: {data}, outliers: {outliers}}}
search:
  lr: {{type: float, low: 1.0e-3, high: 2.0e-2, log: true}}
  weight_decay: {{type: float, low: 1.0e-6, high: 1.0e-2, log: true}}
  dropout: {{type: float, low: 0.0, high: 0.4}}
  outlier_fraction: {{type: float, low: 0.1, high: 1.0}}
  outlier_mode: {{type: categorical, choices: [class, oe]}}
  tau_super: {{type: float, low: 0.5, high: 1.0}}
  tau_sub: {{type: float, low: 0.5, high: 1.0}}
  novelty_score: {{type: categorical, choices: [msp, energy, maxlogit, mahalanobis, knn]}}
tune: {{num_samples: {samples}, sampler: tpe, seed: {seed}}}
scheduler: {{type: {scheduler}, max_t: {epochs}, grace_period: {grace}, reduction_factor: {eta}}}
resources: {{cpus_per_trial: {cpus}}}
"""
# --frozen: the cheapest realistic trial once pretrained backbones exist: ImageNet lite0 features
# at 160 px computed once (hiertune.training.features), only the two heads trained per epoch.
FROZEN_SPACE = """
family: dualhead
fixed: {{epochs: {epochs}, batch_size: 64, backbone: tf_efficientnet_lite0, pretrained: true, finetune: linear,
        image_size: 160, threads: 1, corrupt_p: 0.0, data: {data}, outliers: {outliers}}}
search:
  lr: {{type: float, low: 1.0e-4, high: 3.0e-3, log: true}}
  weight_decay: {{type: float, low: 1.0e-6, high: 1.0e-2, log: true}}
  optimizer: {{type: categorical, choices: [adamw, adam, sgd]}}
  kl_alpha: {{type: float, low: 0.0, high: 1.0}}
  outlier_fraction: {{type: float, low: 0.1, high: 1.0}}
  outlier_mode: {{type: categorical, choices: [class, oe]}}
  mixup_alpha: {{type: float, low: 0.0, high: 0.4}}
tune: {{num_samples: {samples}, sampler: tpe, seed: {seed}}}
scheduler: {{type: {scheduler}, max_t: {epochs}, grace_period: {grace}, reduction_factor: {eta}}}
resources: {{cpus_per_trial: {cpus}, gpus_per_trial: 0}}
"""


def run(args, seed: int, scheduler: str, work: Path) -> None:
    name = f"{scheduler}-{seed}"
    path = work / f"{name}.yaml"
    data, outliers = (None, None) if args.synthetic else (DATA, OUTLIERS)
    path.write_text((FROZEN_SPACE if args.frozen else SPACE).format(
        epochs=args.epochs, samples=args.num_samples, seed=seed, scheduler=scheduler, grace=args.grace,
        eta=args.eta, cpus=args.cpus_per_trial, data=yaml.safe_dump(data).split("\n")[0],
        outliers=yaml.safe_dump(outliers).split("\n")[0]))
    start = time.time()
    run_sweep(load_space(path), SweepPlace.resolve(name, str(work / "sweeps"), None), default_cache_root())
    with atomic_file(work / f"{name}.run.json") as tmp:  # Ray's start and the data included, as in the curve
        tmp.write_text(json.dumps({"start": start, "wall": time.time() - start}))


def analyse(work: Path, name: str) -> dict:
    """One finished run, from its sweep folder and its clock."""
    clock = json.loads((work / f"{name}.run.json").read_text())
    sweep_dir = work / "sweeps" / name
    trials = load_trials(sweep_dir)
    events = results(sweep_dir / "tune")
    latest = {e["trial"]: e["front"] for e in events}  # the sweep's front: each trial where it ended
    points = np.concatenate([np.empty((0, 2)), *latest.values()])
    return {"curve": front_over_time(events, clock["start"]), "final": hypervolume_2d(points),
            "wall": clock["wall"], "epochs": sum(t.epochs for t in trials), "front": points[pareto_front(points)],
            "drops": dropped(events, {t.trial_id for t in trials if t.status == "stopped"})}


def results(tune_dir: Path) -> list[dict]:
    """Every reported epoch of every trial: trial, epoch, Ray's timestamp, the epoch's own front."""
    events = []
    for trial_dir in sorted(tune_dir.glob("trial_*")):
        for line in (trial_dir / "result.json").read_text().splitlines():
            r = json.loads(line)
            if FRONT_KEY in r:
                events.append({"trial": r["trial_id"], "t": int(r["training_iteration"]),
                               "time": float(r["timestamp"]), "front": np.asarray(r[FRONT_KEY]).reshape(-1, 2)})
    return sorted(events, key=lambda e: (e["time"], e["trial"], e["t"]))


def front_over_time(events: list[dict], start: float) -> list[tuple[float, int, float]]:
    """(seconds since the start, epochs trained so far, the sweep front's hypervolume) after each result."""
    latest: dict[str, np.ndarray] = {}
    curve = [(0.0, 0, 0.0)]
    for n, e in enumerate(events, 1):
        latest[e["trial"]] = e["front"]
        curve.append((e["time"] - start, n, hypervolume_2d(np.concatenate(list(latest.values())))))
    return curve


def dropped(events: list[dict], stopped: set[str]) -> dict[str, int]:
    """Stopped trials that, at the epoch they were stopped, held a point of the front of every
    trial that had reached that epoch by then (as the scheduler saw it), a corner of it alone,
    or a corner alone by more than MO-ASHA's default ε in the other objective or its own."""
    last = {e["trial"]: e for e in events if e["trial"] in stopped}
    epsilon = SchedulerSettings.epsilon
    counts = {"stopped": len(stopped), "on_front": 0, "corner": 0, "corner_eps": 0}
    for trial, e in last.items():
        rung = [o for o in events if o["t"] == e["t"] and o["time"] <= e["time"] and o["trial"] != trial]
        others = np.concatenate([np.empty((0, 2)), *(o["front"] for o in rung)])
        points = np.concatenate([e["front"], others])
        top = points[nondominated_levels(points) == 0]
        own = {tuple(p) for p in e["front"]} & {tuple(p) for p in top}
        counts["on_front"] += bool(own)
        # A corner: the front's highest-seen or highest-unseen point (ties by the other objective).
        corners = {tuple(top[np.lexsort((top[:, 1 - k], top[:, k]))[-1]]) for k in (0, 1)}
        held = (own & corners) - {tuple(p) for p in others}
        counts["corner"] += bool(held)
        counts["corner_eps"] += any(_margin(np.asarray(c), others) > epsilon for c in held)
    return counts


def _margin(corner: np.ndarray, others: np.ndarray) -> float:
    """How far ahead of every other trial's point a corner is: the smallest, over the others, of its
    largest lead in either objective (inf with nobody else at the rung)."""
    return float((corner[None, :] - others).max(1).min()) if len(others) else float("inf")


def time_to(curve: list[tuple[float, int, float]], target: float) -> float | None:
    return next((t for t, _, hv in curve if hv >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--synthetic", action="store_true", help="the synthetic default instead of /work/shared")
    parser.add_argument("--frozen", action="store_true",
                        help="heads on cached ImageNet lite0 features (160 px) instead of the CNN from scratch")
    parser.add_argument("--out", default="schedulers.png", help="the plot")
    parser.add_argument("--workdir", help="keep the sweeps here (default: a temporary folder)")
    parser.add_argument("--report-only", action="store_true", help="re-read the finished runs in --workdir")
    args = parser.parse_args()
    if args.report_only and not args.workdir:
        parser.error("--report-only reads the runs kept in --workdir")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs: dict[tuple[int, str], dict] = {}
        for seed in args.seeds:
            for scheduler in SCHEDULERS:
                if not args.report_only:
                    run(args, seed, scheduler, work)
                r = runs[seed, scheduler] = analyse(work, f"{scheduler}-{seed}")
                print(f"seed {seed} {scheduler:6s}: hypervolume {r['final']:.4f}  wall {r['wall']:.0f} s  "
                      f"epochs {r['epochs']}", flush=True)
        report(args, runs)
        plot(args, runs)


def report(args, runs: dict) -> None:
    print(f"\n{len(args.seeds)} seed(s) x {args.num_samples} trials x up to {args.epochs} epochs "
          f"(grace {args.grace}, eta {args.eta}); data: {'synthetic' if args.synthetic else DATA}"
          f"{'; frozen lite0 features' if args.frozen else ''}")
    reach_cols = " ".join(f"{f'to {t:.1%} s':>13s}" for t in TARGETS)
    print(f"{'scheduler':10s} {'final HV':>16s} {'wall s':>7s} {'epochs':>7s} {reach_cols} "
          f"{'stopped':>8s} {'on front':>9s} {'corner':>7s} {'corner>eps':>10s}")
    for scheduler in SCHEDULERS:
        rs = [runs[s, scheduler] for s in args.seeds]
        hv = [r["final"] for r in rs]
        spread = f" ± {statistics.stdev(hv):.4f}" if len(hv) > 1 else ""
        reach = " ".join(f"{_mean_time(runs, args.seeds, scheduler, t):>13s}" for t in TARGETS)
        drops = {k: sum(r["drops"][k] for r in rs) for k in ("stopped", "on_front", "corner", "corner_eps")}
        print(f"{scheduler:10s} {statistics.mean(hv):8.4f}{spread:>8s} {statistics.mean(r['wall'] for r in rs):7.0f} "
              f"{statistics.mean(r['epochs'] for r in rs):7.1f} {reach} {drops['stopped']:8d} "
              f"{drops['on_front']:9d} {drops['corner']:7d} {drops['corner_eps']:10d}")
    print("\nfront corners per seed (highest seen, highest unseen on the final front):")
    for seed in args.seeds:
        corners = {s: corner_values(runs[seed, s]["front"]) for s in SCHEDULERS}
        line = "  ".join(f"{s} ({c[0]:.3f}, {c[1]:.3f})" for s, c in corners.items())
        kept = all(m >= a - 1e-9 for m, a in zip(corners["moasha"], corners["asha"]))
        print(f"  seed {seed}: {line}  -> MO-ASHA reaches ASHA's corners: {'yes' if kept else 'no'}")


def _mean_time(runs: dict, seeds: list[int], scheduler: str, share: float) -> str:
    """Mean seconds to reach `share` of the same seed's FIFO final hypervolume; (k/n) when only k
    of the n seeds got there."""
    reach = [time_to(runs[s, scheduler]["curve"], share * runs[s, "fifo"]["final"]) for s in seeds]
    reached = [t for t in reach if t is not None]
    return (f"{statistics.mean(reached):.0f}" if reached else "never") + (
        f" ({len(reached)}/{len(reach)})" if len(reached) < len(reach) else "")


def corner_values(front) -> tuple[float, float]:
    points = np.asarray(front, dtype=float).reshape(-1, 2)
    return (float(points[:, 0].max()), float(points[:, 1].max())) if len(points) else (0.0, 0.0)


def plot(args, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(SCHEDULERS, ("tab:gray", "tab:blue", "tab:red")))
    styles = dict(zip(args.seeds, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for (seed, scheduler), r in runs.items():
        t, epochs, hv = zip(*r["curve"])
        label = f"{scheduler}, seed {seed}"
        axes[0].step(t, hv, where="post", color=colours[scheduler], ls=styles.get(seed, "-"), label=label)
        axes[1].step(epochs, hv, where="post", color=colours[scheduler], ls=styles.get(seed, "-"))
    finals = [runs[s, "fifo"]["final"] for s in args.seeds]
    # The start (no front yet) would squash what differs: show from a little below 95% of FIFO.
    for ax in axes:
        ax.set_ylim(0.93 * min(finals), 1.004 * max(r["final"] for r in runs.values()))
        for seed in args.seeds:
            ax.axhline(0.99 * runs[seed, "fifo"]["final"], color="tab:gray", ls=styles.get(seed, "-"), lw=0.6)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("wall time since the sweep started (s)")
    axes[1].set_xlabel("epochs trained, all trials")
    axes[0].set_ylabel("hypervolume of the sweep's front (seen, unseen)")
    axes[0].legend(fontsize=7, ncol=len(SCHEDULERS))
    fig.suptitle(f"{len(args.seeds)} seed(s), {args.num_samples} trials, up to {args.epochs} epochs, grace {args.grace}, "
                 f"eta {args.eta} (thin lines: 99% of FIFO's final, per seed)", fontsize=9)
    fig.tight_layout()
    with atomic_file(Path(args.out)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
