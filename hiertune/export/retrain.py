"""One retraining of `hiertune export-best`, as the Ray task that runs it: train a front point's
configuration, write its model directory, calibrate its thresholds.

Its own module because a Ray worker imports the module of the function it runs: this one needs
the training loop and the exported-model format, not the driver's MLflow, plotting and sweep
orchestration, which would add seconds to every retraining worker's start.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.data.splits import SHIFTED, SplitData
from hiertune.export.results import Calibration
from hiertune.export.predictor import (METRICS, ExportedModel, Thresholds, calibrate, calibrate_both, write_json,
                                       write_model_dir, write_thresholds)
from hiertune.novelty.metrics import ACCURACIES, OBJECTIVES, leaderboard_metrics
from hiertune.models.registry import Heads
from hiertune.novelty.posthoc import GROUP_KEYS, decide, seen_acceptance
from hiertune.novelty.records import GridPoint
from hiertune.novelty.scores import LevelScores
from hiertune.sweep.records import FrontPoint
from hiertune.training.features import FeatureStore
from hiertune.training.loop import heads_for, run_trial


@dataclass(frozen=True)
class RetrainJob:
    k: int
    point: FrontPoint  # the trial, its score, thresholds, seen acceptance, accuracies
    cfg: TrialConfig  # the trial's configuration with the retraining split and epochs
    cache_root: Path | None = None  # the sweep's cache: frozen features are read from it, not computed again
    views: tuple[str, ...] = ()  # test-time views the model averages over, its thresholds calibrated with them


@dataclass(frozen=True)
class RetrainOutput:
    """What a retraining task sends back to the driver: the model directory's files as bytes (the
    task may have run on another node), how its thresholds were calibrated, and how long it took."""

    files: dict[str, bytes]
    calibration: Calibration
    thresholds: Thresholds  # what thresholds.json holds: the model's score and calibrated raw thresholds
    seconds: float



def calibrate_point(scores: LevelScores, calib: SplitData, heads: Heads, point: GridPoint, shifted_weight: float
                    ) -> tuple[float, float, Calibration]:
    """Each level's raw threshold for a retrained model (or an ensemble) whose scores on the
    calibration split `calib` are `scores`: the one that accepts the fraction of seen images the
    sweep's `point` accepted; and what the calibration reached."""
    s_super, s_sub = scores.super_score.numpy(), scores.sub_score.numpy()
    # Both seen groups of the calibration split: in-source, and shifted (corruptions of those
    # images and/or the --shifted-data folder, as the sweep's validation had them).
    shifted = calib.val_group == SHIFTED
    seen_super = (calib.val_superclass < heads.n_super) & ~shifted
    seen_sub = (calib.val_subclass < heads.n_sub) & ~shifted
    weight = shifted_weight if shifted.any() else 0.0
    thr_super = calibrate_both(s_super[seen_super], point.accept_super, s_super[shifted],
                               point.accept_shifted_super, weight)
    thr_sub = calibrate_both(s_sub[seen_sub], point.accept_sub, s_sub[shifted], point.accept_shifted_sub, weight)
    # What matching the in-source rate alone would have accepted of the shifted images (the
    # trade the two-group calibration made), and what the sweep's raw thresholds, copied as
    # they are, would accept here.
    alone_super = calibrate(s_super[seen_super], point.accept_super)
    alone_sub = calibrate(s_sub[seen_sub], point.accept_sub)
    copied = not math.isnan(point.thr_super)
    pred_super, pred_sub = decide(scores, heads, thr_super, thr_sub)
    closed = leaderboard_metrics(pred_super.numpy()[~shifted], pred_sub.numpy()[~shifted],
                                 calib.val_superclass[~shifted], calib.val_subclass[~shifted], heads.n_super,
                                 heads.n_sub)
    calibration = Calibration(
        images=int(len(calib.val_images)), target_accept_super=point.accept_super,
        target_accept_sub=point.accept_sub, accept_super=seen_acceptance(s_super, seen_super, thr_super),
        accept_sub=seen_acceptance(s_sub, seen_sub, thr_sub), shifted_images=int(shifted.sum()),
        target_accept_shifted_super=point.accept_shifted_super, target_accept_shifted_sub=point.accept_shifted_sub,
        accept_shifted_super=seen_acceptance(s_super, shifted, thr_super),
        accept_shifted_sub=seen_acceptance(s_sub, shifted, thr_sub),
        seen_only_accept_super=seen_acceptance(s_super, seen_super, alone_super),
        seen_only_accept_shifted_super=seen_acceptance(s_super, shifted, alone_super),
        seen_only_accept_sub=seen_acceptance(s_sub, seen_sub, alone_sub),
        seen_only_accept_shifted_sub=seen_acceptance(s_sub, shifted, alone_sub),
        copied_accept_super=seen_acceptance(s_super, seen_super, point.thr_super) if copied else math.nan,
        copied_accept_sub=seen_acceptance(s_sub, seen_sub, point.thr_sub) if copied else math.nan,
        seen_super_acc=closed["seen_super_acc"], seen_sub_acc=closed["seen_sub_acc"])
    return thr_super, thr_sub, calibration


def retrain(job: RetrainJob, bundle: DataBundle, cpus: float) -> RetrainOutput:
    """Train, calibrate, and return the model directory's files as bytes: the task may run on
    another node, so nothing is written where the driver would have to find it."""
    cfg, point = job.cfg, job.point.point
    heads = heads_for(bundle, cfg)
    with tempfile.TemporaryDirectory(prefix="hiertune-export-") as tmp:
        last, out = Path(tmp) / "last", Path(tmp) / "model"

        def keep_latest(metrics: dict, directory: Path) -> None:
            shutil.rmtree(last, ignore_errors=True)
            shutil.copytree(directory, last)

        start = time.perf_counter()
        store = FeatureStore(job.cache_root)
        final = run_trial(cfg, bundle, keep_latest, cpus=cpus, features=store, rungs=())  # the last epoch is exported
        seconds = time.perf_counter() - start

        h = bundle.data.hierarchy
        write_model_dir(out, last, cfg, heads, h.superclasses, h.subclasses, point.score, job.views)

        model = ExportedModel.load(out, device=cfg.device, threads=cfg.torch_threads(cpus), features=store)
        calib = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
        scores, _, _ = model.level_scores(calib.val_images)
        thr_super, thr_sub, calibration = calibrate_point(scores, calib, heads, point, cfg.shifted_weight)
        thresholds = Thresholds(point.score, thr_super, thr_sub, job.views)
        figures = point.figures()
        write_thresholds(out, thresholds, {
            "rule": "each level's threshold accepts the fraction of seen calibration images that the sweep's "
                    "threshold accepted of seen validation images at this point; with a seen_shifted group, the "
                    "threshold that misses both groups' rates least, weighted by shifted_weight",
            "sweep": {k: figures[k] for k in ("tau_super", "tau_sub", "thr_super", "thr_sub", "accept_super",
                                              "accept_sub", "accept_shifted_super", "accept_shifted_sub")}})
        write_json(out / METRICS, {
            "validation": {k: figures[k] for k in (*ACCURACIES, *OBJECTIVES, *GROUP_KEYS)},
            "calibration": calibration.to_dict(),
            "retrain": {"seconds": seconds, "epochs": cfg.epochs, "train_images": final.train_images,
                        "outlier_images": final.outlier_images, "train_loss": final.train_loss},
        })
        return RetrainOutput({p.name: p.read_bytes() for p in out.iterdir()}, calibration, thresholds, seconds)
