"""`hiertune sweep`: a search space run on Ray Tune with Optuna and ASHA, recorded in MLflow,
ending in the Pareto front.

Layout: `<storage>/<name>/` holds `trials.json`, `pareto.csv`/`pareto.png`, the learning curves
and `mlflow_runs.json`; Ray Tune's own state and checkpoints are in its `tune/` folder, kept
apart because Ray syncs its staged copy of that folder back over whatever else is in it. By
default the MLflow store (`mlflow.db`, `mlartifacts/`) sits beside the sweeps in `<storage>/`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hiertune.data.bundle import load_bundle
from hiertune.errors import UserError
from hiertune.faults import FAILURE_KEY
from hiertune.pareto import STATUSES, TrialRecord, compute_front, front_points, save_trials, write_front
from hiertune.space import SearchSpace
from hiertune.state import SWEEP_JSON, check_ray_state, read_sweep_json, write_sweep_json

log = logging.getLogger("hiertune")


@dataclass(frozen=True)
class SweepPlace:
    root: Path  # the storage root: every sweep's folder is in it
    name: str
    mlflow_uri: str

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def tune_dir(self) -> Path:
        return self.dir / "tune"

    @classmethod
    def resolve(cls, name: str, storage: str | None, mlflow_uri: str | None) -> "SweepPlace":
        root = Path(storage or "sweeps").resolve()
        return cls(root, name, mlflow_uri or f"sqlite:///{root / 'mlflow.db'}")

    def artifact_location(self) -> str | None:
        # A local SQLite store keeps its artifacts beside it; a server decides for itself.
        return (self.root / "mlartifacts").as_uri() if self.mlflow_uri.startswith("sqlite:") else None


def run_sweep(space: SearchSpace, place: SweepPlace, cache_root: Path, address: str | None = None,
              resume: bool = False) -> dict:
    import ray

    from hiertune.tracking import SweepRecorder

    started = (place.tune_dir / "tuner.pkl").exists()
    if resume and not started:
        raise UserError(f"{place.dir}: no sweep to resume here")
    if started and not resume:
        raise UserError(f"sweep {place.name!r} already exists in {place.root}; pass --resume to continue it "
                        "or --name for a new one")
    if resume:
        read_sweep_json(place.dir)
        check_ray_state(place.tune_dir)
    base = space.trial_config()
    bundle = load_bundle(base.data, base.outliers, base.image_size, base.split_config(), cache_root)
    _check_outlier_ranges(space, len(bundle.splits.outlier_pool))
    place.dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_sweep_json(place.dir, {"space": str(space.path), "family": space.family,
                                     "sampled_thresholds": space.samples_thresholds})
    # Before Ray starts: the trial → run map must be readable, and the MLflow store reachable.
    recorder = SweepRecorder(place.mlflow_uri, place.name, place.dir, place.artifact_location())

    # Trials in worker processes must not oversubscribe the CPUs: each sets torch threads to
    # its own CPU count (run_trial), and the libraries' own pools follow.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(space.resources.cpus_per_trial))))
    # Every trial checkpoints every epoch by design; Ray's warning about frequent state
    # snapshots would repeat all sweep long.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A trial's final failure is reported as a result without metrics (hiertune.trainable);
    # Ray's check that every result carries the scheduler's metric would reject it.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    own_ray = not ray.is_initialized()
    if own_ray:
        # "local" starts a private Ray even when a `ray start` cluster runs on this machine,
        # which ray.init(address=None) would silently join.
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}})
    if address is None and space.resources.gpus_per_trial and not ray.cluster_resources().get("GPU"):
        # A local machine without a GPU would leave GPU-requesting trials pending forever; a
        # cluster (address given) may still add GPU nodes through its autoscaler.
        log.warning("no GPU on this machine: running trials on %s CPU(s) each, without gpus_per_trial %s",
                    space.resources.cpus_per_trial, space.resources.gpus_per_trial)
        space = space.with_overrides({"resources.gpus_per_trial": 0})
    try:
        return _run(space, place, bundle, recorder, resume)
    finally:
        if own_ray:
            ray.shutdown()


def _run(space: SearchSpace, place: SweepPlace, bundle, recorder, resume: bool) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from hiertune.search import FidelityAwareOptunaSearch, objectives
    from hiertune.tracking import MlflowSweepCallback
    from hiertune.trainable import FinalFailures, tune_trainable

    recorder.start_parent(
        params={**{f"fixed.{k}": v for k, v in space.fixed.items()}, **_settings(space)},
        tags={"hiertune.family": space.family, "hiertune.space": str(space.path)})
    resources = {"cpu": space.resources.cpus_per_trial, "gpu": space.resources.gpus_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, bundle=bundle, cpus_per_trial=space.resources.cpus_per_trial),
        resources)

    start = time.perf_counter()
    if resume:
        # Finished trials stay finished and failed ones failed: a failure that Ray's retries
        # (tune.max_failures) did not mend, or a final one, would only fail again.
        tuner = tune.Tuner.restore(str(place.tune_dir), trainable=trainable)
    else:
        callback = MlflowSweepCallback(place.mlflow_uri, place.name, place.dir, space.family,
                                       space.scheduler.max_t)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=FidelityAwareOptunaSearch(space),
                scheduler=ASHAScheduler(time_attr="training_iteration", metric=objectives(space)[0], mode="max",
                                        max_t=space.scheduler.max_t, grace_period=space.scheduler.grace_period,
                                        reduction_factor=space.scheduler.reduction_factor),
                num_samples=space.tune.num_samples,
                max_concurrent_trials=space.tune.max_concurrent or None,
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                reuse_actors=True,  # a new trial skips the worker start-up (importing torch, timm)
            ),
            run_config=tune.RunConfig(
                name=place.tune_dir.name, storage_path=str(place.dir), callbacks=[FinalFailures(), callback],
                verbose=1,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=space.tune.max_failures),
            ),
        )
    grid = tuner.fit()
    wall = time.perf_counter() - start

    trials = [_record(r, space) for r in grid]
    save_trials(place.dir, trials)
    recorder.reconcile(trials)
    summary = finish(place, trials, recorder)
    counts = {s: sum(t.status == s for t in trials) for s in STATUSES}
    return {"name": place.name, "dir": str(place.dir), "mlflow_uri": place.mlflow_uri, "trials": counts,
            "wall_seconds": wall, **summary}


def finish(place: SweepPlace, trials: list[TrialRecord], recorder) -> dict:
    """Front from the stored per-trial results, written and logged to the parent run. Every
    input is read before anything is written, so a damaged one leaves the outputs as they were."""
    from hiertune.plots import plot_sweep_curves

    points = front_points(trials, sampled_thresholds(place))
    histories = _histories(trials)
    front = compute_front(points)
    csv_path, png_path = write_front(place.dir, place.name, points, front)
    parent = recorder.state["parent"]
    for path in (csv_path, png_path, place.dir / "trials.json"):
        recorder.client.log_artifact(parent, str(path))
    if histories:
        curves = place.dir / "learning_curves.png"
        plot_sweep_curves(histories, curves, place.name)
        recorder.client.log_artifact(parent, str(curves))
    best = max(front, key=lambda p: p["seen"] + p["unseen"]) if front else None
    if best:
        recorder.log_metrics(parent, {"front_size": len(front), "best_seen": best["seen"],
                                      "best_unseen": best["unseen"]}, 0)
    recorder.client.set_terminated(parent, "FINISHED")
    return {"front": front, "points": len(points), "pareto_csv": str(csv_path), "pareto_png": str(png_path)}


def _histories(trials: list[TrialRecord]) -> dict[str, list[dict]]:
    from hiertune.tracking import trial_history

    histories = {}
    for t in trials:
        try:
            if history := trial_history(t.checkpoint):
                histories[t.name] = history
        except UserError as exc:
            if t.status != "failed":
                raise
            # A failed trial's damaged checkpoint may be what failed it; it costs only its curve.
            log.warning("no learning curves for failed trial %s: %s", t.name, exc)
    return histories


def sampled_thresholds(place: SweepPlace) -> bool:
    return read_sweep_json(place.dir)["sampled_thresholds"] if (place.dir / SWEEP_JSON).exists() else False


def _record(result, space: SearchSpace) -> TrialRecord:
    metrics = result.metrics or {}
    trial_id = metrics.get("trial_id") or Path(result.path).name
    failure = metrics.get(FAILURE_KEY)
    # A final failure's report is one result past the trial's last epoch.
    epochs = int(metrics.get("training_iteration", 0)) - (1 if failure else 0)
    error = failure or (str(result.error).strip().splitlines()[-1][:500] if result.error else None)
    if error is not None:
        status = "failed"
    elif not metrics.get("done"):  # the sweep stopped (Ctrl+C) before this trial finished
        status = "interrupted"
    else:
        status = "completed" if epochs >= space.scheduler.max_t else "stopped"
    sampled = {p.name for p in space.sampled}
    params = {k: v for k, v in (result.config or {}).items() if k in sampled}
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    return TrialRecord(trial_id, f"trial_{trial_id}", status, epochs, params,
                       Path(result.checkpoint.path) if result.checkpoint else None, clean, error)


def _check_outlier_ranges(space: SearchSpace, pool: int) -> None:
    """An outlier_count range beyond the pool would fail trials hours in; fail now."""
    for p in space.sampled:
        if p.name == "outlier_count" and p.high > pool:
            raise UserError(f"{space.path}: search.outlier_count high {int(p.high)} exceeds the outlier training "
                            f"pool ({pool} images); lower it or search outlier_fraction")
    if space.fixed.get("outlier_count") and space.fixed["outlier_count"] > pool:
        raise UserError(f"{space.path}: fixed.outlier_count {space.fixed['outlier_count']} exceeds the outlier "
                        f"training pool ({pool} images)")


def _settings(space: SearchSpace) -> dict:
    return {**{f"tune.{k}": v for k, v in space.tune.__dict__.items()},
            **{f"scheduler.{k}": v for k, v in space.scheduler.__dict__.items()},
            **{f"resources.{k}": v for k, v in space.resources.__dict__.items()},
            **{f"search.{p.name}": _describe(p) for p in space.params}}


def _describe(p) -> str:
    if p.type == "categorical":
        return f"categorical {list(p.choices)}" + (" (post-hoc)" if p.posthoc else "")
    scale = " log" if p.log else ""
    return f"{p.type}{scale} [{p.low}, {p.high}]" + (" (post-hoc)" if p.posthoc else "")
