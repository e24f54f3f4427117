"""`hiertune train`: one trial in-process, for debugging a search space before sweeping it."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hiertune.data.bundle import load_bundle
from hiertune.fsutil import atomic_dir, check_writable
from hiertune.novelty.posthoc import PosthocConfig
from hiertune.training.config import TrialConfig
from hiertune.training.features import FeatureStore
from hiertune.training.loop import run_trial
from hiertune.training.records import EpochMetrics

log = logging.getLogger("hiertune")


def train_single(cfg: TrialConfig, name: str, out_dir: Path | None, cache_root: Path, progress: bool = True,
                 posthoc: PosthocConfig | None = None) -> TrainResult:
    """`cfg` trained in this process, evaluated on the `posthoc` grid (its space's); `name` (the
    space's) names the default output folder."""
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), cache_root,
                         cfg.shift_config())
    summary = bundle.summary()
    log.info("data %s: %d train / %d validation images, %d outlier training images, pseudo-novel subclasses %s",
             summary["data"], summary["train"], summary["val"],
             bundle.outlier_count(cfg.outlier_count, cfg.outlier_fraction), summary["pseudo_novel_subclasses"])
    out = out_dir or Path("sweeps") / "train" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable(out, "--out", folder=True)
    history: list[EpochMetrics] = []

    def report(metrics: EpochMetrics, checkpoint: Path) -> None:
        if not history:  # written once the model is built and trained an epoch: a bad weights file leaves nothing
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        history.append(metrics)
        with atomic_dir(out / "checkpoint", overwrite=True) as tmp:
            shutil.copytree(checkpoint, tmp, dirs_exist_ok=True)
        log.info("epoch %d/%d  loss %.3f  seen %.3f  unseen %.3f  hypervolume %.3f  (%.0f img/s)",
                 metrics.epoch, cfg.epochs, metrics.train_loss, metrics.recommended.seen, metrics.recommended.unseen,
                 metrics.hypervolume, metrics.train_images_per_s)

    start = time.perf_counter()
    run_trial(cfg, bundle, report, progress=progress, features=FeatureStore(cache_root), posthoc=posthoc)
    result = TrainResult(str(out), cfg, time.perf_counter() - start, max(history, key=lambda m: m.hypervolume),
                         history[-1], len(history))
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


@dataclass(frozen=True)
class TrainResult:
    """What `hiertune train` did: the run's folder, its config, and its best and last epoch."""

    out: str
    config: TrialConfig
    wall_seconds: float
    best: EpochMetrics  # the epoch with the largest hypervolume
    final: EpochMetrics
    epochs: int

    def to_dict(self) -> dict:
        return {"out": self.out, "config": self.config.to_dict(), "wall_seconds": self.wall_seconds, "epochs": self.epochs,
                "best_epoch": self.best.epoch, "best": self.best.flat(), "final": self.final.flat()}

    def render(self) -> str:
        b = self.best.recommended
        return "\n".join([
            f"trained {self.config.family} for {self.epochs} epochs in {self.wall_seconds:.0f}s; "
            f"checkpoint in {self.out}/checkpoint",
            f"best hypervolume {self.best.hypervolume:.3f} at epoch {self.best.epoch}; its recommended post-hoc point "
            f"(the knee) ({b.score}, tau_super {b.tau_super:.3f}, tau_sub {b.tau_sub:.3f}):",
            f"  seen super {b.seen_super_acc:.3f}  unseen super {b.unseen_super_acc:.3f}  "
            f"seen sub {b.seen_sub_acc:.3f}  unseen sub {b.unseen_sub_acc:.3f}  "
            f"-> seen {b.seen:.3f}  unseen {b.unseen:.3f}"])
