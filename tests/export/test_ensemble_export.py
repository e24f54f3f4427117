"""An ensemble of heads on one frozen backbone, as export-best --ensemble builds it: members
selected on validation, retrained, thresholds calibrated on the ensemble's own scores; and the
ensemble directory as predict loads it. It is exported with a test-time view (export-best
--views), and its first member retrained with one, as a single export would be."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import write_image, write_tiny_data
from hiertune.data.views import flip
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.errors import UserError
from hiertune.export.ensemble import assemble, member_point, plan_ensemble
from hiertune.export.export import retrain_config
from hiertune.export.predictor import ENSEMBLE, EnsembleModel, ExportedModel
from hiertune.export.retrain import RetrainJob, calibrate_point, retrain
from hiertune.novelty.ensemble import logit_scores
from hiertune.novelty.scores import score_levels
from hiertune.sweep.front import Pick
from hiertune.sweep.state import TrialRecord
from hiertune.training.loop import heads_for, run_trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    """Three trials (lr and seed differ) on one frozen backbone, one of them a cnn that cannot join."""
    tmp_path = tmp_path_factory.mktemp("ensemble")
    tiny_data = write_tiny_data(tmp_path / "data")
    tiny_outliers = tmp_path / "outliers"
    for k in range(4):
        for n in range(3):
            write_image(tiny_outliers / f"class{k}" / f"{n}.jpg", 1000 + 10 * k + n)
    base = dict(family="dualhead", backbone="resnet10t", finetune="linear", data_size=32, image_size=32, epochs=2,
                batch_size=8, threads=1, augment=False, outlier_mode="oe", data=str(tiny_data),
                outliers=str(tiny_outliers), pseudo_novel_fraction=0.0, val_fraction=0.3, source_directions=2)
    configs = [TrialConfig(**base, lr=3e-3), TrialConfig(**base, lr=1e-2, seed=1),
               TrialConfig(family="cnn", cnn_width=4, data_size=32, image_size=32, epochs=1, threads=1,
                           outlier_mode="oe", data=str(tiny_data), outliers=str(tiny_outliers),
                           pseudo_novel_fraction=0.0, val_fraction=0.3)]
    trials = {}
    for k, cfg in enumerate(configs):
        bundle = load_bundle(cfg.data, cfg.outliers, 32, cfg.split_config(), tmp_path / "cache", cfg.shift_config())
        ckpt = tmp_path / f"trial-{k}"
        run_trial(cfg, bundle, lambda m, d, ckpt=ckpt: shutil.copytree(d, ckpt, dirs_exist_ok=True))
        trials[f"t{k}"] = TrialRecord(f"t{k}", f"trial-{k:02d}", "completed", cfg.epochs, {}, str(ckpt), {},
                                      config=cfg.to_dict())
    plan = plan_ensemble(trials, SimpleNamespace(trial_id="t0"), Pick("knee"), 3, tmp_path / "cache")
    outputs, cfgs = [], []
    for i, (trial, _) in enumerate(plan.members, 1):
        cfg = retrain_config(trial, member_point(plan, trial), 0.3)
        bundle = load_bundle(cfg.data, cfg.outliers, 32, cfg.split_config(), tmp_path / "cache", cfg.shift_config())
        outputs.append(retrain(RetrainJob(i, member_point(plan, trial), cfg, tmp_path / "cache",
                                          ("flip",) if i == 1 else ()), bundle, 1))
        cfgs.append(cfg)
    output = assemble(plan, outputs, bundle, heads_for(bundle, cfgs[0]), cfgs[0], tmp_path / "cache", ("flip",))
    root = tmp_path / "ensemble"
    for name, data in output.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root, plan, bundle, cfgs[0]


def test_an_ensemble_export_averages_its_members_and_calibrates_on_its_own_scores(ensemble_dir, tmp_path):
    root, plan, bundle, cfg = ensemble_dir
    # The cnn trains its backbone: never in the library of heads on one frozen backbone.
    assert plan.library == ["trial-00", "trial-01"] and plan.point.score in logit_scores()
    assert 1 <= sum(w for _, w in plan.members) <= 3 and plan.selection.hypervolume >= plan.selection.single
    model = ExportedModel.load(root, features=None)
    assert isinstance(model, EnsembleModel) and len(model.members) == len(plan.members)
    images = bundle.data.train.images[:7]
    # Each image: the members' logits averaged with their weights (the members' own views aside),
    # then averaged with those of its flipped view.
    outs = [m._forward(images, None, True) for m in model.members]
    weights = np.array(model.weights) / sum(model.weights)
    joint = model._forward(images, None, True)
    assert torch.allclose(joint.sub_logits, sum(w * o.sub_logits for w, o in zip(weights, outs)), atol=1e-5)
    flipped = model._forward(flip(images), None, True)
    assert model.thresholds.views == ("flip",) and torch.allclose(
        model.forward_images(images).sub_logits, (joint.sub_logits + flipped.sub_logits) / 2, atol=1e-5)
    # The thresholds: the ensemble's own scores of the calibration split at its point's acceptance.
    calib = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    scores = score_levels(model.forward_images(calib.val_images), model.heads, plan.point.score)
    saved = json.loads((root / ENSEMBLE).read_text())
    expected = calibrate_point(scores, calib, model.heads, plan.point.point, cfg.shifted_weight)
    assert (float(saved["thr_super"]), float(saved["thr_sub"])) == expected[:2] and saved["views"] == ["flip"]
    # A single export's retraining with a view: its thresholds calibrated on its own averaged scores.
    member = ExportedModel.load(root / "members" / "1", features=None)
    member_scores = score_levels(member.forward_images(calib.val_images), member.heads, plan.point.score)
    member_saved = json.loads((root / "members" / "1" / "thresholds.json").read_text())
    assert member.thresholds.views == ("flip",) and member_saved["views"] == ["flip"]
    assert (member.thresholds.thr_super, member.thresholds.thr_sub) == calibrate_point(
        member_scores, calib, member.heads, plan.point.point, cfg.shifted_weight)[:2]
    assert saved["selection"]["library"] == plan.library
    predictions = model.predict_images([f"{i}.jpg" for i in range(7)], images)
    assert len(predictions.superclass) == 7 and np.all(predictions.subclass[predictions.superclass == 2] == 6)
    # Every member carries its source projection with its weights.
    assert all(m.model.state_dict()["source_projection.basis_pooled"].abs().sum() > 0 for m in model.members)


@pytest.mark.parametrize("change, message", [
    (lambda e: e["members"][0].update(dir="../elsewhere"), "not an ensemble"),
    (lambda e: e["members"][0].update(weight=0), "not an ensemble"),
    (lambda e: e.update(members=[]), "not an ensemble"),
    (lambda e: e.update(score="mahalanobis", thr_super=-1.0, thr_sub=-1.0), "an ensemble scores with"),
    (lambda e: e.update(thr_sub="nan"), "thr_sub must be a number"),
])
def test_a_damaged_ensemble_file_is_one_line(ensemble_dir, tmp_path, change, message):
    root = tmp_path / "copy"
    shutil.copytree(ensemble_dir[0], root)
    raw = json.loads((root / ENSEMBLE).read_text())
    change(raw)
    (root / ENSEMBLE).write_text(json.dumps(raw))
    with pytest.raises(UserError, match=message):
        ExportedModel.load(root)
