"""The Ray Tune trainable: `run_trial` inside a Tune session.

Metrics and a checkpoint are reported every epoch through `ray.tune.report`; a restarted trial
(preempted node, killed worker, `--resume`) continues from `ray.tune.get_checkpoint()`.
"""

from __future__ import annotations

from pathlib import Path

import ray.tune

from hiertune.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.train import run_trial


def tune_trainable(config: dict, bundle: DataBundle, cpus_per_trial: float = 1.0) -> None:
    cfg = TrialConfig.from_dict(config)

    def report(metrics: dict, directory: Path) -> None:
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(directory)))

    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        run_trial(cfg, bundle, report, cpus=cpus_per_trial)
        return
    with checkpoint.as_directory() as directory:
        run_trial(cfg, bundle, report, resume=Path(directory), cpus=cpus_per_trial)
