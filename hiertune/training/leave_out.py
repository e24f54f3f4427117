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
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hiertune.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.errors import UserError
from hiertune.novelty.ensemble import combine, ensemble_grid, select
from hiertune.novelty.photos import PHOTO_KEYS, metric_name, photo_results
from hiertune.training.features import FeatureStore
from hiertune.training.loop import run_trial
from hiertune.training.replay import replay_validation

log = logging.getLogger("hiertune")
# What a fold reports beside the held-out photos: the validation groups at the same point.
GROUP_KEYS = ("seen_acc", "novel_sub_acc", "novel_super_acc")


@dataclass
class LeaveOut:
    """Per held-out species: PHOTO_KEYS at the fold's recommended point, and that fold's
    GROUP_KEYS; `mean` averages the species."""

    species: dict[str, dict[str, float]]
    # The same per held-out species for an ensemble selected from a library of configurations
    # (hiertune.novelty.ensemble), with its members' weights per fold; empty without a library.
    ensemble: dict[str, dict[str, float]] = field(default_factory=dict)
    members: dict[str, list[int]] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        return _mean(self.species)

    @property
    def ensemble_mean(self) -> dict[str, float]:
        return _mean(self.ensemble)


def _mean(species: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = [*PHOTO_KEYS, *GROUP_KEYS]
    return {k: float(np.mean([s[k] for s in species.values()])) for k in keys}


def leave_species_out(cfg: TrialConfig, cache_root: Path, store: FeatureStore | None = None,
                      library: tuple[dict, ...] = (), ensemble: int = 0) -> LeaveOut:
    """Run the folds of `cfg` (which names --shifted-data in `shifted_data`) and collect them.
    With a `library` (settings that vary `cfg`, one model each beside `cfg`'s own) and `ensemble`
    picks, each fold also selects an ensemble of those models on its validation images (no
    photo weighs in) and reports the held-out photos at the ensemble's own recommended point."""
    if not cfg.shifted_data:
        raise UserError("leave-species-out needs real photos of known species: --shifted-data DIR")
    store = store or FeatureStore(cache_root)
    cfg = replace(cfg, shifted="data", shifted_weight=0.0, shifted_holdout="")
    species = _species(cfg, cache_root)
    folds = [""] if cfg.shifted_train_fraction == 0 else species
    out: dict[str, dict[str, float]] = {}
    joint: dict[str, dict[str, float]] = {}
    members: dict[str, list[int]] = {}
    for held in folds:
        fold = replace(cfg, shifted_holdout=held)
        bundle = load_bundle(fold.data, fold.outliers, fold.data_size, fold.split_config(), cache_root,
                             fold.shift_config())
        log.info("leave-species-out: held out %s (%d photos train)", held or "every species",
                 len(bundle.shifted.train_rows))
        with tempfile.TemporaryDirectory(prefix="hiertune-lso-") as tmp:
            metrics = _train(fold, bundle, store, Path(tmp) / "base")
            if library and ensemble:
                picked, figures = _fold_ensemble(fold, bundle, store, Path(tmp), library, ensemble)
        held_names = [held] if held else species
        for name in held_names:
            key = metric_name(name)
            out[name] = {**{k: metrics.get(f"{k}.{key}", math.nan) for k in PHOTO_KEYS},
                         **{k: metrics[k] for k in GROUP_KEYS}}
        if library and ensemble:
            members[held or "every species"] = picked
            joint.update({name: {**{k: figures.get(f"{k}.{metric_name(name)}", math.nan) for k in PHOTO_KEYS},
                                 **{k: figures[k] for k in GROUP_KEYS}} for name in held_names})
    return LeaveOut(out, joint, members)


def _train(cfg: TrialConfig, bundle, store: FeatureStore, into: Path) -> dict:
    """One model of a fold, its last checkpoint copied `into`; its last epoch's metrics."""
    def keep(metrics: dict, directory: Path) -> None:
        shutil.copytree(directory, into)

    return run_trial(cfg, bundle, keep, features=store, last_only=True)


def _fold_ensemble(fold: TrialConfig, bundle, store: FeatureStore, work: Path, library: tuple[dict, ...],
                   size: int) -> tuple[list[int], dict[str, float]]:
    """One fold's library trained (model 0, `fold` itself, is already in work/base), an ensemble
    selected on validation, and the photos and validation groups at its recommended point."""
    replayed = [replay_validation(fold, bundle, work / "base", store)]
    for k, overrides in enumerate(library, 1):
        member = TrialConfig.from_dict({**fold.to_dict(), **overrides})
        _train(member, bundle, store, work / str(k))
        replayed.append(replay_validation(member, bundle, work / str(k), store))
    heads = replayed[0].heads
    chosen = select([r.batch for r in replayed], heads, size)
    batch = combine([replayed[i].batch for i in chosen.members], [chosen.counts[i] for i in chosen.members])
    point = ensemble_grid(batch, heads, 0.0).recommended
    log.info("leave-species-out ensemble: members %s (hypervolume %.3f, best single %.3f)",
             dict(zip(chosen.members, (chosen.counts[i] for i in chosen.members))), chosen.hypervolume, chosen.single)
    photos = photo_results(batch, heads, point, None, replayed[0].photos, replayed[0].subclass_names)
    return [chosen.counts[i] for i in range(len(replayed))], {**photos, **{k: point[k] for k in GROUP_KEYS}}


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
