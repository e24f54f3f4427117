"""`hiertune export-best`: retrain chosen front points on all labeled data and export them.

Per chosen point (distinct trials, best first under `--pick`):

1. Retrain the trial's configuration for the epochs the point was measured at, on every labeled
   image except a small stratified calibration split: no pseudo-novel holdout, and every outlier
   class in the training pool. Each retraining is a Ray task (hiertune.export.retrain) with the
   sweep's per-trial resources, so several run at once where the cluster has room.
2. Calibrate the thresholds. A raw threshold means nothing for a different model, so what carries
   over is the rate: at the point, the sweep's threshold accepted a fraction `accept_super` of the
   seen validation images at the superclass level (and `accept_sub` at the subclass level). The
   retrained model's threshold is the one that accepts the same fraction of the calibration
   split (all seen images). metrics.json records the target rate, the rate reached, and the rate
   the blindly copied sweep threshold would have given.
3. Write `STORAGE/NAME/export/<k>/` (k = 1 … K) atomically: the model directory of
   predictor.py, plus `submission.csv` for the test images.
4. Log it to MLflow under the sweep (a child run of the sweep's parent run with the directory as
   artifacts) as a pyfunc model, registered as `hiertune-<sweep>`.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import ray
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from packaging.requirements import Requirement
from tqdm.auto import tqdm

from hiertune import storage
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle, load_bundle
from hiertune.data.dataset import load_test_images
from hiertune.data.images import FixCounts
from hiertune.errors import UserError
from hiertune.export.predictor import (METRICS, SOURCE, SUBMISSION, ExportedModel, read_folder,
                                      write_json)
from hiertune.export import versions
from hiertune.export.ensemble import EnsemblePlan, assemble, member_point, plan_ensemble
from hiertune.export.results import ExportResult, ExportSummary, LoggedModel
from hiertune.export.retrain import RetrainJob, RetrainOutput, retrain
from hiertune.fsutil import atomic_dir, exclusive
from hiertune.novelty.metrics import leaderboard_metrics
from hiertune.secrets import redact_uri
from hiertune.sweep.front import Pick, sweep_front
from hiertune.sweep.records import FrontPoint, SweepPoints
from hiertune.sweep import resources
from hiertune.sweep.run import SweepPlace, ray_session
from hiertune.sweep.state import SweepMeta, TrialRecord, find_meta, load_trials
from hiertune.sweep.tracking import PARENT_TAG, SweepRecorder
from hiertune.sweep.plots import plot_front
from hiertune.training.features import FeatureStore
from hiertune.training.loop import heads_for

log = logging.getLogger("hiertune")

CALIBRATION_FRACTION = 0.1
ENSEMBLE_FRONT = "front.png"  # an ensemble export's picture of where its point lies against the sweep's front
# Logged as a model from code: MLflow runs this file, with the hiertune package beside it.
MLFLOW_MODEL = Path(__file__).with_name("mlflow_model.py")


def export_best(place: SweepPlace, pick: Pick | None, top: int, cache_root: Path, test_images: str | None = None,
                address: str | None = None, calibration_fraction: float = CALIBRATION_FRACTION,
                ensemble: int = 0, views: tuple[str, ...] = ()) -> ExportResult:
    if top < 1:
        raise UserError(f"--top must be >= 1, got {top}")
    if ensemble and top != 1:
        raise UserError("--ensemble exports one ensemble for the pick: leave out --top")
    if not 0.0 < calibration_fraction < 0.5:
        raise UserError(f"--calibration-fraction must be in (0, 0.5), got {calibration_fraction}")
    if not place.remote and not place.dir.is_dir():
        raise UserError(f"{place.uri}: no such sweep")
    # One export of a sweep at a time: a second would clear the first's live staging directories
    # (and, on S3, its working copy). On S3 the lock is the working copies' folder, on this machine.
    held = place.dir.parent if place.remote else place.dir
    held.mkdir(parents=True, exist_ok=True)
    with exclusive(held, f"export-best {place.name} is already running (it holds {held}); wait for it to finish"):
        return _export_best(place, pick, top, cache_root, test_images, address, calibration_fraction, ensemble,
                            views)


def _export_best(place: SweepPlace, pick: Pick, top: int, cache_root: Path, test_images: str | None,
                 address: str | None, calibration_fraction: float, ensemble: int,
                 views: tuple[str, ...]) -> ExportResult:
    place.prepare()  # an S3 sweep: its own files, pulled into the working copy
    if not place.dir.is_dir():
        raise UserError(f"{place.uri}: no such sweep")
    trials = {t.trial_id: t for t in load_trials(place.dir, within=place.uri)}
    meta = find_meta(place.dir) or SweepMeta("", "", sampled_thresholds=False)
    pick = pick or Pick.parse(meta.pick)  # by default the sweep's recommended point
    points, front = sweep_front(list(trials.values()), meta.sampled_thresholds)
    if not front:
        raise UserError(f"{place.uri}: the sweep has no front (no trial reported a checkpoint)")
    chosen = pick.choose(front, top)
    plan = None
    if ensemble:
        plan = plan_ensemble(trials, chosen[0], pick, ensemble, cache_root)
        log.info("ensemble of %d pick(s) from %d trial(s): %s, hypervolume %.3f on validation (best single trial "
                 "%.3f); its point: seen %.3f, unseen %.3f", ensemble, len(plan.library), plan.point.trial,
                 plan.selection.hypervolume, plan.selection.single, plan.point.seen, plan.point.unseen)
        chosen = [plan.point]
    if len(chosen) < top:
        log.warning("the front has points of only %d trial(s): exporting %d, not %d", len(chosen), len(chosen), top)
    if place.remote:  # the exports already on S3: their records, so that none is overwritten
        storage.sync_down(storage.join(place.uri, "export"), place.dir / "export",
                          keep=lambda name: name.count("/") == 1 and name.endswith((f"/{SOURCE}", f"/{versions.SUMMARY}")))
    slots = versions.assign(place.dir / "export", chosen, calibration_fraction, test_images, views)
    # The MLflow store named for this export must answer before anything is said or retrained, also
    # when every point is reused: an unreachable store is a mistake in the command either way.
    SweepRecorder(place)
    for slot in slots:
        if slot.reused:
            log.info("export %d: %s (%s) is already exported with these settings in %s: reused", slot.number,
                     slot.point.trial, slot.point.score, slot.reused.dir)
    if plan is not None:  # one job per member; the ensemble is assembled from their outputs
        jobs = [] if slots[0].reused else [
            RetrainJob(i, member_point(plan, t), retrain_config(t, member_point(plan, t), calibration_fraction),
                       cache_root) for i, (t, _) in enumerate(plan.members, 1)]
    else:
        jobs = [RetrainJob(slot.number, slot.point, retrain_config(trials[slot.point.trial_id], slot.point,
                                                                   calibration_fraction), cache_root, views)
                for slot in slots if not slot.reused]
    if not jobs:
        return ExportResult(place.name, str(pick), 0.0, [slot.reused for slot in slots])
    base = jobs[0].cfg
    bundle = load_bundle(base.data, base.outliers, base.data_size, base.split_config(), cache_root,
                         base.shift_config())
    test_set = _test_set(bundle, base.data_size, cache_root, test_images)
    cpus = meta.cpus_per_trial

    log.info("export-best %s: retraining %d %s picked by %s on all labeled data (calibration split %.0f%%)",
             place.name, len(jobs), "ensemble member(s)" if plan else "point(s)", pick, 100 * calibration_fraction)
    start = time.perf_counter()
    outputs, failures = _retrain_all(jobs, bundle, cpus, meta.gpus_per_trial, address)
    retrain_wall = time.perf_counter() - start

    _clear_leftovers(place.dir / "export")
    if plan is not None:
        if failures:
            raise UserError(f"export-best {place.name} --ensemble: " + "; ".join(failures))
        slot = slots[0]
        output = assemble(plan, [outputs[job.k] for job in jobs], bundle, heads_for(bundle, base), base, cache_root,
                          views)
        output.files[ENSEMBLE_FRONT] = _front_png(points, front, plan, place.name)
        summary = _write_export(place, RetrainJob(slot.number, plan.point, base, cache_root), slot.rank, pick, output,
                                test_set, versions.settings(slot.point, calibration_fraction, test_images, views),
                                cache_root)
        return ExportResult(place.name, str(pick), retrain_wall, [summary])
    exports = []
    for slot in slots:
        if slot.reused:
            exports.append(slot.reused)
        elif slot.number in outputs:
            job = next(j for j in jobs if j.k == slot.number)
            exports.append(_write_export(place, job, slot.rank, pick, outputs[job.k], test_set,
                                         versions.settings(slot.point, calibration_fraction, test_images, views),
                                         cache_root))
    if failures:
        done = ", ".join(str(e.k) for e in exports) or "none"
        raise UserError(f"export-best {place.name}: " + "; ".join(failures) + f" (exports written: {done})")
    return ExportResult(place.name, str(pick), retrain_wall, exports)


def retrain_config(trial: TrialRecord, point: FrontPoint, calibration_fraction: float) -> TrialConfig:
    if not trial.config:
        raise UserError(f"{trial.name}: trials.json has no configuration for this trial; rerun the sweep")
    cfg = TrialConfig.from_dict(trial.config, where=f"{trial.name} config")
    # The schedule is compressed to the epochs the point was measured at: an ASHA-stopped trial
    # is retrained for what it ran, not for max_t.
    return replace(cfg, epochs=max(1, int(point.epochs)), val_fraction=calibration_fraction,
                   pseudo_novel_fraction=0.0, outlier_val_fraction=0.0, faults="",
                   novelty_score=point.score)


def _retrain_all(jobs: list[RetrainJob], bundle: DataBundle, cpus: float, gpus: float,
                 address: str | None) -> tuple[dict[int, RetrainOutput], list[str]]:
    """Each job as a Ray task with the sweep's per-trial resources; or, where a Ray this process
    would start has no GPU and would run the jobs one after another on these CPUs anyway, here,
    one after another, sparing Ray's start and a worker's (they train exactly as a task does)."""
    if address is None and not ray.is_initialized():
        fitted = resources.fit(cpus, gpus, resources.local_node())
        if not fitted.gpus and (len(jobs) == 1 or fitted.parallel == 1):
            if fitted.changed:
                log.info(fitted.line())
            return _retrain_here(jobs, bundle, fitted.cpus)
    outputs: dict[int, RetrainOutput] = {}
    failures: list[str] = []
    with ray_session(address, cpus):
        fitted = resources.fit_connected(cpus, gpus, address)
        cpus, gpus = fitted.cpus, fitted.gpus
        task = ray.remote(retrain).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        ref = ray.put(bundle)
        pending = {task.remote(job, ref, cpus): job for job in jobs}
        with tqdm(total=len(jobs), desc="retraining", unit="model", disable=None) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    outputs[job.k] = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None) or exc
                    failures.append(_failure(job, cause))
                bar.update()
    return outputs, failures


def _retrain_here(jobs: list[RetrainJob], bundle: DataBundle, cpus: float) -> tuple[dict[int, RetrainOutput], list[str]]:
    outputs: dict[int, RetrainOutput] = {}
    failures: list[str] = []
    threads = torch.get_num_threads()  # a retraining sets its own (run_trial); the driver's come back after
    try:
        with tqdm(total=len(jobs), desc="retraining", unit="model", disable=None) as bar:
            for job in jobs:
                try:
                    outputs[job.k] = retrain(job, bundle, cpus)
                except Exception as exc:  # noqa: BLE001 - as a Ray task's failure: that export fails, the others go on
                    failures.append(_failure(job, exc))
                bar.update()
    finally:
        torch.set_num_threads(threads)
    return outputs, failures


def _failure(job: RetrainJob, cause: BaseException) -> str:
    reason = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    return f"export {job.k} ({job.point.trial}) failed: {reason[:300]}"


@dataclass
class TestImages:
    source: str
    names: list[str]
    images: np.ndarray
    fixes: FixCounts
    labels: dict[str, tuple[int, int]] | None  # hidden truth, where the data has it (the synthetic set)


def _test_set(bundle: DataBundle, image_size: int, cache_root: Path, folder: str | None) -> TestImages | None:
    """--test-images, else the competition's test images (a folder, or pushed to S3), else none."""
    if folder is not None:
        names, images, fixes = read_folder(Path(folder), image_size, cache_root)
        return TestImages(folder, names, images, fixes, None)
    if not bundle.data.test_names:
        log.warning("%s has no test images: exporting models without a submission", bundle.data.root)
        return None
    root = bundle.data.root
    images, report = load_test_images(root, bundle.data.test_names, image_size, cache_root)
    return TestImages(f"{root}/test_images", bundle.data.test_names, images, report.fixes if report else FixCounts(),
                      _hidden_labels(root / "test_labels.csv"))


def _write_export(place: SweepPlace, job: RetrainJob, rank: int, pick: Pick, output: RetrainOutput,
                  test_set: TestImages | None, same_when: dict, cache_root: Path) -> ExportSummary:
    """export/<job.k>, a folder no export had (hiertune.export.versions)."""
    target = place.dir / "export" / str(job.k)
    point = job.point
    with atomic_dir(target) as stage:
        for name, data in output.files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)  # an ensemble's members/<i>/
            (stage / name).write_bytes(data)
        write_json(stage / SOURCE, {
            "sweep": place.name, "sweep_dir": place.uri, "trial": point.trial,
            "trial_id": point.trial_id, "pick": str(pick), "rank": rank, **same_when})
        submission, rows, test = None, None, None
        if test_set is not None:
            model = ExportedModel.load(stage, features=FeatureStore(cache_root))  # test features cached
            predictions = model.predict_images(test_set.names, test_set.images, test_set.fixes, progress="predicting")
            if (warning := predictions.fixes.warning(test_set.source, model.cfg.data_size)):
                log.warning(warning)
            predictions.write_csv(stage / SUBMISSION)
            submission = storage.join(place.uri, "export", str(job.k), SUBMISSION) if place.remote \
                else str(target / SUBMISSION)
            rows = len(predictions.names)
            if test_set.labels is not None:
                test = _score(predictions, test_set.labels, model)
                metrics = json.loads((stage / METRICS).read_text())
                metrics["test"] = test
                write_json(stage / METRICS, metrics)
        logged = _log_to_mlflow(place, job, pick, stage, output, test)
        summary = ExportSummary(job.k, str(target), point.trial, point.score, output.seconds, output.calibration,
                                point.seen, point.unseen, logged, submission, rows, test)
        write_json(stage / versions.SUMMARY, summary.to_dict())
        write_json(stage / "mlflow.json", logged.to_dict())
    if place.remote:
        # Uploaded once complete; a reader takes mlflow.json, written last, as the sign of a whole export.
        remote = storage.join(place.uri, "export", str(job.k))
        for path in sorted(target.iterdir(), key=lambda p: p.name == "mlflow.json"):
            storage.upload(path, storage.join(remote, path.name))
        summary = replace(summary, dir=remote)
    log.info("export %d: %s (%s) -> %s", job.k, point.trial, point.score, target)
    return summary


def _front_png(points: SweepPoints, front: list[FrontPoint], plan: EnsemblePlan, name: str) -> bytes:
    """The sweep's front with the ensemble's point (its own front dashed) as the star."""
    with tempfile.TemporaryDirectory(prefix="hiertune-plot-") as tmp:
        path = Path(tmp) / ENSEMBLE_FRONT
        plot_front(points, front, plan.point, path, f"{name}: the sweep's front and the ensemble's point",
                   extra=[("ensemble's own front", plan.front)])
        return path.read_bytes()


def _clear_leftovers(export_dir: Path) -> None:
    """Staging directories of an export that was killed before its rename (atomic_dir's names)."""
    for path in [*export_dir.glob(".*.tmp"), *export_dir.glob(".*.old")]:
        shutil.rmtree(path, ignore_errors=True)


def _hidden_labels(path: Path) -> dict[str, tuple[int, int]] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return {r["image"]: (int(r["superclass_index"]), int(r["subclass_index"])) for r in csv.DictReader(f)}


def _score(predictions, truth: dict[str, tuple[int, int]], model: ExportedModel) -> dict:
    known = [i for i, n in enumerate(predictions.names) if n in truth]
    true = np.array([truth[predictions.names[i]] for i in known]).reshape(-1, 2)
    return leaderboard_metrics(predictions.superclass[known], predictions.subclass[known], true[:, 0], true[:, 1],
                               model.heads.n_super, model.heads.n_sub)


def model_requirements() -> list[str]:
    """The logged model's pip requirements: hiertune's own runtime dependencies as it pins them
    (its code travels in the model, as a code path). MLflow would otherwise infer them by loading
    the model in a subprocess, seconds per export, and name `hiertune` itself, which no package
    index has, in place of torch and timm."""
    return [r for r in importlib.metadata.requires("hiertune") or [] if Requirement(r).marker is None]


def _log_to_mlflow(place: SweepPlace, job: RetrainJob, pick: Pick, stage: Path, output: RetrainOutput,
                   test: dict | None) -> LoggedModel:
    """A child run of the sweep's parent with the directory, and the pyfunc model, registered."""
    recorder = SweepRecorder(place)
    tags = {"hiertune.sweep": place.name, "hiertune.export": str(job.k), "hiertune.trial": job.point.trial,
            "hiertune.trial_id": job.point.trial_id, "hiertune.pick": str(pick)}
    if recorder.parent:
        tags[PARENT_TAG] = recorder.parent
    run = recorder.client.create_run(recorder.experiment_id, run_name=f"export-{job.k}", tags=tags)
    run_id = run.info.run_id
    # What the exported model uses: its family's settings, the front point's score and thresholds
    # (not the config's defaults), and the raw thresholds calibrated for this model.
    used = output.thresholds
    recorder.log_params(run_id, {**job.cfg.used_settings(), "pick": str(pick), "novelty_score": used.score,
                                 "tau_super": job.point.point.tau_super, "tau_sub": job.point.point.tau_sub,
                                 "thr_super": used.thr_super, "thr_sub": used.thr_sub})
    flat = {"retrain_seconds": output.seconds, "validation_seen": job.point.seen,
            "validation_unseen": job.point.unseen,
            **{f"calibration_{k}": v for k, v in output.calibration.to_dict().items()},
            **{f"test_{k}": v for k, v in (test or {}).items()}}
    recorder.log_metrics(run_id, {k: v for k, v in flat.items() if isinstance(v, float) and math.isfinite(v)}, 0)
    recorder.client.log_artifacts(run_id, str(stage), artifact_path="export")
    name = "hiertune-" + re.sub(r"[^A-Za-z0-9_.-]", "-", place.name)
    signature = ModelSignature(inputs=Schema([ColSpec("string", "image")]),
                               outputs=Schema([ColSpec("string", "image"), ColSpec("long", "superclass_index"),
                                               ColSpec("long", "subclass_index")]))
    mlflow.set_tracking_uri(place.mlflow_uri)
    mlflow.set_registry_uri(place.mlflow_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per artifact copy otherwise
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # An input example would be a file path that exists only here; the signature says the shape.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MLFLOW_MODEL),
                                       artifacts={"model_dir": str(stage)}, signature=signature,
                                       code_paths=[str(MLFLOW_MODEL.parents[1])],
                                       pip_requirements=model_requirements(), registered_model_name=name)
    recorder.client.set_terminated(run_id, "FINISHED")
    version = str(info.registered_model_version)
    for key, value in tags.items():
        if key != PARENT_TAG:
            recorder.client.set_model_version_tag(name, version, key, value)
    return LoggedModel(redact_uri(place.mlflow_uri), run_id, info.model_uri, name, version)
