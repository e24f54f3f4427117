"""What one epoch of a trial costs here, measured on a few batches (`hiertune sweep` says it up front).

The trial is built as run_trial builds it (model, optimizer, its data: images, or the frozen
backbone's cached features when it has them), then a few training steps and one validation batch
are timed, after one untimed step (first calls allocate and pick kernels). An epoch is those
rates times the trial's own image counts; evaluation's post-hoc grid and scorer fit, which do
not depend on the backbone, are timed once, in the whole evaluation of the first kind measured
(one on cached features where the space has it: seconds), and added to every other kind. A trial
evaluates fully only on the scheduler's rung epochs and its last (hiertune.training.loop.run_trial);
the others reuse what depends on its features alone: both are timed, and weighed by their share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from hiertune.novelty.posthoc import PosthocConfig
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.novelty.memo import Memo
from hiertune.training.features import FeatureStore
from hiertune.training.inputs import FeatureInputs, ImageInputs
from hiertune.training.loop import evaluate_epoch, forward_all, setup_trial, train_epoch, trial_data


@dataclass(frozen=True)
class EpochCost:
    """Seconds one epoch of a trial takes here, and its parts."""

    train_seconds: float  # the training pass over every training image (or its features)
    eval_seconds: float  # the validation forward pass and the scorers' training rows
    posthoc_seconds: float  # scorer fit and post-hoc grid
    cached: bool  # trained on cached frozen-backbone features

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds + self.posthoc_seconds

def measure_epoch(cfg: TrialConfig, bundle: DataBundle, store: FeatureStore, cpus: float | None = None,
                  steps: int = 2, posthoc_seconds: float | None = None, full_share: float = 1.0,
                  posthoc: PosthocConfig | None = None) -> EpochCost:
    """`cfg`'s epoch, from `steps` timed training batches and one validation batch plus
    `posthoc_seconds`, the part of evaluation that does not depend on the model; without it (the
    first kind measured: cached features where the space has them, `store` holding them) the
    whole evaluation runs, once in full and once as the epochs between rungs run it (a share
    `full_share` of the epochs is full), and is timed, on the space's grid (`posthoc`)."""
    setup = setup_trial(cfg, bundle, cpus, trains=False)
    device, autocast, heads, model, state = setup.device, setup.autocast, setup.heads, setup.model, setup.state
    data = trial_data(cfg, bundle, setup.split, heads, model, setup.augment, store)
    cached = isinstance(data.train, FeatureInputs)
    timed = []
    for n in (1, steps):  # the first, untimed, allocates
        part = replace(data, train=_head(data.train, n * cfg.batch_size),
                       train_y=tuple(y[:n * cfg.batch_size] for y in data.train_y))
        timed.append(train_epoch(state, 0, cfg, heads, part, device, autocast, setup.scaler, False, False))
    train_seconds = timed[-1].seconds / max(1, timed[-1].images) * len(data.train)
    if posthoc_seconds is None:
        memo = Memo()
        full = evaluate_epoch(model, cfg, heads, data, device, autocast, memo, full=True, posthoc=posthoc)
        between = evaluate_epoch(model, cfg, heads, data, device, autocast, memo, full=False, posthoc=posthoc)
        posthoc = full_share * (full.fit_seconds + full.posthoc_seconds) + (1 - full_share) * (
            between.fit_seconds + between.posthoc_seconds)
        return EpochCost(train_seconds, between.forward_seconds, posthoc, cached)
    rows = min(len(data.val), cfg.batch_size)
    start = time.perf_counter()
    forward_all(model, _head(data.val, rows), device, autocast, batch_size=rows)
    per_image = (time.perf_counter() - start) / rows
    return EpochCost(train_seconds, per_image * (len(data.val) + len(data.fit_rows)), posthoc_seconds, cached)

def _head(inputs: ImageInputs | FeatureInputs, n: int) -> ImageInputs | FeatureInputs:
    """The first `n` rows, as training reads them (augmentation, corruptions, views)."""
    if isinstance(inputs, FeatureInputs):
        device = next(iter(inputs.features.values())).device
        return FeatureInputs({name: t[:n] for name, t in inputs.features.items()}, device)
    return ImageInputs(inputs.images[:n], inputs.augment, inputs.corrupt_p, inputs.corrupt_severity)
