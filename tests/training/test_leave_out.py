"""Leave-species-out: folds, figures replayed from each fold's checkpoint, and ensembles per fold."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.training.features import FeatureStore
from hiertune.training.leave_out import leave_species_out
from hiertune.training.loop import run_trial

pytestmark = pytest.mark.slow
SPECIES = [f"sub{i}" for i in range(6)]


def _config(data, outliers, **changes) -> TrialConfig:
    # The tiny set's own images serve as the "photos": six species, five photos each.
    return TrialConfig(family="dualhead", backbone="resnet10t", finetune="linear", data_size=32, image_size=32,
                       epochs=2, batch_size=8, threads=1, augment=False, outlier_mode="oe", data=str(data),
                       outliers=str(outliers), shifted_data=str(data), pseudo_novel_fraction=0.0, **changes)


def test_one_fold_replays_the_trials_own_photo_figures_and_selects_an_ensemble(tiny_data, tiny_outliers, tmp_path):
    cfg = _config(tiny_data, tiny_outliers, shifted_weight=0.0)
    result = leave_species_out(cfg, tmp_path, library=({"seed": 1}, {"lr": 1e-2}), ensemble=3)
    # Photos neither train nor choose: one fold holds every species out.
    assert list(result.members) == ["every species"] and 1 <= sum(result.members["every species"]) <= 3
    assert list(result.species) == SPECIES and list(result.ensemble) == SPECIES
    # The figures replayed from the checkpoint are the ones the trial reported itself.
    trial_cfg = replace(cfg, shifted="data")
    bundle = load_bundle(trial_cfg.data, trial_cfg.outliers, 32, trial_cfg.split_config(), tmp_path,
                         trial_cfg.shift_config())
    metrics = run_trial(trial_cfg, bundle, lambda m, d: None, features=FeatureStore(tmp_path), last_only=True)
    for name in SPECIES:
        for key in ("photos_super_acc", "photos_sub_acc", "photos_called_novel"):
            assert result.species[name][key] == pytest.approx(metrics.photos[f"{key}.{name}"])
    assert result.mean["seen_acc"] == pytest.approx(metrics.recommended.seen_acc)


def test_photos_that_choose_the_point_make_one_fold_per_species(tiny_data, tiny_outliers, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hiertune"):
        result = leave_species_out(_config(tiny_data, tiny_outliers, shifted_weight=0.5), tmp_path)
    held = [r.getMessage() for r in caplog.records if r.getMessage().startswith("leave-species-out: held out")]
    assert [line.split("held out ")[1].split(" (")[0] for line in held] == SPECIES
    assert list(result.species) == SPECIES and not result.ensemble
