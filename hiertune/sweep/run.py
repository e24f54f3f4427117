"""`hiertune sweep`: a search space run on Ray Tune with Optuna and ASHA, recorded in MLflow,
ending in the Pareto front.

Layout: `<storage>/<name>/` holds `trials.json`, `pareto.csv`/`pareto.png`, the learning curves
and `mlflow_runs.json`; Ray Tune's own state and checkpoints are in its `tune/` folder, kept
apart because Ray syncs its staged copy of that folder back over whatever else is in it. By
default the MLflow store (`mlflow.db`, `mlartifacts/`) sits beside the sweeps in `<storage>/`.
With `<storage>` on S3 the same layout is there (Ray Tune persists to it through a pyarrow
S3FileSystem, from every node), the driver keeps a working copy of the sweep's own files (see
SweepPlace), and a default SQLite store stays on the driver's disk with its artifacts on S3.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import torch
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from hiertune import secrets, storage
from hiertune.data.bundle import load_bundle
from hiertune.training.config import TrialConfig
from hiertune.errors import SweepInterrupted, UserError
from hiertune.fsutil import check_writable
from hiertune.novelty.posthoc import GROUP_KEYS
from hiertune.sweep.space import SearchSpace
from hiertune.sweep.front import Pick, front_files
from hiertune.sweep.importance import param_importances, write_importances
from hiertune.sweep.mlstore import sqlite_path
from hiertune.sweep.place import SweepPlace
from hiertune.sweep.plots import plot_shifted_examples, plot_sweep_curves
from hiertune.sweep.reporter import ConsoleReporter
from hiertune.sweep.schedulers import Objectives
from hiertune.sweep.search import OPTUNA_DB, FidelityAwareOptunaSearch, objectives, study_url
from hiertune.sweep import cost, resources
from hiertune.sweep.ending import INTERRUPTED, EndWatch, how_it_ended
from hiertune.sweep.resume import check_same_data, data_inputs
from hiertune.sweep.records import ITERATION, SweepFront, TrialOutcome
from hiertune.sweep.results import Importance, SweepResult
from hiertune.sweep.state import (
    ENDED_JSON,
    SWEEP_JSON,
    TRIALS_JSON,
    SweepMeta,
    TrialCounts,
    TrialRecord,
    check_ray_state,
    find_meta,
    load_trials,
    read_meta,
    save_trials,
    write_ended,
    write_meta,
)
from hiertune.sweep.sweeplog import sweep_log
from hiertune.sweep.tracking import MlflowSweepCallback, SweepRecorder
from hiertune.sweep.trainable import FinalFailures, tune_trainable
from hiertune.training.checkpoint import read_history
from hiertune.training.features import FeatureStore
from hiertune.training.loop import precompute_features
from hiertune.training.records import FRONT, EpochMetrics
from hiertune.training.source_probe import source_separability

log = logging.getLogger("hiertune")


def run_sweep(space: SearchSpace, place: SweepPlace, cache_root: Path, address: str | None = None,
              resume: bool = False, verbose: bool = False, overrides: dict | None = None,
              remeasure: bool = False) -> SweepResult:
    """`overrides`: the command line's settings over the space file, recorded for `--resume`.
    `remeasure`: what an epoch costs here is measured again, not read from an earlier sweep's
    figures (hiertune.sweep.cost.measure)."""
    Pick.parse(space.pick)  # a misspelt pick fails now, not after the sweep
    place.prepare()
    started = place.started()
    if resume and not started:
        raise UserError(f"{place.uri}: no sweep to resume here")
    if started and not resume:
        raise UserError(f"sweep {place.name!r} already exists in {place.root}; pass --resume to continue it "
                        "or --name for a new one")
    meta = read_meta(place.dir) if resume else None
    if resume and not place.remote:  # on S3 Ray reads its state where it is, and a damaged file fails there
        check_ray_state(Path(place.tune_uri))
    fitted = None
    if address is None and not ray.is_initialized():  # this machine: fitted before Ray or the data start
        space, fitted = _fit_resources(space, resources.local_node())
    base = space.trial_config()
    bundle = load_bundle(base.data, base.outliers, base.data_size, base.split_config(), cache_root,
                         base.shift_config())
    if meta is not None:
        check_same_data(meta.inputs, bundle, place.name)
    _check_outlier_ranges(space, bundle.splits)
    # Before anything is written or Ray starts: the trial → run map must be readable, and the
    # MLflow store reachable. A new SQLite store (its folder found writable) has nothing left to
    # refuse, and its tables take MLflow's migrations, seconds: created while Ray starts.
    opening = _open_recorder(place, new_store=not resume and _new_sqlite(place))
    log.info("sweep %s: %s, %d trials; results in %s; MLflow at %s", place.name, space.path, space.tune.num_samples,
             place.uri, secrets.redact_uri(place.mlflow_uri))
    summary = bundle.summary()
    log.info("data %s: %d train / %d validation images, %d outlier validation images, %d pseudo-novel subclasses",
             summary["data"], summary["train"], summary["val"], summary["outlier_val"],
             len(summary["pseudo_novel_subclasses"]))
    if bundle.shifted:  # after the store answers, so that a refusal stays one line
        log.info("seen_shifted validation group: %d images (%s)", len(bundle.shifted.val_rows), bundle.shifted.source)
    place.dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (place.dir / OPTUNA_DB).unlink(missing_ok=True)  # left by an attempt that died before Ray saved state

    # Every trial checkpoints every epoch by design; Ray's warning about frequent state
    # snapshots would repeat all sweep long.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A trial's final failure is reported as a result without metrics (hiertune.sweep.trainable);
    # Ray's check that every result carries the scheduler's metric would reject it.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Of Ray's own per-result loggers only result.json (JsonLoggerCallback, among the callbacks):
    # MLflow records the metrics, and the CSV and TensorBoard copies cost every result its writes.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    with ray_session(address, space.resources.cpus_per_trial), sweep_log(place.dir, verbose):
        recorder = opening.result()
        if fitted is None:
            fitted = resources.fit_connected(space.resources.cpus_per_trial, space.resources.gpus_per_trial, address)
            space = _fitted_space(space, fitted)
        inputs = None if resume else data_inputs(bundle)
        if not resume:
            meta = SweepMeta(str(space.path.resolve()), space.family, space.samples_thresholds,
                             space.resources.cpus_per_trial, space.resources.gpus_per_trial, pick=space.pick,
                             objectives=tuple(_study_objectives(space)), overrides=overrides,
                             cache_dir=str(Path(cache_root).resolve()), inputs=inputs)
            write_meta(place.dir, meta)
            place.publish(place.dir / SWEEP_JSON)
        elif meta.left_out:  # the space its trials were sampled from (and its records name)
            space = cost.without(space, meta.left_out)
        # A local Ray without GPUs runs its tasks on these same CPUs: the driver's own work then
        # runs here, sparing a worker's start (importing torch and timm) and the copies back.
        here = address is None and not fitted.gpus
        features = shared_features(space, bundle, cache_root, here)
        if not resume:
            space, left_out = _cost_plan(space, bundle, features, fitted, here, address is None, inputs, remeasure)
            if left_out:
                write_meta(place.dir, replace(meta, left_out=left_out))
                place.publish(place.dir / SWEEP_JSON)
        return _run(space, place, bundle, features, recorder, resume, verbose)


def _new_sqlite(place: SweepPlace) -> bool:
    db = sqlite_path(place.mlflow_uri)
    return db is not None and not db.exists()


def _open_recorder(place: SweepPlace, new_store: bool) -> Future:
    """The sweep's MLflow recorder: opened now, or (`new_store`) in a thread, its folder checked
    writable first."""
    if not new_store:
        done: Future = Future()
        done.set_result(SweepRecorder(place))
        return done
    check_writable(sqlite_path(place.mlflow_uri), "MLflow store", folder=False)
    pool = ThreadPoolExecutor(1, thread_name_prefix="hiertune-mlflow")
    try:
        return pool.submit(SweepRecorder, place)
    finally:
        pool.shutdown(wait=False)  # its thread ends with its one task


def _fit_resources(space: SearchSpace, node: resources.Node) -> tuple[SearchSpace, resources.Fit]:
    fitted = resources.fit(space.resources.cpus_per_trial, space.resources.gpus_per_trial, node)
    if fitted.changed:
        log.info(fitted.line())
    return _fitted_space(space, fitted), fitted


def _fitted_space(space: SearchSpace, fitted: resources.Fit) -> SearchSpace:
    if not fitted.changed:
        return space
    return space.with_overrides({"resources.cpus_per_trial": fitted.cpus, "resources.gpus_per_trial": fitted.gpus})


def _cost_plan(space: SearchSpace, bundle, features: FeatureStore, fitted: resources.Fit, here: bool, local: bool,
               data: dict, remeasure: bool) -> tuple[SearchSpace, dict[str, list]]:
    """What the space costs here, said before the first trial; with a budget, the space without
    what it cannot afford, and what that is ({axis: values}). `local`: the probe runs on this
    machine, so an earlier sweep's figures for the same kinds, `data` and resources stand
    (hiertune.sweep.cost.measure)."""
    start = time.perf_counter()
    kinds = cost.space_kinds(space)
    costs, measured = cost.measure(kinds, shared_frozen_config(space), bundle, features,
                                   space.resources.cpus_per_trial, space.resources.gpus_per_trial, here,
                                   cost.full_share(space, space.trial_config().epochs), space.posthoc_grid(),
                                   data if local else None, remeasure)
    result = cost.plan(space, kinds, costs, fitted.parallel, measured)
    for line in result.lines:
        log.info(line)
    if result.refusal:
        raise UserError(result.refusal)
    if result.left_out:
        log.info(result.left_out)
    log.debug("cost probe took %.1fs", time.perf_counter() - start)
    return result.space, result.drops


@contextlib.contextmanager
def ray_session(address: str | None, cpus_per_task: float) -> Iterator[None]:
    """Connect to `address`, or start a private local Ray (stopped on exit) when none is given."""
    import ray

    # Tasks in worker processes must not oversubscribe the CPUs: each sets torch threads to
    # its own CPU count (run_trial), and the libraries' own pools follow.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(cpus_per_task))))
    secrets.keep_out_of_ray()
    own_ray = not ray.is_initialized()
    if own_ray:
        # "local" starts a private Ray even when a `ray start` cluster runs on this machine,
        # which ray.init(address=None) would silently join.
        # Ctrl+C reaches every process of the terminal's group, a local Ray's workers included: they
        # leave it to the driver, which stops the trials (their tracebacks would flood the console).
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]},
                              **({} if address else {"worker_process_setup_hook": "hiertune.sweep.ending.worker_setup"})})
    try:
        yield
    finally:
        if own_ray:
            ray.shutdown()


def shared_features(space: SearchSpace, bundle, cache_root: Path, here: bool = False) -> FeatureStore:
    """The frozen-backbone features every frozen trial of the space can read, computed once by a
    Ray task with a trial's device and a node's CPUs (`here`: in this process, on the CPUs a local
    Ray without GPUs would give the task); empty when no trial freezes its backbone. Trials get the
    store through Ray's object store with the bundle; the disk cache serves the other keys."""
    store = FeatureStore(cache_root)
    frozen = shared_frozen_config(space)
    if frozen is None:
        return store
    # Before any trial starts: the largest node's CPUs, which extraction splits its images across.
    cpus = max([space.resources.cpus_per_trial,
                *(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive"))])
    start = time.perf_counter()
    if here:
        threads = torch.get_num_threads()
        try:
            store = precompute_features(frozen, bundle, store, cpus)
        finally:
            torch.set_num_threads(threads)
    else:
        task = ray.remote(precompute_features).options(num_cpus=cpus, num_gpus=space.resources.gpus_per_trial,
                                                       max_retries=0)
        try:
            store = ray.get(task.remote(frozen, bundle, store, cpus))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise UserError(str(exc.cause)) from None
            raise
    log.info("frozen %s features of %d image pool(s) ready in %.1fs", frozen.backbone, len(store.sets),
             time.perf_counter() - start)
    return store


def shared_frozen_config(space: SearchSpace) -> TrialConfig | None:
    """The frozen trial whose features the sweep computes before its trials: the space's base
    config with its backbone frozen; None when no trial can freeze it or cache its features.
    With corrupt_p searched, the training pools' corrupted views too: trials share them."""
    base = space.trial_config()
    if base.cached_views() == 0 or not any(cfg.model_config().backbone_frozen for cfg in _fine_tunings(space, base)):
        return None
    corrupt_p = max([base.corrupt_p, *(p.high for p in space.sampled if p.name == "corrupt_p")])
    # Every frozen trial computes the same features whatever froze it (the key holds no finetune).
    return replace(base, finetune="linear", corrupt_p=corrupt_p)


def _fine_tunings(space: SearchSpace, base: TrialConfig) -> list[TrialConfig]:
    """The base config under each fine-tuning the space can sample, at the smallest
    unfreeze_depth it can sample (partial with 0 stages unfrozen is a frozen backbone too)."""
    finetunes = {base.finetune} | {c for p in space.sampled if p.name == "finetune" for c in p.choices}
    depth = int(min([base.unfreeze_depth, *(v for p in space.sampled if p.name == "unfreeze_depth"
                                            for v in (p.choices or (p.low,)))]))
    return [replace(base, finetune=f, unfreeze_depth=depth) for f in sorted(finetunes)]


def _run(space: SearchSpace, place: SweepPlace, bundle, features, recorder, resume: bool,
         verbose: bool) -> SweepResult:
    recorder.start_parent(
        params={**{f"fixed.{k}": v for k, v in space.fixed.items()}, **_settings(space)},
        tags={"hiertune.family": space.family, "hiertune.sweep.space": str(space.path)})
    _log_shifted(place, bundle, recorder)
    _log_source(space, bundle, features, recorder)
    resources = {"cpu": space.resources.cpus_per_trial, "gpu": space.resources.gpus_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, bundle=bundle, cpus_per_trial=space.resources.cpus_per_trial,
                             features=features.for_trials(), rungs=space.scheduler.rungs,
                             posthoc=space.posthoc_grid()),
        resources)

    storage_path, filesystem = storage.tune_storage(place.uri)
    start = time.perf_counter()
    if resume:
        # Finished trials stay finished and failed ones failed: a failure that Ray's retries
        # (tune.max_failures) did not mend, or a final one, would only fail again.
        tuner = tune.Tuner.restore(f"{storage_path}/tune", trainable=trainable, storage_filesystem=filesystem)
    else:
        posthoc = [p.name for p in space.posthoc]
        callback = MlflowSweepCallback(place, space.family, space.scheduler.max_t, posthoc)
        scheduler, scheduler_callbacks = make_scheduler(space)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=FidelityAwareOptunaSearch(space, place.dir, place.name),
                scheduler=scheduler,
                num_samples=space.tune.num_samples,
                max_concurrent_trials=space.tune.max_concurrent or None,
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                reuse_actors=True,  # a new trial skips the worker start-up (importing torch, timm)
                time_budget_s=space.budget,  # Ray's TimeoutStopper: its state keeps what is left for --resume
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=storage_path, storage_filesystem=filesystem,
                callbacks=[EndWatch(), FinalFailures(), JsonLoggerCallback(), callback, *scheduler_callbacks,
                           LiveTrials(place, space),
                           ConsoleReporter(
                    space.tune.num_samples, space.scheduler.max_t, Pick.parse(space.pick),
                    [p.name for p in space.sampled], space.scheduler.label, space.budget,
                    sampled_thresholds=space.samples_thresholds)],
                verbose=1 if verbose else 0,  # Ray's tables only on request: ConsoleReporter says what happens
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=space.tune.max_failures),
            ),
        )
    with _ray_console(verbose), _pending_trials(space):
        grid = tuner.fit()
    wall = time.perf_counter() - start

    previous = {t.trial_id: t for t in load_trials(place.dir)} if resume and (place.dir / TRIALS_JSON).exists() else {}
    # A trial Tune never started (pending when the sweep stopped) is no record: --resume starts it.
    started = recorder.started_trials()
    trials = [_record(r, space, previous.get(_trial_id(r))) for r in grid if _started(r, started)]
    save_trials(place.dir, trials)
    place.publish(place.dir / TRIALS_JSON)
    recorder.reconcile(trials)
    counts = TrialCounts.of(t.status for t in trials)
    ended = how_it_ended(space.tune.num_samples - counts.ended,
                         space.budget)
    front, importance = finish(place, trials, recorder, space.scheduler.label)
    write_ended(place.dir, ended)
    place.publish(place.dir / ENDED_JSON)
    result = SweepResult(place.name, place.root, place.uri, secrets.redact_uri(place.mlflow_uri), ended, space.budget,
                         counts, space.tune.num_samples - len(trials), space.scheduler.label, wall, front, importance)
    if ended == INTERRUPTED:
        raise SweepInterrupted(result)
    return result


def make_scheduler(space: SearchSpace) -> tuple:
    """The space's early-stopping rule, and the Ray callbacks that carry its state through
    `--resume` (Ray keeps a scheduler's state only as it was first built)."""
    scalar, pair = objectives(space)
    # Post-hoc thresholds: each trial's own front; sampled ones: its one (point_seen, point_unseen).
    ranked = Objectives(scalar, tuple(pair), None if space.samples_thresholds else FRONT)
    return space.scheduler.spec.build(space.scheduler, ranked)


def finish(place: SweepPlace, trials: list[TrialRecord], recorder, stopped_by: str
           ) -> tuple[SweepFront, Importance | None]:
    """The sweep's end: its front written, published and logged to the parent run, which is then
    FINISHED. Every input is read before anything is written, so a damaged one leaves the outputs
    as they were."""
    histories = _histories(trials)
    front = front_files(place, trials)
    written = [Path(front.pareto_csv), Path(front.pareto_png), Path(front.pareto_html)]
    place.publish(*written)
    parent = recorder.parent
    for path in (*written, place.dir / TRIALS_JSON):
        recorder.client.log_artifact(parent, str(path))
    if histories:
        curves = place.dir / "learning_curves.png"
        plot_sweep_curves(histories, {t.name for t in trials if t.status == "stopped"}, curves, place.name,
                          stopped_by=stopped_by)
        place.publish(curves)
        recorder.client.log_artifact(parent, str(curves))
    importance = _importance(place)
    if importance is not None and importance.png:
        recorder.client.log_artifact(parent, importance.png)
    best = front.recommended
    if best:
        recorder.log_metrics(parent, {"front_size": len(front.front), "best_seen": best.seen,
                                      "best_unseen": best.unseen, "best_tau_super": best.point.tau_super,
                                      "best_tau_sub": best.point.tau_sub, "best_epochs": best.epochs,
                                      **{f"best_{k}": getattr(best.point, k) for k in GROUP_KEYS}}, 0)
        recorder.set_tags(parent, {"hiertune.best.pick": front.pick, "hiertune.best.trial": best.trial,
                                   "hiertune.best.trial_id": best.trial_id, "hiertune.best.score": best.score})
    recorder.client.set_terminated(parent, "FINISHED")
    located = replace(front, pareto_csv=place.location(written[0]), pareto_png=place.location(written[1]),
                      pareto_html=place.location(written[2]))
    return located, importance


def _importance(place: SweepPlace) -> Importance | None:
    """Parameter importance per objective from the sweep's Optuna study (and where to open it)."""
    db = place.dir / OPTUNA_DB
    if not db.is_file():  # a sweep from before the study was persisted
        return None
    place.publish(db)
    meta = find_meta(place.dir)
    values = param_importances(study_url(place.dir), place.name, list(meta.objectives if meta else ()) or ["objective"])
    png = write_importances(values, place.dir / "importance.png", f"{place.name}: parameter importance")
    if png:
        place.publish(png)
    return Importance(values, str(png) if png else None, study_url(place.dir))


def _log_shifted(place: SweepPlace, bundle, recorder) -> None:
    """What validation's seen_shifted group is, on the parent run: its source as a tag, and a
    picture of corrupted examples beside their originals."""
    shifted = bundle.shifted
    parent = recorder.parent
    recorder.client.set_tag(parent, "hiertune.seen_shifted", shifted.source if shifted else "none")
    if shifted is not None and shifted.kinds is not None and len(shifted.kinds):
        path = place.dir / "shifted_examples.png"
        plot_shifted_examples(shifted.originals, shifted.images[:len(shifted.kinds)], shifted.kinds, path)
        place.publish(path)
        recorder.client.log_artifact(parent, str(path))


def _log_source(space: SearchSpace, bundle, features: FeatureStore, recorder) -> None:
    """How separable the outliers (and --shifted-data photos) are from the labeled images by
    source alone on the sweep's frozen features, as parent-run metrics: read from the features
    the sweep already shares (one clean view), so it costs a probe fit, not an extraction."""
    base = space.trial_config()
    if not features.sets or base.cached_views() != 1:
        return
    aurocs = source_separability(replace(base, finetune="linear", device="cpu"), bundle, features)
    for key, value in aurocs.items():  # not log_metrics: its step bookkeeping is the sweep's end's
        recorder.client.log_metric(recorder.parent, f"source_auroc_{key}", value)
    if aurocs:
        log.info("source separability (probe AUROC on frozen features): %s",
                 ", ".join(f"{k} {v:.3f}" for k, v in aurocs.items()))


def _histories(trials: list[TrialRecord]) -> dict[str, list[EpochMetrics]]:
    histories = {}
    for t in trials:
        try:
            if history := read_history(t.checkpoint):
                histories[t.name] = history
        except UserError as exc:
            if t.status != "failed":
                raise
            # A failed trial's damaged checkpoint may be what failed it; it costs only its curve.
            log.warning("no learning curves for failed trial %s: %s", t.name, exc)
    return histories


class LiveTrials(tune.Callback):
    """trials.live.json while the sweep runs, so `hiertune pareto NAME` shows what has reported."""

    def __init__(self, place: SweepPlace, space: SearchSpace):
        self.place, self.space = place, space

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):  # each epoch, once it is stored
        self._save(trials, trial, checkpoint)

    def _save(self, trials, new, checkpoint) -> None:
        # Tune may not have made this epoch's checkpoint the trial's latest yet (and drops the older one).
        results = [_TrialResult(t.last_result or {}, t.config, checkpoint if t is new else t.checkpoint, None, t.path)
                   for t in trials]
        save_trials(self.place.dir, [_record(r, self.space) for r in results if ITERATION in r.metrics],
                    live=True)


@dataclass
class _TrialResult:
    """A running trial as Tune's Result shows a finished one, for _record."""

    metrics: dict
    config: dict
    checkpoint: object
    error: object
    path: str


def _trial_id(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")


def _started(result, started: set[str]) -> bool:
    """Whether Tune ever ran the trial: it has an MLflow run, reported, kept a checkpoint, or failed."""
    reported = ITERATION in (result.metrics or {})
    return _trial_id(result) in started or reported or result.checkpoint is not None or result.error is not None


def _record(result, space: SearchSpace, before: TrialRecord | None = None) -> TrialRecord:
    """`before`: the trial's record from an earlier run of the sweep, whose name and config stand
    when Ray hands this one back without them."""
    config = dict(result.config or {}) or (dict(before.config) if before else {})
    # A trial that had ended before a resume stays ended: Ray's state, saved as the sweep
    # stopped, may predate the `done` of its last result.
    outcome = TrialOutcome.read(_trial_id(result), result.metrics, config, space.scheduler.max_t,
                                error=str(result.error).strip().splitlines()[-1][:500] if result.error else None,
                                ended=before is not None and before.status != "interrupted")
    sampled = {p.name for p in space.sampled}
    params = {k: v for k, v in config.items() if k in sampled} or (dict(before.params) if before else {})
    clean = {k: v for k, v in (result.metrics or {}).items()
             if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    name = before.name if outcome.number is None and before is not None else outcome.name
    return TrialRecord(outcome.trial_id, name, outcome.status, outcome.epochs, params,
                       storage.checkpoint_uri(result.checkpoint) if result.checkpoint else None, clean,
                       outcome.failure, config)


@contextlib.contextmanager
def _ray_console(verbose: bool) -> Iterator[None]:
    """Ray Tune's console output only with --verbose. Its newer output prints an experiment box
    and a TensorBoard hint even at verbose=0; its legacy output at verbose=0 prints nothing, and
    hiertune.sweep.reporter says what happens. Restored after, as the next sweep may be verbose."""
    if verbose or "RAY_AIR_NEW_OUTPUT" in os.environ:
        yield
        return
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        del os.environ["RAY_AIR_NEW_OUTPUT"]


@contextlib.contextmanager
def _pending_trials(space: SearchSpace) -> Iterator[None]:
    """With a searcher, Tune keeps one trial pending at a time unless max_concurrent is set:
    trials then start one by one, actor reuse keeps a second node idle, and an autoscaler sees
    demand for one trial only. Keep as many pending as the cluster holds now (a user's own
    TUNE_MAX_PENDING_TRIALS_PG wins); restored after, as the next sweep may differ."""
    import ray

    if space.tune.max_concurrent or "TUNE_MAX_PENDING_TRIALS_PG" in os.environ:
        yield
        return
    resources = ray.cluster_resources()
    fits = [resources.get("CPU", 0) // space.resources.cpus_per_trial] if space.resources.cpus_per_trial else []
    if space.resources.gpus_per_trial:
        fits.append(resources.get("GPU", 0) // space.resources.gpus_per_trial)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, int(min(fits, default=1))))
    try:
        yield
    finally:
        del os.environ["TUNE_MAX_PENDING_TRIALS_PG"]


def _check_outlier_ranges(space: SearchSpace, splits) -> None:
    """An outlier_count range beyond the pool would fail trials hours in; fail now (a fixed
    outlier_count is the base config's, which load_bundle checked)."""
    for p in space.sampled:
        if p.name == "outlier_count":
            splits.check_outlier_count(int(p.high), f"{space.path}: search.outlier_count high",
                                       "; lower it or search outlier_fraction")


def _study_objectives(space: SearchSpace) -> list[str]:
    """What the Optuna study's values are, in order: the names importance is reported under."""
    scalar, pair = objectives(space)
    return pair if space.tune.sampler == "nsga2" else [scalar]


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
