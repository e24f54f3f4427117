"""Leave-species-out: folds, figures replayed from each fold's checkpoint, and ensembles per fold."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hiertune.training import checkpoint
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.training.features import FeatureStore
from hiertune.training.leave_out import leave_species_out
from hiertune.training.device import autocast
from hiertune.training.inputs import ImageInputs
from hiertune.training.loop import build, evaluate, heads_for, run_trial
from hiertune.training.replay import replay_validation

pytestmark = pytest.mark.slow
SPECIES = [f"sub{i}" for i in range(6)]


def _config(data, outliers, **changes) -> TrialConfig:
    # The tiny set's own images serve as the "photos": six species, five photos each.
    return TrialConfig(family="dualhead", backbone="resnet10t", finetune="linear", data_size=32, image_size=32,
                       epochs=2, batch_size=8, threads=1, augment=False, outlier_mode="oe", data=str(data),
                       outliers=str(outliers), shifted_data=str(data), pseudo_novel_fraction=0.0, **changes)


def test_one_fold_replays_the_trials_own_photo_figures_and_selects_an_ensemble(tiny_data, tiny_outliers, tmp_path):
    cfg = _config(tiny_data, tiny_outliers, shifted_weight=0.0)
    result = leave_species_out(cfg, tmp_path, library=({"seed": 1}, {"lr": 1e-2}), ensemble=3, views=("flip",))
    # Photos neither train nor choose: one fold holds every species out.
    assert list(result.members) == ["every species"] and 1 <= sum(result.members["every species"]) <= 3
    assert list(result.species) == SPECIES and list(result.ensemble) == SPECIES
    assert list(result.views) == SPECIES and list(result.ensemble_views) == SPECIES
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


def test_test_time_views_average_the_model_over_the_validation_images_and_their_views(tiny_data, tiny_outliers,
                                                                                      tmp_path):
    cfg = replace(_config(tiny_data, tiny_outliers, source_directions=2), shifted="data")
    bundle = load_bundle(cfg.data, cfg.outliers, 32, cfg.split_config(), tmp_path, cfg.shift_config())
    trained = tmp_path / "trained"
    run_trial(cfg, bundle, lambda m, d: shutil.copytree(d, trained), features=FeatureStore(tmp_path),
              last_only=True)
    store = FeatureStore(tmp_path)
    replayed = replay_validation(cfg, bundle, trained, store, views=("flip",))
    # The flipped view, through the whole model (backbone included, no cache): the rows must line up.
    model, augment = build(cfg, heads_for(bundle, cfg), torch.device("cpu"), trains=False)
    model.load_state_dict(load_file(str(trained / checkpoint.MODEL)))
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    flipped = np.ascontiguousarray(split.val_images[:, :, ::-1])
    direct, _ = evaluate(model, ImageInputs(torch.from_numpy(flipped), augment), split.val_superclass,
                         split.val_subclass, replayed.heads, cfg, torch.device("cpu"), autocast(torch.device("cpu"), False),
                         split.val_group)
    for level in ("super_logits", "sub_logits", "super_features"):
        clean, mean = getattr(replayed.batch, level), getattr(replayed.views, level)
        assert torch.allclose(mean, (clean + getattr(direct, level)) / 2, atol=1e-4)
        assert not torch.allclose(mean, clean, atol=1e-3)  # the view changed something
    assert replayed.views.sub_features is replayed.views.super_features  # dualhead: one feature, kept one
    assert torch.equal(replayed.views.sub_target, replayed.batch.sub_target)

