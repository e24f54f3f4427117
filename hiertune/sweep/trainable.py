"""The Ray Tune trainable: `run_trial` inside a Tune session.

Metrics (with the Ray node that ran the trial) and a checkpoint are reported every epoch through
`ray.tune.report`, which persists the checkpoint to the sweep's storage; a restarted trial
(preempted node, killed worker, `--resume`) continues from `ray.tune.get_checkpoint()`.

A final failure (hiertune.training.faults: diverged loss, out of memory, unreadable checkpoint, bad
input) is reported as one last result carrying the reason before it is raised; Ray then records
the trial as ERROR, and `FinalFailures` has made sure it does not retry it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import ray
import ray.tune

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.novelty.posthoc import PosthocConfig
from hiertune.training.faults import FAILURE_KEY, final_reason
from hiertune.training.features import FeatureStore
from hiertune.training.loop import run_trial
from hiertune.training.records import EpochMetrics


def tune_trainable(config: dict, bundle: DataBundle, cpus_per_trial: float = 1.0,
                   features: FeatureStore | None = None, rungs: tuple[int, ...] | None = None,
                   posthoc: PosthocConfig | None = None) -> None:
    """`rungs`: the epochs the scheduler reads, which get the full evaluation; `posthoc`: the
    grid the space declares (run_trial)."""
    # Ray Train's "Checkpoint successfully created at ..." for every epoch of every trial.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        _train(TrialConfig.from_dict(config), bundle, cpus_per_trial, features, rungs, posthoc)
    except Exception as exc:
        reason = final_reason(exc)
        if reason is not None:
            ray.tune.report({FAILURE_KEY: reason})
        raise


def _train(cfg: TrialConfig, bundle: DataBundle, cpus_per_trial: float, features: FeatureStore | None,
           rungs: tuple[int, ...] | None, posthoc: PosthocConfig | None) -> None:
    # Which Ray node ran the trial: on a cluster whose nodes share an IP (or a host), the only
    # way to tell them apart in the results.
    node = ray.get_runtime_context().get_node_id()

    def report(metrics: EpochMetrics, directory: Path) -> None:
        ray.tune.report({**metrics.flat(), "node_id": node},
                        checkpoint=ray.tune.Checkpoint.from_directory(str(directory)))

    # A sweep's checkpoints are for resuming and for the front: nothing writes a model from them
    # (export-best retrains), so they go without the feature scorers, a hundred MB that Tune
    # would copy to the sweep's storage for every trial, and a frozen backbone's weights.
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        run_trial(cfg, bundle, report, cpus=cpus_per_trial, features=features, rungs=rungs, posthoc=posthoc,
                  complete=False)
        return
    with checkpoint.as_directory() as directory:
        run_trial(cfg, bundle, report, resume=Path(directory), cpus=cpus_per_trial, features=features, rungs=rungs,
                  posthoc=posthoc, complete=False)


class FinalFailures(ray.tune.Callback):
    """Keeps Ray from retrying a trial whose failure a retry would repeat.

    Ray retries every failed trial up to `max_failures` times and has no per-error policy; the
    trial's own `max_failures` is what it consults, so a trial that reported a final failure gets
    0 before its exception arrives. The order holds because the driver handles a trial's result
    before it asks that trial for the next one, and the exception comes back as that next one."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if FAILURE_KEY in result:
            trial.max_failures = 0
