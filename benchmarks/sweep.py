"""Sweep figures: orchestration overhead, and post-hoc vs Optuna-sampled thresholds.

    python benchmarks/sweep.py [--trials 8] [--epochs 2] [--data DIR]
    python benchmarks/sweep.py --cached --trials 10 --epochs 4 --only a [--data DIR --outliers DIR]

--cached: the trials are the dualhead space's frozen-backbone ones (pretrained lite0, finetune
linear, 128 px) on cached features, trials of about a second per epoch where orchestration weighs
most (target ≤ 1.10); the features come from the disk cache, warmed once before either side is timed.
--only c (with --cached): one such sweep, then `export-best` of its knee, twice: the first as a
user's first export (retraining on the sweep's cached features, predicting the test set from the
features the sweep put in the cache unless an earlier run did), the second finding the point
exported already with these settings (reused, not retrained). Target: export ≤ 0.3× the sweep's
wall time. Point HIERTUNE_CACHE_DIR at a cache without the test set's features to see the sweep
pay for them.

(a) N short trials through `run_sweep` (Ray Tune + Optuna + ASHA + MLflow + checkpoints to
    storage) against the same trials run one after another by `run_trial` in a bare loop;
    ratio of wall times, target ≤ 1.15 at N = 8 on 2 CPUs. ASHA's grace period is set to max_t so
    both sides do the same epochs, and the sweep runs one trial at a time on both CPUs, as the
    loop does; a second sweep packs two 1-CPU trials side by side. The loop runs the configs Tune
    gave the sweep's trials, with the sweep's CPUs per trial, rungs and post-hoc grid. The sweep's
    probes (what an epoch costs, the source separability) are measured by the first sweep on the
    data and read from the cache root after, as a user's next sweep reads them: the benchmark
    says which ones its sweep measured. Then what any sweep pays once here, whatever its trials:
    a private Ray's start and stop, and a fresh worker's imports, as a share of the loop.
(b) The hypervolume of the front at equal trial count when thresholds and score are post-hoc
    (every trial contributes its whole τ grid) vs sampled by Optuna (one point per trial).
Runs on the synthetic default unless --data is given. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hiertune.cli import run_script
from hiertune.data.bundle import load_bundle
from hiertune.sweep.results import SweepResult
from hiertune.training.records import EpochMetrics
from hiertune.data.cache import default_cache_root
from hiertune.export.export import export_best
from hiertune.novelty.metrics import hypervolume_2d
from hiertune.sweep.space import load_space
from hiertune.sweep.front import Pick
from hiertune.sweep.run import SweepPlace, run_sweep
from hiertune.sweep.state import load_trials, read_meta
from hiertune.training.config import TrialConfig
from hiertune.training.features import FeatureStore
from hiertune.training.loop import precompute_features, run_trial

# Thresholds and score post-hoc (or sampled), the schedule and the resources: the same for both spaces.
RUN = """
  tau_super: {{type: float, low: 0.0, high: 1.0, posthoc: {posthoc}}}
  tau_sub: {{type: float, low: 0.0, high: 1.0, posthoc: {posthoc}}}
  novelty_score: {{type: categorical, choices: [{scores}], posthoc: {posthoc}}}
tune: {{num_samples: {trials}, sampler: tpe, seed: 0}}
scheduler: {{max_t: {epochs}, grace_period: {grace}, reduction_factor: 2}}
resources: {{cpus_per_trial: {cpus}}}
"""
SPACE = """
family: cnn
fixed: {{epochs: {epochs}, batch_size: 64, cnn_width: 16, data: {data}, outliers: {outliers}}}
search:
  lr: {{type: float, low: 1.0e-3, high: 2.0e-2, log: true}}
  dropout: {{type: float, low: 0.0, high: 0.3}}
  outlier_fraction: {{type: float, low: 0.2, high: 1.0}}""" + RUN.replace(
    "{scores}", "msp, energy, maxlogit, mahalanobis, knn")
CACHED = """
family: dualhead
fixed: {{epochs: {epochs}, batch_size: 64, backbone: tf_efficientnet_lite0, pretrained: true, finetune: linear,
        image_size: 128, shifted_weight: 0.5, data: {data}, outliers: {outliers}}}
search:
  lr: {{type: float, low: 1.0e-4, high: 3.0e-3, log: true}}
  kl_alpha: {{type: float, low: 0.0, high: 1.0}}
  outlier_fraction: {{type: float, low: 0.1, high: 1.0}}""" + RUN.replace(
    "{scores}", "msp, energy, maxlogit, mahalanobis, knn, gen, rmds, fdbd, scale, vim")


def make_space(tmp: Path, name: str, template: str = SPACE, **kw):
    path = tmp / f"{name}.yaml"
    path.write_text(template.format(**kw))
    return load_space(path)


def sweep(space, tmp: Path, name: str, cache: Path) -> tuple[float, SweepResult]:
    start = time.perf_counter()
    result = run_sweep(space, SweepPlace.resolve(name, str(tmp / "sweeps"), None), cache)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default=None)
    parser.add_argument("--outliers", default=None)
    parser.add_argument("--only", choices=("a", "b", "c"), help="run one part")
    parser.add_argument("--cached", action="store_true", help="frozen-backbone trials on cached features")
    args = parser.parse_args()
    cache = default_cache_root()
    common = dict(epochs=args.epochs, trials=args.trials, data=yaml.safe_dump(args.data).split("\n")[0],
                  outliers=yaml.safe_dump(args.outliers).split("\n")[0], template=CACHED if args.cached else SPACE)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "a"):
            overhead(args, common, tmp, cache)
        if args.only in (None, "b"):
            thresholds(args, common, tmp, cache)
        if args.only == "c":
            export(args, common, tmp, cache)


def overhead(args, common: dict, tmp: Path, cache: Path) -> None:
    """(a) same trials, same epochs, one at a time on both CPUs."""
    one = make_space(tmp, "one", posthoc="true", grace=args.epochs, cpus=2, **common)
    base = one.trial_config()
    if args.cached:  # both sides then read the features from the disk cache
        bundle = load_bundle(base.data, base.outliers, base.data_size, base.split_config(), cache,
                             base.shift_config())
        precompute_features(base, bundle, FeatureStore(cache), cpus=2)
    probes = _probe_files(cache)
    t_sweep, res = sweep(one, tmp, "one", cache)
    measured = sorted(p.split("-")[0] for p in _probe_files(cache) - probes)
    trials = load_trials(Path(res.dir))
    meta = read_meta(Path(res.dir))
    # The sweep's own trials: each as Tune gave it its config, with the sweep's CPUs per trial (its
    # torch threads), rungs and post-hoc grid, one after another in this process, writing the
    # checkpoints a sweep's trial writes.
    start = time.perf_counter()
    bundle = load_bundle(base.data, base.outliers, base.data_size, base.split_config(), cache, base.shift_config())
    store = FeatureStore(cache)  # as the sweep's trials share the driver's features
    for t in trials:
        run_trial(TrialConfig.from_dict(t.config), bundle, lambda m, c: None, cpus=meta.cpus_per_trial,
                  features=store, rungs=one.scheduler.rungs, posthoc=one.posthoc_grid(), complete=False)
    t_bare = time.perf_counter() - start
    threads = {TrialConfig.from_dict(t.config).torch_threads(meta.cpus_per_trial) for t in trials}
    target = 1.10 if args.cached else 1.15
    print(f"(a) {len(trials)} trials x {args.epochs} epochs, the same configs on both sides "
          f"(torch threads per trial: {sorted(threads)})")
    print(f"    bare loop, one after another in one process           {t_bare:7.1f} s")
    print(f"    hiertune sweep, {meta.cpus_per_trial:g} CPU(s) per trial, "
          f"{int(len(os.sched_getaffinity(0)) // meta.cpus_per_trial)} at a time     {t_sweep:7.1f} s   ratio {t_sweep / t_bare:5.2f}  "
          f"(target <= {target}: {'OK' if t_sweep / t_bare <= target else 'ABOVE'})")
    cached = "none (read from the cache an earlier sweep on this data wrote)"
    print(f"      probes measured by this sweep: {', '.join(measured) or cached}")
    # Where the sweep's time went: Tune's run of the trials, and what comes before and after it
    # (Ray's start, the shared features, the cost probe, MLflow; the front, plots and importance).
    print(f"      of which Ray Tune running the trials {res.wall_seconds:6.1f} s, before and after it "
          f"{t_sweep - res.wall_seconds:6.1f} s")
    last = [EpochMetrics.from_flat(t.metrics) for t in trials if t.status != "failed"]
    if last:
        ray_s = statistics.mean(t.metrics["time_this_iter_s"] for t in trials if t.status != "failed")  # Ray's own
        print(f"    trials' last epoch, mean: {ray_s:.2f} s in all, training "
              f"{statistics.mean(m.epoch_seconds for m in last):.2f} s, scorer fit "
              f"{statistics.mean(m.scorer_fit_seconds for m in last):.2f} s, "
              f"grid {statistics.mean(m.posthoc_seconds for m in last):.2f} s")
        inputs = [m.feature_seconds for m in last]
        print(f"    trials' cached inputs (feature_seconds), in Ray's workers: mean {statistics.mean(inputs):.2f} s, "
              f"max {max(inputs):.2f} s")
    fixed_costs(t_bare)
    if not args.cached:
        packed = make_space(tmp, "packed", posthoc="true", grace=args.epochs, cpus=1, **common)
        t_packed, _ = sweep(packed, tmp, "packed", cache)
        print(f"    hiertune sweep, 2 x 1-CPU trials {t_packed:6.1f} s   ratio {t_packed / t_bare:5.2f}")



def fixed_costs(t_bare: float) -> None:
    """What a sweep pays once whatever its trials, against the 10% the target allows over the loop:
    a private Ray's start and stop (as run.ray_session starts it), and a fresh worker importing
    what a trial runs (torch, timm, hiertune), which Tune's first trial waits for."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    ray.shutdown()
    t_ray = time.perf_counter() - start
    # A Ray worker has Ray imported when a trial starts: only what the trainable adds counts.
    code = ("import time, ray; start = time.perf_counter(); import hiertune.sweep.trainable; "
            "print(time.perf_counter() - start)")
    t_import = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                    text=True).stdout.split()[-1])
    print(f"    paid once by any sweep here: Ray's start and stop {t_ray:.1f} s, a worker's imports "
          f"{t_import:.1f} s: {(t_ray + t_import) / t_bare:.0%} of the loop (the target allows 10%)")


def _probe_files(cache: Path) -> set[str]:
    return {p.name for p in (cache / "probes").glob("*.json")}


def export(args, common: dict, tmp: Path, cache: Path) -> None:
    """(c) export-best of the knee against the sweep that found it."""
    space = make_space(tmp, "found", posthoc="true", grace=max(1, args.epochs // 2), cpus=2, **common)
    probes = _probe_files(cache)
    t_sweep, res = sweep(space, tmp, "found", cache)
    measured = sorted(p.split("-")[0] for p in _probe_files(cache) - probes)
    place = SweepPlace.resolve("found", str(tmp / "sweeps"), None)
    print(f"(c) sweep of {args.trials} trials x <= {args.epochs} epochs: {t_sweep:.1f} s "
          f"(probes it measured: {', '.join(measured) or 'none, read from the cache'})")
    for attempt in ("first", "second"):
        start = time.perf_counter()
        out = export_best(place, Pick.parse("knee"), 1, cache)
        t_export = time.perf_counter() - start
        e = out.exports[0]
        ok = "OK" if t_export / t_sweep <= 0.3 else "ABOVE"
        print(f"    export-best knee, {attempt}: {t_export:6.1f} s = {t_export / t_sweep:.2f}x the sweep "
              f"(target <= 0.3: {ok}); retraining {e.retrain_seconds:.1f} s, {e.rows or 0} test rows")


def thresholds(args, common: dict, tmp: Path, cache: Path) -> None:
    """(b) post-hoc vs sampled thresholds, ASHA on for both, equal trial count."""
    grace = max(1, args.epochs // 2)
    _, post = sweep(make_space(tmp, "posthoc", posthoc="true", grace=grace, cpus=1, **common), tmp,
                    "posthoc", cache)
    _, samp = sweep(make_space(tmp, "sampled", posthoc="false", grace=grace, cpus=1, **common), tmp,
                    "sampled", cache)
    hv_post = hypervolume_2d([(p.seen, p.unseen) for p in post.front.front])
    hv_samp = hypervolume_2d([(p.seen, p.unseen) for p in samp.front.front])
    print(f"(b) {args.trials} trials each")
    print(f"    post-hoc thresholds: front of {len(post.front.front)} points, hypervolume {hv_post:.4f}")
    print(f"    Optuna-sampled:      front of {len(samp.front.front)} points, hypervolume {hv_samp:.4f}")
    print(f"    ratio post-hoc / sampled {hv_post / hv_samp:.3f}")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
