"""The training loop on real (synthetic) data: every family, resume, the CLI. (The trainable in a
real Tune session: tests/sweep/test_sweep.py::test_small_sweep_end_to_end.)"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FAST
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.data.sources import synthetic_default
from hiertune.data.augment import BatchAugment
from hiertune.models.registry import Heads, ModelOutput, create_model
from hiertune.novelty.posthoc import PosthocConfig
from hiertune.novelty.registry import list_scores, needs_of, unavailable
from hiertune.novelty.scores import load_scorers
from hiertune.training import checkpoint as ckpt
from hiertune.training.inputs import ImageInputs
from hiertune.training.records import EpochMetrics
from hiertune.training.loop import fit_scorers, forward_all, heads_for, run_trial, scorer_rows



@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory):
    """The embedded synthetic default, as a fresh machine gets it."""
    cache = tmp_path_factory.mktemp("default-cache")
    cfg = TrialConfig()
    return load_bundle(str(synthetic_default(cache)), None, 64, cfg.split_config(), cache)


@pytest.fixture(scope="module")
def bundle(small_bundle):
    return small_bundle


def collect(into: list):
    def report(metrics: EpochMetrics, checkpoint: Path) -> None:
        saved = checkpoint.parent / f"kept-{len(into)}-{checkpoint.name}"
        shutil.copytree(checkpoint, saved)
        into.append((metrics.flat(), saved))

    return report


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dualhead", "twomodel", "cosine", "layover", "cnn"])
def test_every_family_trains_one_epoch_on_the_synthetic_default(family, default_bundle):
    reports = []
    # Each family's code at the smallest input its backbone takes whole (32 px: resnet10t's last
    # stage at 1x1), and feature scorers fitted on a few hundred images: the same paths, a quarter
    # of the convolution work of the data's own 64 px.
    cfg = TrialConfig(family=family, finetune="linear" if family == "layover" else "full", outlier_fraction=0.5,
                      **{**FAST, "image_size": 32, "scorer_images": 300})
    final = run_trial(cfg, default_bundle, collect(reports))
    assert len(reports) == 1
    metrics, checkpoint = reports[0]
    assert json.dumps(metrics) == json.dumps(final.flat()) and final.epoch == 1
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    for key in ("seen_super_acc", "unseen_super_acc", "seen_sub_acc", "unseen_sub_acc", "seen", "unseen",
                "hypervolume", "super_auroc_msp", "sub_fpr95_energy", "hypervolume_mahalanobis"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert final.outlier_images > 0 and final.recommended.score in list_scores()
    for name in (ckpt.MODEL, ckpt.STATE, ckpt.HISTORY, ckpt.SCORERS):
        assert (checkpoint / name).is_file(), name
    assert load_file(checkpoint / ckpt.MODEL)
    torch.load(checkpoint / ckpt.STATE, weights_only=True)


TIMINGS = ("train_images_per_s", "epoch_seconds", "eval_forward_seconds", "scorer_fit_seconds", "posthoc_seconds",
           "feature_seconds")


@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(bundle):
    # Dropout draws from torch's global generator: the checkpoint carries it too.
    cfg = TrialConfig(family="cnn", dropout=0.3, **{**FAST, "epochs": 2})
    straight = []
    run_trial(cfg, bundle, collect(straight))
    resumed = []
    run_trial(cfg, bundle, collect(resumed), resume=straight[0][1])
    assert [m["epoch"] for m, _ in resumed] == [2]
    (again, again_dir), (first, first_dir) = resumed[0], straight[1]
    assert again["attempt"] == 2 and first["attempt"] == 1
    assert list(again) == list(first)
    differ = [k for k in first if k not in ("attempt", *TIMINGS) and json.dumps(again[k]) != json.dumps(first[k])]
    assert differ == []  # bit-identical, not close
    assert (again_dir / ckpt.MODEL).read_bytes() == (first_dir / ckpt.MODEL).read_bytes()
    assert (again_dir / ckpt.SCORERS).read_bytes() == (first_dir / ckpt.SCORERS).read_bytes()
    history = json.loads((again_dir / ckpt.HISTORY).read_text())
    assert [(h["epoch"], h["attempt"]) for h in history] == [(1, 1), (2, 2)]


@pytest.mark.slow
def test_mixup_and_outlier_exposure_paths_train(bundle):
    def run(**overrides) -> tuple[dict, Path]:
        reports = []
        run_trial(TrialConfig(family="cnn", **{**FAST, **overrides}), bundle, collect(reports))
        return reports[0]

    mixed_oe, checkpoint = run(mixup_alpha=0.2, outlier_mode="oe")
    plain_oe, _ = run(outlier_mode="oe")
    plain_class, _ = run()
    for m in (mixed_oe, plain_oe, plain_class):
        assert math.isfinite(m["train_loss"]) and m["outlier_images"] > 0
    # Outlier exposure: outliers train through the uniform-target term, not as a novel class.
    h = bundle.data.hierarchy
    assert plain_oe["train_loss_oe"] > 0 and mixed_oe["train_loss_oe"] > 0
    assert plain_class["train_loss_oe"] == 0.0
    # ... and its heads have no novel logit: one output per seen class.
    weights = load_file(checkpoint / ckpt.MODEL)
    assert len(weights["super_head.1.bias"]) == len(h.superclasses)
    assert len(weights["sub_head.1.bias"]) == len(h.subclasses)
    # Mixup changes what is trained on: same seed, same batches, a different loss.
    assert mixed_oe["train_loss"] != pytest.approx(plain_oe["train_loss"], rel=1e-3)
    # Feature-space scores are fitted on clean eval-mode training features, mixup or not.
    assert "hypervolume_knn" in mixed_oe and "hypervolume_knn" in plain_oe


@pytest.mark.slow
@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_scorers_are_fitted_on_clean_eval_mode_training_features_with_or_without_mixup(bundle, mixup):
    reports = []
    # The mixed run also corrupts half its training batches (corrupt_p): that path trains too.
    cfg = TrialConfig(family="cnn", mixup_alpha=mixup, corrupt_p=0.5 if mixup else 0.0, outlier_mode="oe",
                      scorer_images=50, **FAST)
    run_trial(cfg, bundle, collect(reports))
    metrics, checkpoint = reports[0]
    assert math.isfinite(metrics["train_loss"]) and metrics["scorer_fit_seconds"] > 0
    assert "hypervolume_knn" in metrics and "hypervolume_vim" in metrics  # mixup no longer disables them
    # The saved scorers are a function of the final weights and the (capped, seeded) training
    # images only: refitting them from the checkpoint's model reproduces them exactly, whatever
    # the epoch's batches were (mixed or not).
    heads = heads_for(bundle, cfg)
    model = create_model(cfg.model_config(), heads)
    model.load_state_dict(load_file(checkpoint / ckpt.MODEL))
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    rows = scorer_rows(split.train_superclass, split.train_subclass, heads, 50, cfg.seed)
    assert len(rows) == 50
    images = ImageInputs(torch.from_numpy(split.train_images), BatchAugment(cfg.augment_config(), torch.device("cpu")))
    out = forward_all(model, images.rows(rows), torch.device("cpu"), nullcontext)
    again = fit_scorers(out, torch.from_numpy(split.train_superclass)[rows],
                        torch.from_numpy(split.train_subclass)[rows], heads, model)
    saved = load_scorers(checkpoint / ckpt.SCORERS)
    for level in ("super", "sub"):
        for key, value in again[level].state_dict().items():
            assert torch.equal(value, saved[level].state_dict()[key]), (level, key)


@pytest.mark.parametrize("scores, bank, head, vim", [
    (("msp", "energy"), False, False, False), (("mahalanobis", "knn"), True, False, False),
    (("msp", "fdbd"), True, True, False), (("vim",), True, True, True)])
def test_only_what_the_grids_scores_need_is_fitted(scores, bank, head, vim):
    heads = Heads(2, 4, (0, 0, 1, 1), novel_logit=True)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 8, generator=g)
    out = ModelOutput(torch.randn(64, 3, generator=g), torch.randn(64, 5, generator=g), feats, feats)
    sub = torch.arange(64) % 4
    model = torch.nn.Module()
    model.super_head, model.sub_head = torch.nn.Linear(8, 3), torch.nn.Linear(8, 5)
    fitted = fit_scorers(out, sub // 2, sub, heads, model, needs=needs_of(scores))
    assert bool(fitted) == bank
    for level in fitted.values():
        assert (level.head is not None) == head
        assert (head and level.head.vim_residual is not None) == vim
    assert all(unavailable(name, fitted) is None for name in scores)


def test_the_space_grid_is_what_every_epoch_evaluates(bundle, one_thread):
    """Only the grid's scores and τ, on every epoch: a grid of vim alone is fitted in full on an
    epoch between rungs too (leaving vim out would leave nothing)."""
    cfg = TrialConfig(family="cnn", **{**FAST, "epochs": 2})
    grid = PosthocConfig(scores=("vim",), tau_super=(0.1, 0.2), tau_sub=(0.3,))
    reports = []
    run_trial(cfg, bundle, lambda metrics, path: reports.append(metrics), rungs=(2,), posthoc=grid)
    assert [m.scores for m in reports] == [("vim",), ("vim",)]
    assert all(m.recommended.tau_super in (0.1, 0.2) and m.recommended.tau_sub == 0.3 for m in reports)


def test_outlier_fraction_selects_a_prefix_of_the_pool(bundle):
    full = bundle.for_trial(None)
    half = bundle.for_trial(None, 0.5)
    pool = len(bundle.splits.outlier_pool)
    novel = lambda s: int((s.train_superclass == bundle.data.hierarchy.novel_superclass).sum())
    assert novel(full) == pool and novel(half) == round(pool / 2)


@pytest.mark.slow
def test_cli_train_runs_a_space_and_prints_json(cli, small_data, tmp_path):
    spaces = Path(__file__).resolve().parents[2] / "search_spaces"
    result = cli("train", str(spaces / "smoke.yaml"), "--data", str(small_data), "--set", "epochs=2",
                 "--set", "threads=1", "--out", str(tmp_path / "run"), "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out.splitlines()[-1])
    assert out["epochs"] == 2 and out["config"]["family"] == "cnn" and out["config"]["epochs"] == 2
    best = out["best"]
    assert {"seen_super_acc", "unseen_super_acc", "seen_sub_acc", "unseen_sub_acc"} <= best.keys()
    assert 0.0 <= best["tau_super"] <= 0.5 and 0.0 <= best["tau_sub"] <= 0.5  # smoke.yaml's declared ranges
    assert (tmp_path / "run" / "checkpoint" / ckpt.MODEL).is_file()
    assert json.loads((tmp_path / "run" / "result.json").read_text())["best_epoch"] == out["best_epoch"]
