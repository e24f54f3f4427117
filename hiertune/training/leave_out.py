"""Leave-species-out: how a training recipe treats real photos of known species whose real
photos training never saw.

A user with real photos of a few known species (`--shifted-data`) wants to know what the model
will do with real photos of the *other* known species. One fold per species: its photos all
validate and none trains; the other species' photos train as `shifted_train_fraction` says. A
recipe that trains on no photos needs one run, where every species is held out at once. The
recommended point is chosen without the photos (`shifted_weight` 0), so the figure is not tuned
on the species it reports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hiertune.novelty.posthoc import PosthocConfig
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.errors import UserError
from hiertune.novelty.photos import PHOTO_KEYS, metric_name
from hiertune.training.features import FeatureStore
from hiertune.training.loop import run_trial

log = logging.getLogger("hiertune")
# What a fold reports beside the held-out photos: the validation groups at the same point.
GROUP_KEYS = ("seen_acc", "novel_sub_acc", "novel_super_acc")


@dataclass
class LeaveOut:
    """Per held-out species: PHOTO_KEYS at the fold's recommended point, and that fold's
    GROUP_KEYS; `mean` averages the species."""

    species: dict[str, dict[str, float]]

    @property
    def mean(self) -> dict[str, float]:
        keys = [*PHOTO_KEYS, *GROUP_KEYS]
        return {k: float(np.mean([s[k] for s in self.species.values()])) for k in keys}


def leave_species_out(cfg: TrialConfig, cache_root: Path, store: FeatureStore | None = None,
                      posthoc: PosthocConfig | None = None) -> LeaveOut:
    """Run the folds of `cfg` (which names --shifted-data in `shifted_data`) on its space's
    `posthoc` grid and collect them."""
    if not cfg.shifted_data:
        raise UserError("leave-species-out needs real photos of known species: --shifted-data DIR")
    store = store or FeatureStore(cache_root)
    cfg = replace(cfg, shifted="data", shifted_weight=0.0, shifted_holdout="")
    species = _species(cfg, cache_root)
    folds = [""] if cfg.shifted_train_fraction == 0 else species
    out: dict[str, dict[str, float]] = {}
    for held in folds:
        fold = replace(cfg, shifted_holdout=held)
        bundle = load_bundle(fold.data, fold.outliers, fold.data_size, fold.split_config(), cache_root,
                             fold.shift_config())
        log.info("leave-species-out: held out %s (%d photos train)", held or "every species",
                 len(bundle.shifted.train_rows))
        metrics = run_trial(fold, bundle, lambda m, d: None, features=store, last_only=True, posthoc=posthoc)
        for name in ([held] if held else species):
            key = metric_name(name)
            out[name] = {**{k: metrics.get(f"{k}.{key}", math.nan) for k in PHOTO_KEYS},
                         **{k: metrics[k] for k in GROUP_KEYS}}
    return LeaveOut(out)


def _species(cfg: TrialConfig, cache_root: Path) -> list[str]:
    """The subclass names that have photos in --shifted-data, in the training data's order."""
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), cache_root, cfg.shift_config())
    names = bundle.data.hierarchy.subclasses
    photos = bundle.shifted.subclass[bundle.shifted.photo]
    return [names[s] for s in np.unique(photos)]


def render(result: dict) -> str:
    """The `hiertune leave-out` table: per held-out species, then the mean."""
    header = (f"{'held-out species':<28} {'photo super':>11} {'photo sub':>9} {'called novel':>12} {'seen':>6} "
              f"{'novel_sub':>9} {'novel_super':>11}")
    rows = [*result["species"].items(), ("mean", result["mean"])]
    return "\n".join([header, *(f"{name:<28} {m['photos_super_acc']:>11.3f} {m['photos_sub_acc']:>9.3f} "
                                 f"{m['photos_called_novel']:>12.3f} {m['seen_acc']:>6.3f} {m['novel_sub_acc']:>9.3f} "
                                 f"{m['novel_super_acc']:>11.3f}" for name, m in rows)])
