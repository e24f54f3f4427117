"""A trained trial's validation outputs again, from its saved weights: what ensemble selection
combines (hiertune.novelty.ensemble), for a sweep's trials or a leave-species-out fold's models.

The model is built as the trial built it and its weights loaded; with a frozen backbone the
validation images are read from the feature cache the trial filled, so this costs a pass of the
heads, not of the backbone. With test-time `views` (hiertune.data.views) the validation images'
views are evaluated too, their features computed once into the same cache, and the outputs
averaged over the images and their views (hiertune.novelty.ensemble.average_views).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.data.views import VIEWS
from hiertune.errors import UserError
from hiertune.models.registry import Heads
from hiertune.novelty.ensemble import average_views
from hiertune.novelty.posthoc import EvalBatch
from hiertune.novelty.scores import FeatureScorer, load_scorers
from hiertune.training import checkpoint
from hiertune.training.faults import CheckpointUnreadable
from hiertune.training.device import autocast, pick_device, precision
from hiertune.training.features import FeatureStore, predict_inputs
from hiertune.training.loop import build, evaluate, heads_for, trial_data


@dataclass
class Replayed:
    batch: EvalBatch
    scorers: dict[str, FeatureScorer] | None  # the feature scorers of the checkpoint's epoch, when it kept them
    heads: Heads
    photos: np.ndarray  # [validation rows] bool: the --shifted-data photos
    subclass_names: tuple[str, ...]
    views: EvalBatch | None = None  # averaged over the images and their test-time views, when asked


def replay_validation(cfg: TrialConfig, bundle: DataBundle, trained: Path, store: FeatureStore,
                      views: tuple[str, ...] = ()) -> Replayed:
    """`cfg`'s validation outputs with the weights in the checkpoint directory `trained`; with
    `views`, also their average over the images and those test-time views."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)  # as the trial built it: the feature cache key holds the backbone's weights
    heads = heads_for(bundle, cfg)
    model, augment = build(cfg, heads, device, trains=False)
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    # The checkpoint's weights hold the source projection's basis: fitting it again (seconds per
    # model with 16 directions, for every member an ensemble replays) would be overwritten.
    data = trial_data(cfg, bundle, split, heads, model, augment, store, fit_projection=False)
    try:
        checkpoint.load_weights(model, trained / checkpoint.MODEL)
    except CheckpointUnreadable as exc:  # here a sweep's file read by a command, not a trial Ray retries
        raise UserError(str(exc)) from None
    amp = autocast(device, cfg.amp)
    batch, _ = evaluate(model, data.val, split.val_superclass, split.val_subclass, heads, cfg, device, amp,
                        split.val_group)
    viewed = [evaluate(model, predict_inputs(model, VIEWS[v](split.val_images), augment, cfg.image_size, device,
                                             amp, str(precision(device, cfg.amp)),
                                             store if cfg.feature_views else None, f"validation images, {v}"),
                       split.val_superclass, split.val_subclass, heads, cfg, device, amp, split.val_group)[0]
              for v in views]
    scorers = load_scorers(trained / checkpoint.SCORERS) if (trained / checkpoint.SCORERS).is_file() else None
    return Replayed(batch, scorers, heads, data.photos, data.subclass_names,
                    average_views([batch, *viewed]) if views else None)
