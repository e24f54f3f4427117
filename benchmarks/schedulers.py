"""Early stopping on one scalar or on the front: FIFO at full budget, ASHA on each trial's front
hypervolume, and MO-ASHA (hiertune.moasha), on the same space, budget and seeds.

    python benchmarks/schedulers.py [--seeds 0 1 2] [--num-samples 12] [--epochs 9] [--grace 1]
        [--eta 3] [--cpus-per-trial 1] [--synthetic] [--frozen] [--out schedulers.png] [--workdir DIR]

Each (seed, scheduler) is one `run_sweep` of the 3-block CNN (width 16, 64 px) with post-hoc
thresholds, on the competition data and the Tiny ImageNet outliers from /work/shared (or the
synthetic default with --synthetic). The seed is Optuna's, so the three schedulers draw the same
first configurations (TPE samples its first 10 at random). From every trial's reported results
(Ray's result.json: a timestamp and the epoch's own front) it rebuilds the sweep's front over
time, as the union of each trial's latest front, and prints per scheduler: the final front's
hypervolume, the wall time, the epochs trained, the time to reach 95% of FIFO's final
hypervolume (same seed), and how many stopped trials held a point of their rung's front, or
one of its two corners (highest seen, highest unseen), when they were stopped. The plot is the
front's hypervolume against wall time. Run it on an otherwise idle machine.
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

from hiertune.data.cache import default_cache_root
from hiertune.novelty.metrics import hypervolume_2d
from hiertune.space import load_space
from hiertune.sweep.moasha import nondominated_levels
from hiertune.sweep.place import SweepPlace
from hiertune.sweep.run import run_sweep
from hiertune.sweep.state import load_trials
from hiertune.training.loop import FRONT_KEY

SCHEDULERS = ("fifo", "asha", "moasha")
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


def run(args, seed: int, scheduler: str, tmp: Path) -> dict:
    name = f"{scheduler}-{seed}"
    path = tmp / f"{name}.yaml"
    data, outliers = (None, None) if args.synthetic else (DATA, OUTLIERS)
    path.write_text((FROZEN_SPACE if args.frozen else SPACE).format(epochs=args.epochs, samples=args.num_samples, seed=seed, scheduler=scheduler,
                                 grace=args.grace, eta=args.eta, cpus=args.cpus_per_trial,
                                 data=yaml.safe_dump(data).split("\n")[0],
                                 outliers=yaml.safe_dump(outliers).split("\n")[0]))
    start = time.time()
    summary = run_sweep(load_space(path), SweepPlace.resolve(name, str(tmp / "sweeps"), None), default_cache_root())
    wall = time.time() - start  # Ray's start and the data included, as in the curve's clock
    sweep_dir = Path(summary["dir"])
    trials = load_trials(sweep_dir)
    events = results(sweep_dir / "tune")
    curve = front_over_time(events, start)
    return {"curve": curve, "final": hypervolume_2d([(p["seen"], p["unseen"]) for p in summary["front"]]),
            "wall": wall, "epochs": sum(t.epochs for t in trials),
            "front": [(p["seen"], p["unseen"]) for p in summary["front"]],
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


def front_over_time(events: list[dict], start: float) -> list[tuple[float, float]]:
    latest: dict[str, np.ndarray] = {}
    curve = [(0.0, 0.0)]
    for e in events:
        latest[e["trial"]] = e["front"]
        curve.append((e["time"] - start, hypervolume_2d(np.concatenate(list(latest.values())))))
    return curve


def dropped(events: list[dict], stopped: set[str]) -> dict[str, int]:
    """Stopped trials that, at the epoch they were stopped, held a point of the front of every
    trial that had reached that epoch by then (as the scheduler saw it), or one of its corners."""
    last = {}
    for e in events:
        if e["trial"] in stopped:
            last[e["trial"]] = e
    on_front = corner = 0
    for trial, e in last.items():
        rung = [o for o in events if o["t"] == e["t"] and o["time"] <= e["time"] and o["trial"] != trial]
        others = np.concatenate([o["front"] for o in rung]) if rung else np.empty((0, 2))
        points = np.concatenate([e["front"], others])
        top = points[nondominated_levels(points) == 0]
        own = {tuple(p) for p in e["front"]} & {tuple(p) for p in top}
        # A corner: the front's highest-seen or highest-unseen point, held by this trial alone.
        corners = {tuple(top[top[:, k].argmax()]) for k in (0, 1)}
        on_front += bool(own)
        corner += bool((own & corners) - {tuple(p) for p in others})
    return {"stopped": len(stopped), "on_front": on_front, "corner": corner}


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, hv in curve if hv >= target), None)


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
    args = parser.parse_args()

    runs: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for scheduler in SCHEDULERS:
                runs[seed, scheduler] = run(args, seed, scheduler, work)
                r = runs[seed, scheduler]
                print(f"seed {seed} {scheduler:6s}: hypervolume {r['final']:.4f}  wall {r['wall']:.0f} s  "
                      f"epochs {r['epochs']}", flush=True)
    report(args, runs)
    plot(args, runs)


def report(args, runs: dict) -> None:
    print(f"\n{len(args.seeds)} seed(s) x {args.num_samples} trials x up to {args.epochs} epochs "
          f"(grace {args.grace}, eta {args.eta}); data: {'synthetic' if args.synthetic else DATA}")
    print(f"{'scheduler':10s} {'final HV':>16s} {'wall s':>8s} {'epochs':>7s} {'to 95% FIFO s':>14s} "
          f"{'stopped':>8s} {'on front':>9s} {'corner':>7s}")
    for scheduler in SCHEDULERS:
        rs = [runs[s, scheduler] for s in args.seeds]
        hv = [r["final"] for r in rs]
        reach = [time_to(r["curve"], 0.95 * runs[s, "fifo"]["final"]) for s, r in zip(args.seeds, rs)]
        reached = [t for t in reach if t is not None]
        to95 = (f"{statistics.mean(reached):.0f}" if reached else "never") + (
            f" ({len(reached)}/{len(reach)})" if len(reached) < len(reach) else "")
        drops = {k: sum(r["drops"][k] for r in rs) for k in ("stopped", "on_front", "corner")}
        spread = f" ± {statistics.stdev(hv):.4f}" if len(hv) > 1 else ""
        print(f"{scheduler:10s} {statistics.mean(hv):8.4f}{spread:>8s} {statistics.mean(r['wall'] for r in rs):8.0f} "
              f"{statistics.mean(r['epochs'] for r in rs):7.1f} {to95:>14s} {drops['stopped']:8d} "
              f"{drops['on_front']:9d} {drops['corner']:7d}")
    print("\nfront corners per seed (highest seen, highest unseen on the final front):")
    for seed in args.seeds:
        corners = {s: corner_values(runs[seed, s]["front"]) for s in SCHEDULERS}
        line = "  ".join(f"{s} ({c[0]:.3f}, {c[1]:.3f})" for s, c in corners.items())
        kept = all(m >= a - 1e-9 for m, a in zip(corners["moasha"], corners["asha"]))
        print(f"  seed {seed}: {line}  -> MO-ASHA reaches ASHA's corners: {'yes' if kept else 'no'}")


def corner_values(front: list[tuple[float, float]]) -> tuple[float, float]:
    points = np.asarray(front, dtype=float).reshape(-1, 2)
    return (float(points[:, 0].max()), float(points[:, 1].max())) if len(points) else (0.0, 0.0)


def plot(args, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(SCHEDULERS, ("tab:gray", "tab:blue", "tab:red")))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (seed, scheduler), r in runs.items():
        t, hv = zip(*r["curve"])
        ax.step(t, hv, where="post", color=colours[scheduler], alpha=0.8,
                label=scheduler if seed == args.seeds[0] else None)
    for seed in args.seeds:
        ax.axhline(0.95 * runs[seed, "fifo"]["final"], color="tab:gray", ls=":", lw=0.8)
    ax.set_xlabel("wall time since the sweep started (s)")
    ax.set_ylabel("hypervolume of the sweep's front (seen, unseen)")
    ax.set_title(f"{len(args.seeds)} seed(s), {args.num_samples} trials, up to {args.epochs} epochs "
                 f"(dotted: 95% of FIFO's final)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
