"""Leave-species-out: how a training recipe treats real photos of known species whose real
photos training never saw.

A user with real photos of a few known species (`--shifted-data`) wants to know what the model
will do with real photos of the *other* known species. One fold per species: its photos never
train and never choose anything; the other species' photos train as `shifted_train_fraction`
says, and those that validate weigh `shifted_weight` in the seen objective that chooses the
recommended point, as they would in the user's sweep. A recipe whose photos neither train nor
choose (both settings 0) needs one run, where every species is held out at once.

Each fold's model is replayed on validation from its checkpoint (hiertune.training.replay); the
point is chosen on validation without the held-out species' photos, and those photos are then
classified at it. With a library of variations of the recipe, each fold also selects an
ensemble of its models the same way (hiertune.novelty.ensemble) and reports it beside. With
test-time views (hiertune.data.views), the fold's model (and its ensemble) are reported again on
their outputs averaged over the images and those views, the point chosen on them the same way.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hiertune.data.bundle import DataBundle, load_bundle
from hiertune.errors import UserError
from hiertune.models.registry import Heads
from hiertune.novelty.ensemble import combine, ensemble_grid, select
from hiertune.novelty.photos import PHOTO_KEYS, photo_results, species_results
from hiertune.novelty.posthoc import EvalBatch, PosthocConfig, posthoc_grid
from hiertune.novelty.scores import FeatureScorer
from hiertune.training.config import TrialConfig
from hiertune.training.features import FeatureStore
from hiertune.training.loop import run_trial
from hiertune.training.replay import Replayed, replay_validation

log = logging.getLogger("hiertune")
# What a fold reports beside the held-out photos: the validation groups at the same point.
GROUP_KEYS = ("seen_acc", "novel_sub_acc", "novel_super_acc")


@dataclass
class LeaveOut:
    """Per held-out species: PHOTO_KEYS at the fold's recommended point, and that fold's
    GROUP_KEYS; `mean` averages the species. `ensemble`: the same for each fold's selected
    ensemble, `members` its weights per fold (library order, the recipe's own model first);
    `views`, `ensemble_views`: the same with test-time views."""

    species: dict[str, dict[str, float]]
    ensemble: dict[str, dict[str, float]] = field(default_factory=dict)
    views: dict[str, dict[str, float]] = field(default_factory=dict)
    ensemble_views: dict[str, dict[str, float]] = field(default_factory=dict)
    members: dict[str, list[int]] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        return mean_figures(self.species)

    @property
    def ensemble_mean(self) -> dict[str, float]:
        return mean_figures(self.ensemble)

    def to_dict(self) -> dict:
        return {"species": self.species, "mean": self.mean}

    def render(self) -> str:
        """The `hiertune leave-out` table: per held-out species, then the mean."""
        header = (f"{'held-out species':<28} {'photo super':>11} {'photo sub':>9} {'called novel':>12} {'seen':>6} "
                  f"{'novel_sub':>9} {'novel_super':>11}")
        rows = [*self.species.items(), ("mean", self.mean)]
        return "\n".join([header, *(f"{name:<28} " + " ".join(f"{m[k]:>{w}.3f}" for k, w in _COLUMNS)
                                     for name, m in rows)])


# The table's columns and widths, in order.
_COLUMNS = (("photos_super_acc", 11), ("photos_sub_acc", 9), ("photos_called_novel", 12), ("seen_acc", 6),
            ("novel_sub_acc", 9), ("novel_super_acc", 11))


def mean_figures(species: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = [*PHOTO_KEYS, *GROUP_KEYS]
    return {k: float(np.mean([s[k] for s in species.values()])) for k in keys}


def leave_species_out(cfg: TrialConfig, cache_root: Path, store: FeatureStore | None = None,
                      posthoc: PosthocConfig | None = None, library: tuple[dict, ...] = (),
                      ensemble: int = 0, views: tuple[str, ...] = ()) -> LeaveOut:
    """Run the folds of `cfg` (which names --shifted-data in `shifted_data`) on its space's
    `posthoc` grid and collect them.
    With a `library` (settings that vary `cfg`, one model each beside `cfg`'s own) and `ensemble`
    picks, each fold also selects an ensemble of those models on its validation images. With
    test-time `views`, each is also reported on its outputs averaged over them."""
    if not cfg.shifted_data:
        raise UserError("leave-species-out needs real photos of known species: --shifted-data DIR")
    store = store or FeatureStore(cache_root)
    cfg = replace(cfg, shifted="data", shifted_holdout="")
    species = _species(cfg, cache_root)
    folds = species if cfg.shifted_train_fraction or cfg.shifted_weight else [""]
    out: LeaveOut = LeaveOut({})
    for held in folds:
        fold = replace(cfg, shifted_holdout=held)
        bundle = load_bundle(fold.data, fold.outliers, fold.data_size, fold.split_config(), cache_root,
                             fold.shift_config())
        log.info("leave-species-out: held out %s (%d photos train)", held or "every species",
                 len(bundle.shifted.train_rows))
        names = [held] if held else species
        with tempfile.TemporaryDirectory(prefix="hiertune-lso-") as tmp:
            models = [_train(fold, bundle, store, posthoc, Path(tmp) / "0", views)]
            if library and ensemble:
                models += [_train(TrialConfig.from_dict({**fold.to_dict(), **overrides}), bundle, store, posthoc,
                                  Path(tmp) / str(k), views) for k, overrides in enumerate(library, 1)]
        first = models[0]
        held_rows = first.photos & np.isin(first.batch.sub_target.numpy(),
                                           [bundle.data.hierarchy.subclasses.index(n) for n in names])
        grid = replace(posthoc or PosthocConfig(), shifted_weight=fold.shifted_weight)
        out.species.update(_figures(first.batch, first.scorers, first, held_rows, grid, names))
        if views:
            out.views.update(_figures(first.views, first.scorers, first, held_rows, grid, names))
        if library and ensemble:
            keep = ~held_rows
            chosen = select([_rows(m.batch, keep) for m in models], first.heads, ensemble, grid)
            out.members[held or "every species"] = list(chosen.counts)
            log.info("leave-species-out ensemble: weights %s (hypervolume %.3f, best single %.3f)", chosen.counts,
                     chosen.hypervolume, chosen.single)
            weights = [chosen.counts[i] for i in chosen.members]
            joint = combine([models[i].batch for i in chosen.members], weights)
            out.ensemble.update(_figures(joint, None, first, held_rows, grid, names))
            if views:  # the same members, on their view-averaged outputs
                joint = combine([models[i].views for i in chosen.members], weights)
                out.ensemble_views.update(_figures(joint, None, first, held_rows, grid, names))
    return out


def _train(cfg: TrialConfig, bundle: DataBundle, store: FeatureStore, posthoc: PosthocConfig | None,
           into: Path, views: tuple[str, ...]) -> Replayed:
    """One model of a fold, trained, and its validation outputs replayed from its last checkpoint."""
    def keep(metrics: dict, directory: Path) -> None:
        shutil.copytree(directory, into)

    run_trial(cfg, bundle, keep, features=store, last_only=True, posthoc=posthoc)
    return replay_validation(cfg, bundle, into, store, views)


def _rows(batch: EvalBatch, keep: np.ndarray) -> EvalBatch:
    k = np.flatnonzero(keep)
    return EvalBatch(*(t[k] for t in (batch.super_logits, batch.sub_logits, batch.super_features,
                                      batch.sub_features, batch.super_target, batch.sub_target)),
                     None if batch.group is None else batch.group[k])


def _figures(batch: EvalBatch, scorers: dict[str, FeatureScorer] | None, model: Replayed, held: np.ndarray,
             grid: PosthocConfig, names: list[str]) -> dict[str, dict[str, float]]:
    """The point chosen on `grid` without the held-out photos (the knee, the other photos weighing
    its shifted_weight; its logit scores only without `scorers`), and per held-out species its
    photos at that point beside the validation groups."""
    heads: Heads = model.heads
    subset = _rows(batch, ~held)
    result = posthoc_grid(subset, heads, grid, scorers) if scorers is not None else ensemble_grid(subset, heads, grid)
    point = result.recommended
    photos = photo_results(batch, heads, point, scorers, held, model.subclass_names)
    return {name: {**species_results(photos, name), **{k: getattr(point, k) for k in GROUP_KEYS}} for name in names}


def _species(cfg: TrialConfig, cache_root: Path) -> list[str]:
    """The subclass names that have photos in --shifted-data, in the training data's order."""
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), cache_root, cfg.shift_config())
    names = bundle.data.hierarchy.subclasses
    photos = bundle.shifted.subclass[bundle.shifted.photo]
    return [names[s] for s in np.unique(photos)]
