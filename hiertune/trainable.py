"""The Ray Tune trainable: `run_trial` inside a Tune session.

Metrics (with the Ray node that ran the trial) and a checkpoint are reported every epoch through
`ray.tune.report`, which persists the checkpoint to the sweep's storage; a restarted trial
(preempted node, killed worker, `--resume`) continues from `ray.tune.get_checkpoint()`.
"""

from __future__ import annotations

from pathlib import Path

import ray
import ray.tune

from hiertune.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.train import run_trial


def tune_trainable(config: dict, bundle: DataBundle, cpus_per_trial: float = 1.0) -> None:
    cfg = TrialConfig.from_dict(config)

    # Which Ray node ran the trial: on a cluster whose nodes share an IP (or a host), the only
    # way to tell them apart in the results.
    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, directory: Path) -> None:
        ray.tune.report({**metrics, "node_id": node}, checkpoint=ray.tune.Checkpoint.from_directory(str(directory)))

    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        run_trial(cfg, bundle, report, cpus=cpus_per_trial)
        return
    with checkpoint.as_directory() as directory:
        run_trial(cfg, bundle, report, resume=Path(directory), cpus=cpus_per_trial)
