"""A trained trial's validation outputs again, from its saved weights: what ensemble selection
combines (hiertune.novelty.ensemble), for a sweep's trials or a leave-species-out fold's models.

The model is built as the trial built it and its weights loaded; with a frozen backbone the
validation images are read from the feature cache the trial filled, so this costs a pass of the
heads, not of the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle
from hiertune.models.registry import Heads
from hiertune.novelty.posthoc import EvalBatch
from hiertune.novelty.scores import FeatureScorer, load_scorers
from hiertune.training import checkpoint
from hiertune.training.device import autocast, pick_device
from hiertune.training.features import FeatureStore
from hiertune.training.loop import build, evaluate, heads_for, trial_data


@dataclass
class Replayed:
    batch: EvalBatch
    scorers: dict[str, FeatureScorer] | None  # the feature scorers of the checkpoint's epoch, when it kept them
    heads: Heads
    photos: np.ndarray  # [validation rows] bool: the --shifted-data photos
    subclass_names: tuple[str, ...]


def replay_validation(cfg: TrialConfig, bundle: DataBundle, trained: Path, store: FeatureStore) -> Replayed:
    """`cfg`'s validation outputs with the weights in the checkpoint directory `trained`."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)  # as the trial built it: the feature cache key holds the backbone's weights
    heads = heads_for(bundle, cfg)
    model, augment = build(cfg, heads, device, trains=False)
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    data = trial_data(cfg, bundle, split, heads, model, augment, store)
    model.load_state_dict(load_file(str(trained / checkpoint.MODEL)))
    batch, _ = evaluate(model, data.val, split.val_superclass, split.val_subclass, heads, cfg, device,
                        autocast(device, cfg.amp), split.val_group)
    scorers = load_scorers(trained / checkpoint.SCORERS) if (trained / checkpoint.SCORERS).is_file() else None
    return Replayed(batch, scorers, heads, data.photos, data.subclass_names)
