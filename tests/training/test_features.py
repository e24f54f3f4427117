"""Frozen-backbone features computed once: the cached path trains and evaluates exactly as the
path through the backbone, a second trial reads the cache, the key follows what the features
depend on, and a damaged cache file is computed again."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import FAST, trial_bundle
from hiertune.training.config import TrialConfig
from hiertune.data.augment import AugmentConfig, BatchAugment
from hiertune.data.bundle import load_bundle
from hiertune.data.corrupt import ShiftConfig, corrupt_batch
from hiertune.data.splits import SHIFTED, take_rows
from hiertune.data.synth import SynthConfig, write_synthetic
from hiertune.errors import UserError
from hiertune.training.faults import CheckpointUnreadable
from hiertune.models.dualhead import DualHead
from hiertune.models.layover import Layover
from hiertune.models.registry import Heads, create_model
from hiertune.sweep.state import load_trials
from hiertune.novelty.memo import Memo
from hiertune.training import checkpoint as ckpt
from hiertune.training import loop
from hiertune.training.loop import forward_all, heads_for, run_trial
from hiertune.training.features import (DRAW_BLOCK, Corruption, FeatureStore, block_generator, bundle_pools, extract,
                                        feature_key, frozen_inputs, images_digest, pool_features, weights_digest)
from hiertune.training.inputs import FeatureInputs, ImageInputs
from hiertune.training.replay import replay_validation

SIZE = 32
TINY = SynthConfig(train_per_subclass=4, test_per_subclass=1, novel_superclass_test_images=4, outlier_per_class=6)
# Frozen backbones on the tiny set: two epochs read the cached features once computed.
FEATURES = {**FAST, "finetune": "linear", "epochs": 2, "batch_size": 16, "augment": False, "layover_hidden": 16,
            "image_size": SIZE}
COMPARED = ("train_loss", "val_loss", "seen", "unseen", "hypervolume", "closed_seen_sub_acc",
            "hypervolume_mahalanobis", "hypervolume_knn", "super_auroc_msp")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    write_synthetic(root, TINY)
    return root


@pytest.fixture(scope="module")
def bundle(data_dir, tmp_path_factory):
    return trial_bundle(data_dir, tmp_path_factory.mktemp("cache"), SIZE)


def trial(bundle, data_dir, store=None, **overrides):
    reports = []

    def report(metrics, checkpoint: Path) -> None:
        reports.append((metrics.flat(), load_file(checkpoint / ckpt.MODEL)))

    cfg = TrialConfig(data=str(data_dir), **{**FEATURES, **overrides})
    run_trial(cfg, bundle, report, features=store)
    return reports


@pytest.fixture
def count_backbone(monkeypatch):
    """Images through dualhead and layover's frozen_features, which every backbone pass of theirs takes."""
    calls = []
    for cls in (DualHead, Layover):
        inner = cls.frozen_features

        def wrapped(self, x, inner=inner):
            calls.append(len(x))
            return inner(self, x)

        monkeypatch.setattr(cls, "frozen_features", wrapped)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dualhead", "layover"])
def test_cached_trial_matches_the_trial_through_the_backbone(family, bundle, data_dir, tmp_path, count_backbone):
    through = trial(bundle, data_dir, family=family, feature_views=0)
    per_epoch = sum(count_backbone)
    assert per_epoch > 0
    count_backbone.clear()
    cached = trial(bundle, data_dir, FeatureStore(tmp_path), family=family, feature_views=1)
    # Only the extraction ran the backbone: once per image of the pools (labeled, outliers,
    # seen_shifted), not once per epoch; the scorer fit reads the cached training rows.
    assert sum(count_backbone) == (len(bundle.data.train.images) + len(bundle.outliers.images)
                                   + len(bundle.shifted.images))
    assert len(through) == len(cached) == 2
    for (m_through, w_through), (m_cached, w_cached) in zip(through, cached):
        for key in COMPARED:
            assert math.isclose(m_through[key], m_cached[key], rel_tol=1e-4, abs_tol=1e-5), key
        assert w_through.keys() == w_cached.keys()
        for name in w_through:
            torch.testing.assert_close(w_through[name], w_cached[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_second_trial_reads_the_cache_without_a_backbone_pass(bundle, data_dir, tmp_path, count_backbone):
    first = FeatureStore(tmp_path)
    trial(bundle, data_dir, first, family="dualhead", epochs=1)
    assert first.computed == 3 and len(list((tmp_path / "features").glob("*.safetensors"))) == 3  # + seen_shifted
    count_backbone.clear()
    second = FeatureStore(tmp_path)  # another trial, another process: only the disk is shared
    trial(bundle, data_dir, second, family="dualhead", epochs=1, lr=3e-3, outlier_fraction=0.5)
    assert second.computed == 0 and count_backbone == []
    # A trial with another seed has other random weights: other features.
    trial(bundle, data_dir, second, family="dualhead", epochs=1, seed=1)
    assert second.computed == 3


def test_the_next_trial_in_a_process_reuses_feature_statistics_and_matches_a_cold_one(bundle, data_dir, tmp_path,
                                                                                      monkeypatch):
    store = FeatureStore(tmp_path)
    monkeypatch.setattr(loop, "PROCESS_MEMO", Memo())
    cold = trial(bundle, data_dir, store, family="dualhead")
    fitted = []
    get = Memo.get

    def counting(self, name, inputs, compute):
        return get(self, name, inputs, lambda: (fitted.append(name), compute())[1])

    monkeypatch.setattr(Memo, "get", counting)
    warm = trial(bundle, data_dir, store, family="dualhead")
    # What depends on the frozen features alone was fitted by the trial before; only what reads
    # this trial's heads is computed.
    assert fitted and not [n for n in fitted if n.startswith(("bank", "knn", "covariance", "background",
                                                              "class_distances", "seen_rows"))], fitted
    assert len(cold) == len(warm) == 2
    for (a, _), (b, _) in zip(cold, warm):
        for key, value in a.items():
            if isinstance(value, float) and not key.endswith(("seconds", "_per_s")):
                assert value == b[key] or (math.isnan(value) and math.isnan(b[key])), key


def test_shared_sets_serve_a_trial_without_disk_or_backbone(bundle, data_dir, tmp_path, count_backbone):
    driver = FeatureStore(tmp_path)
    trial(bundle, data_dir, driver, family="layover", epochs=1)
    shared = FeatureStore(None, sets=dict(driver.sets), digests=dict(driver.digests))
    count_backbone.clear()
    trial(bundle, data_dir, shared, family="layover", epochs=1, lr=1e-2)
    assert shared.computed == 0 and count_backbone == []


def test_cache_key_follows_data_input_pipeline_and_weights():
    heads = heads_for_tiny()
    torch.manual_seed(0)
    model = create_model(TrialConfig(backbone="resnet10t", finetune="linear").model_config(), heads)
    images = np.zeros((4, SIZE, SIZE, 3), np.uint8)
    plain = AugmentConfig()
    base = dict(model=model, weights=weights_digest(model), augment=plain, image_size=SIZE, views=1,
                images=images_digest(images), precision="torch.float32")
    key = feature_key(**base)
    assert feature_key(**base) == key
    changed = images.copy()
    changed[0, 0, 0, 0] = 1
    torch.manual_seed(1)
    other = create_model(TrialConfig(backbone="resnet10t", finetune="linear").model_config(), heads)
    variants = {
        "data": dict(images=images_digest(changed)),
        "image size": dict(image_size=64),
        "mean/std": dict(augment=dataclasses.replace(plain, mean=(0.5,) * 3, std=(0.5,) * 3)),
        "weights": dict(weights=weights_digest(other)),
        "views": dict(views=2),
        "precision": dict(precision="torch.bfloat16"),
    }
    keys = {what: feature_key(**{**base, **change}) for what, change in variants.items()}
    assert all(k != key for k in keys.values()) and len(set(keys.values())) == len(keys), keys
    # The clean view does not depend on augmentation magnitudes; augmented views do.
    off = AugmentConfig.none()
    assert feature_key(**{**base, "augment": off}) == key
    assert feature_key(**{**base, "augment": off, "views": 2}) != feature_key(**{**base, "views": 2})


def heads_for_tiny():
    return Heads(2, 4, (0, 0, 1, 1), novel_logit=True)


def test_a_damaged_cache_file_is_computed_again(bundle, data_dir, tmp_path, caplog):
    trial(bundle, data_dir, FeatureStore(tmp_path), family="dualhead", epochs=1)
    files = sorted((tmp_path / "features").glob("*.safetensors"))
    files[0].write_bytes(files[0].read_bytes()[:100])
    files[1].write_bytes(b"not a safetensors file")
    store = FeatureStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hiertune"):
        again = trial(bundle, data_dir, store, family="dualhead", epochs=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("unusable" in w and "\n" not in w for w in warnings)
    assert store.computed == 2 and math.isfinite(again[0][0]["train_loss"])
    caplog.clear()  # the rewritten files read back without a warning
    reread = FeatureStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hiertune"):
        trial(bundle, data_dir, reread, family="dualhead", epochs=1)
    assert reread.computed == 0 and not caplog.records


def test_a_frozen_backbone_keeps_its_batchnorm_statistics_through_a_training_epoch(bundle, data_dir):
    # With BN in train mode, `linear` would drift the running statistics from the images it sees,
    # and features cached once would no longer be what the backbone computes.
    torch.manual_seed(0)
    initial = create_model(TrialConfig(**{**FEATURES, "finetune": "linear"}).model_config(),
                           heads_for(bundle, TrialConfig(**FEATURES)))
    (_, weights), = trial(bundle, data_dir, family="dualhead", feature_views=0, epochs=1)
    for name, tensor in initial.state_dict().items():
        if name.startswith("backbones."):
            torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0, msg=name)


def test_augmented_views_are_seeded_and_the_first_is_the_evaluation_view(bundle, data_dir, tmp_path, caplog):
    cfg = TrialConfig(**{**FEATURES, "augment": True, "feature_views": 3})
    torch.manual_seed(0)
    model = create_model(cfg.model_config(), heads_for(bundle, cfg))
    augment = BatchAugment(cfg.augment_config(), "cpu")
    images = bundle.data.train.images[:20]
    feats = extract(model, images, augment, 3, torch.device("cpu"), nullcontext)
    assert feats["pooled"].shape[:2] == (20, 3)
    with torch.no_grad():
        clean = model.eval().frozen_features(augment(torch.from_numpy(images), train=False))["pooled"]
    np.testing.assert_allclose(feats["pooled"][:, 0], clean.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats["pooled"][:, 1], feats["pooled"][:, 0])
    assert not np.allclose(feats["pooled"][:, 2], feats["pooled"][:, 1])
    # Seeded per block of images: the same whether one thread or two split the blocks.
    with caplog.at_level(logging.INFO, logger="hiertune"):
        again = extract(model, images, augment, 3, torch.device("cpu"), nullcontext, workers=2, label="twenty")
    np.testing.assert_array_equal(again["pooled"], feats["pooled"])
    assert any("features of twenty: 20 images in" in r.getMessage() and "images/s" in r.getMessage()
               for r in caplog.records)
    many = np.concatenate([bundle.data.train.images] * (1 + 2 * DRAW_BLOCK // len(bundle.data.train.images)))
    many = many[: 2 * DRAW_BLOCK + 7]
    one = extract(model, many, augment, 2, torch.device("cpu"), nullcontext, workers=1)
    two = extract(model, many, augment, 2, torch.device("cpu"), nullcontext, workers=2)
    np.testing.assert_array_equal(one["pooled"], two["pooled"])
    # A trial on them draws a view per image each epoch and trains.
    (metrics, _), = trial(bundle, data_dir, FeatureStore(tmp_path), family="dualhead", augment=True,
                          feature_views=3, epochs=1, mixup_alpha=0.2)
    assert math.isfinite(metrics["train_loss"])


def test_the_trained_model_runs_end_to_end_from_images_as_on_cached_features(bundle, data_dir, tmp_path):
    """What export and predict rely on: the checkpoint holds the whole model, and images through
    it give what the cached features gave."""
    (_, weights), = trial(bundle, data_dir, FeatureStore(tmp_path), family="layover", epochs=1)
    cfg = TrialConfig(**{**FEATURES, "family": "layover"})
    model = create_model(cfg.model_config(), heads_for(bundle, cfg))
    model.load_state_dict(weights)
    model.eval()
    augment = BatchAugment(cfg.augment_config(), "cpu")
    images = torch.from_numpy(bundle.data.train.images[:24])
    via_images = forward_all(model, ImageInputs(images, augment), torch.device("cpu"), nullcontext)
    feats = extract(model, images.numpy(), augment, 1, torch.device("cpu"), nullcontext)
    via_features = forward_all(model, FeatureInputs({k: torch.from_numpy(v) for k, v in feats.items()}, "cpu"),
                               torch.device("cpu"), nullcontext)
    for a, b in zip(dataclasses.astuple(via_images), dataclasses.astuple(via_features)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_seen_shifted_is_a_cached_pool_read_through_its_clean_view(bundle, data_dir, tmp_path):
    """Validation's seen_shifted images are a pool of their own: their pixels in the key, one
    (clean) view however many the training pools have, and their rows where `assemble` puts them."""
    cfg = TrialConfig(**{**FEATURES, "family": "dualhead", "augment": True, "feature_views": 2})
    torch.manual_seed(0)
    model = create_model(cfg.model_config(), heads_for(bundle, cfg))
    augment = BatchAugment(cfg.augment_config(), "cpu")
    assert bundle.shifted is not None and "shifted" in bundle_pools(bundle)
    store = FeatureStore(tmp_path)
    train, val = frozen_inputs(model, bundle, None, None, augment, SIZE, 2, torch.device("cpu"), nullcontext,
                               "float32", store)
    split = bundle.for_trial(None)
    assert store.computed == len(bundle_pools(bundle)) and train.views == 2
    assert len(train) == len(split.train_images) and len(val) == len(split.val_images)
    shifted_rows = torch.from_numpy(np.flatnonzero(split.val_group == SHIFTED))
    want = extract(model, bundle.shifted.images, augment, 1, torch.device("cpu"), nullcontext)
    got = val.rows(shifted_rows).features
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name])
    # Other pixels, another key: a shifted pool of other corruptions is not read from this cache.
    other = dataclasses.replace(bundle, shifted=dataclasses.replace(bundle.shifted,
                                                                     images=bundle.shifted.images[::-1].copy()))
    frozen_inputs(model, other, None, None, augment, SIZE, 2, torch.device("cpu"), nullcontext, "float32",
                  FeatureStore(tmp_path))
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == len(bundle_pools(bundle)) + 1


def test_a_trials_inputs_index_the_joined_pools_as_take_rows_would_copy_them(data_dir, tmp_path):
    """Training and validation read rows of one array of every pool, in place: the same rows,
    views and batches as copies laid out by take_rows (labeled, photos that train with their one
    clean view as every view, the trial's outliers; corrupted views after the clean ones)."""
    cfg = TrialConfig(data=str(data_dir), **{**FEATURES, "family": "dualhead", "augment": True, "feature_views": 2})
    shift = ShiftConfig(source="both", data=str(data_dir), train_fraction=0.5)
    bundle = load_bundle(cfg.data, cfg.outliers, SIZE, cfg.split_config(), tmp_path, shift)
    assert len(bundle.shifted.train_rows) and bundle.outliers is not None
    torch.manual_seed(0)
    model = create_model(cfg.model_config(), heads_for(bundle, cfg))
    augment = BatchAugment(cfg.augment_config(), "cpu")
    corruption = Corruption(views=2, severity=0.5, augmented=True)
    store, cpu = FeatureStore(tmp_path), torch.device("cpu")
    count = len(bundle.splits.outlier_pool) // 2
    train, val = frozen_inputs(model, bundle, count, None, augment, SIZE, 2, cpu, nullcontext, "float32", store,
                               corruption, corrupt_p=0.4)
    feats = pool_features(model, bundle_pools(bundle), augment, SIZE, 2, cpu, nullcontext, "float32", store,
                          corruption)
    splits = bundle.trial_splits(count, None)
    shifted = feats["shifted"]
    want_train, want_val = {}, {}
    for name, labeled in feats["labeled"].items():
        photos = np.repeat(shifted[name][bundle.shifted.train_rows][:, :1], labeled.shape[1], axis=1)
        want_train[name] = take_rows(labeled, feats["outliers"][name], splits, None, photos)[0]
        want_val[name] = take_rows(labeled[:, :1], feats["outliers"][name][:, :1], splits,
                                   shifted[name][bundle.shifted.val_rows])[1]
    reference = FeatureInputs({k: torch.from_numpy(v) for k, v in want_train.items()}, cpu, 2, 0.4)
    assert (len(train), train.views, len(val)) == (len(reference), 2, len(next(iter(want_val.values()))))
    labels = (torch.arange(len(train)),)
    draws = dict(order_gen=torch.Generator().manual_seed(0), aug_gen=torch.Generator().manual_seed(1))
    again = dict(order_gen=torch.Generator().manual_seed(0), aug_gen=torch.Generator().manual_seed(1))
    for (x, y), (rx, ry) in zip(train.batches(labels, 16, cpu, train=True, **draws),
                                reference.batches(labels, 16, cpu, train=True, **again), strict=True):
        assert torch.equal(y, ry) and all(torch.equal(x[k], rx[k]) for k in rx)
    got = {k: torch.cat([x[k] for x, in val.batches((), 7, cpu, train=False)]) for k in want_val}
    for name in want_val:
        np.testing.assert_array_equal(got[name].numpy(), want_val[name][:, 0])
        rows = torch.tensor([0, len(train) - 1])
        np.testing.assert_array_equal(train.rows(rows).features[name].numpy(), want_train[name][[0, -1], :1])
    # One joined array in the store, shared by both and by the next trial of these features.
    # What a sweep's trials get: the layout alone, read in place; they run nothing through the backbone.
    assert len(store.layouts) == 1
    shipped = store.for_trials()
    other, _ = frozen_inputs(model, bundle, None, None, augment, SIZE, 2, cpu, nullcontext, "float32", shipped,
                             corruption, corrupt_p=0.2)
    assert not shipped.sets and shipped.computed == 0 and len(shipped.layouts) == 1
    assert all(other.features[k].data_ptr() == train.features[k].data_ptr() for k in want_val)
    assert len(other) == len(train) + len(bundle.splits.outlier_pool) - count


def test_training_corruptions_keep_a_trial_on_cached_features(bundle, data_dir, tmp_path, count_backbone):
    """corrupt_p draws among corrupted views computed once per training pool (seeded, keyed apart
    from the clean pools, whose keys stay as they were): the backbone runs only to compute them,
    and a trial with another corrupt_p reads them from the disk."""
    store = FeatureStore(tmp_path)
    (clean, _), = trial(bundle, data_dir, store, family="layover", epochs=1)
    clean_files = set((tmp_path / "features").glob("*.safetensors"))
    assert store.computed == len(bundle_pools(bundle))
    count_backbone.clear()
    (first, _), = trial(bundle, data_dir, store, family="layover", epochs=1, corrupt_p=0.5)
    pools = bundle_pools(bundle)
    training_pools = [p for p in pools if p != "shifted"]
    # Only the corrupted views of the training pools were computed; the clean ones were reused.
    assert first["features_computed"] == len(training_pools)
    assert sum(count_backbone) == sum(len(pools[p]) for p in training_pools)
    assert clean_files < set((tmp_path / "features").glob("*.safetensors"))
    assert math.isfinite(first["train_loss"]) and first["train_loss"] != clean["train_loss"]
    count_backbone.clear()
    (again, _), = trial(bundle, data_dir, FeatureStore(tmp_path), family="layover", epochs=1, corrupt_p=0.2)
    assert again["features_computed"] == 0 and not count_backbone and math.isfinite(again["train_loss"])


def test_corrupted_views_are_the_corrupted_images_through_the_backbone(bundle):
    cfg = TrialConfig(**{**FEATURES, "family": "dualhead"})
    torch.manual_seed(0)
    model = create_model(cfg.model_config(), heads_for(bundle, cfg)).eval()
    augment = BatchAugment(cfg.augment_config(), "cpu")
    images = bundle.data.train.images[:12]
    corruption = Corruption(views=2, severity=0.7, augmented=False)
    got = extract(model, images, augment, 2, torch.device("cpu"), nullcontext, corruption=corruption)["pooled"]
    gen = block_generator(torch.device("cpu"), 0, corrupted=True)
    with torch.no_grad():
        for k in range(2):
            x = augment(corrupt_batch(torch.from_numpy(images), 1.0, 0.7, gen), gen, train=False)
            np.testing.assert_allclose(got[:, k], model.frozen_features(x)["pooled"].numpy(), rtol=1e-5, atol=1e-6)
    clean = extract(model, images, augment, 1, torch.device("cpu"), nullcontext)["pooled"][:, 0]
    assert not np.allclose(got[:, 0], clean) and not np.allclose(got[:, 1], got[:, 0])


def test_training_draws_a_corrupted_view_for_a_share_corrupt_p_of_images():
    n = 4000
    feats = {"x": torch.stack([torch.zeros(n), torch.ones(n), 2 * torch.ones(n)], 1)[:, :, None]}  # 1 clean, 2 corrupted
    inputs = FeatureInputs(feats, torch.device("cpu"), corrupted=2, corrupt_p=0.3)
    assert inputs.views == 1
    labels = (torch.zeros(n, dtype=torch.long),)
    drawn = torch.cat([x["x"] for x, _ in inputs.batches(labels, 500, torch.device("cpu"), train=True,
                                                         order_gen=torch.Generator().manual_seed(0),
                                                         aug_gen=torch.Generator().manual_seed(1))]).flatten()
    assert abs((drawn > 0).float().mean().item() - 0.3) < 0.03
    assert abs((drawn == 1).float().mean().item() - (drawn == 2).float().mean().item()) < 0.03
    evaluation = torch.cat([x["x"] for x, in inputs.batches((), 500, torch.device("cpu"), train=False)])
    assert (evaluation == 0).all()


def test_feature_views_is_validated():
    with pytest.raises(UserError, match="feature_views 3 needs augment"):
        TrialConfig(feature_views=3, augment=False)
    with pytest.raises(UserError, match="feature_views must be >= 0"):
        TrialConfig(feature_views=-1)


@pytest.mark.slow
def test_a_sweep_computes_frozen_features_once_and_its_trials_only_read_them(cli, data_dir, cache_root, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(f"""
family: layover
fixed: {{backbone: resnet10t, epochs: 2, batch_size: 16, threads: 1, image_size: {SIZE}, layover_hidden: 16,
        data: {data_dir}}}
search:
  lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
  corrupt_p: {{type: float, low: 0.0, high: 0.5}}
tune: {{num_samples: 3, sampler: tpe, seed: 0}}
scheduler: {{max_t: 2, grace_period: 2, reduction_factor: 2}}
resources: {{cpus_per_trial: 1, gpus_per_trial: 0}}
""")
    result = cli("sweep", str(space), "--name", "frozen", "--storage", str(tmp_path / "sweeps"), "--json")
    assert result.code == 0, result.err[-3000:]
    # By the driver: labeled, outliers, seen_shifted, the corrupted views of the two training pools,
    # and the test set that export-best predicts.
    cached = sorted((cache_root / "features").glob("*.safetensors"))
    assert len(cached) == 6
    records = load_trials(tmp_path / "sweeps" / "frozen")
    assert len(records) == 3 and all(r.status == "completed" for r in records)
    for record in records:
        assert record.metrics["features_computed"] == 0, record.metrics
        # A sweep's checkpoints keep no feature scorers (nothing writes a model from them).
        assert (Path(record.checkpoint) / "posthoc.npz").is_file()
        assert not (Path(record.checkpoint) / "scorers.safetensors").exists()
    # The export's predictions on the test set read what the sweep computed (its retraining
    # computes the seen_shifted pool of its own calibration split).
    exported = cli("export-best", "frozen", "--storage", str(tmp_path / "sweeps"), "--json")
    assert exported.code == 0, exported.err[-3000:]
    rows = json.loads(exported.out)["exports"][0]["rows"]
    # Its retraining's checkpoint does keep them, and the model directory has them.
    assert (Path(json.loads(exported.out)["exports"][0]["dir"]) / "scorers.safetensors").is_file()
    new = set((cache_root / "features").glob("*.safetensors")) - set(cached)
    assert rows > 0 and rows in {len(load_file(path)["pooled"]) for path in cached}
    assert rows not in {len(load_file(path)["pooled"]) for path in new}


@pytest.mark.parametrize("family, finetune, depth, frozen", [
    ("dualhead", "linear", 2, True), ("dualhead", "partial", 0, True), ("dualhead", "partial", 1, False),
    ("dualhead", "gradual", 0, False), ("dualhead", "bn", 2, False), ("twomodel", "full", 2, False),
    ("layover", "full", 2, True)])
def test_only_a_backbone_that_no_epoch_trains_counts_as_frozen(family, finetune, depth, frozen):
    cfg = TrialConfig(family=family, backbone="resnet10t", finetune=finetune, unfreeze_depth=depth)
    model = create_model(cfg.model_config(), heads_for_tiny())
    assert model.backbone_frozen is frozen
    if frozen:  # and then it runs in eval mode while the rest trains
        model.train()
        assert not any(m.training for backbone in model.backbones for m in backbone.modules())


def test_epochs_between_rungs_leave_vim_out_and_say_so(bundle, data_dir, tmp_path):
    """A scheduler reads rung epochs only: they and the last get every score, the others all
    but vim, and each epoch's metrics say which scores its front covers."""
    reports: list[dict] = []
    cfg = TrialConfig(data=str(data_dir), **{**FEATURES, "family": "dualhead", "epochs": 3})
    run_trial(cfg, bundle, lambda m, _: reports.append(m.flat()), features=FeatureStore(tmp_path), rungs=(2,))
    assert [m["full_evaluation"] for m in reports] == [0.0, 1.0, 1.0]
    assert "vim" not in reports[0]["evaluated_scores"].split(",") and "hypervolume_vim" not in reports[0]
    assert "vim" in reports[1]["evaluated_scores"].split(",") and "hypervolume_vim" in reports[2]
    assert reports[0]["evaluated_scores"].split(",") == [s for s in reports[2]["evaluated_scores"].split(",")
                                                        if s != "vim"]


def test_a_frozen_trials_checkpoints_name_its_backbone_and_restore_it_from_the_weights_it_was_built_with(
        bundle, data_dir, tmp_path):
    """A checkpoint that resumes a trial leaves its frozen backbone out, named by the weights'
    digest; restored, the model is the one saved, whole. Only the last checkpoint of a trial that
    writes a model from it (`complete`) holds the backbone. A lean checkpoint refuses a model with
    other backbone weights, or one whose backbone trains."""
    saved = []

    def keep(metrics, directory: Path) -> None:
        saved.append(tmp_path / f"epoch{metrics.epoch}")
        shutil.copytree(directory, saved[-1])

    cfg = TrialConfig(data=str(data_dir), **{**FEATURES, "family": "dualhead"})
    run_trial(cfg, bundle, keep, complete=False)
    setup = loop.setup_trial(cfg, bundle)
    digest = weights_digest(setup.model)
    for directory in saved:
        with safe_open(str(directory / ckpt.MODEL), "pt") as f:
            names, metadata = list(f.keys()), f.metadata()
        assert names and not any(n.startswith("backbones.") for n in names)
        assert metadata == {ckpt.FROZEN_DIGEST: digest}
    restored = loop.setup_trial(cfg, bundle).state
    restored.restore(saved[-1])
    whole = restored.model.state_dict()
    assert restored.epoch == 2 and set(whole) > set(load_file(saved[-1] / ckpt.MODEL))
    assert all(torch.equal(whole[k], v) for k, v in load_file(saved[-1] / ckpt.MODEL).items())
    assert all(torch.equal(whole[k], v) for k, v in setup.model.state_dict().items() if k.startswith("backbones."))

    last = []

    def whole(metrics, directory: Path) -> None:
        last.append(load_file(directory / ckpt.MODEL))
        shutil.copytree(directory, tmp_path / "complete", dirs_exist_ok=True)

    run_trial(cfg, bundle, whole)
    assert any(k.startswith("backbones.") for k in last[-1]) and not any(k.startswith("backbones.") for k in last[0])
    # An ensemble's replay reads the lean checkpoint as the whole one (the same run, seeded) ...
    lean, complete = (replay_validation(cfg, bundle, d, FeatureStore()) for d in (saved[-1], tmp_path / "complete"))
    assert torch.equal(lean.batch.sub_logits, complete.batch.sub_logits)
    # ... and names one of other weights in one line, as the command that reads it reports it.
    with pytest.raises(UserError, match="written with other backbone weights"):
        replay_validation(dataclasses.replace(cfg, seed=1), bundle, saved[-1], FeatureStore())

    other = loop.setup_trial(dataclasses.replace(cfg, seed=1), bundle).state  # other random backbone weights
    with pytest.raises(CheckpointUnreadable, match="written with other backbone weights"):
        other.restore(saved[-1])
    trains = loop.setup_trial(dataclasses.replace(cfg, finetune="full"), bundle).state
    with pytest.raises(CheckpointUnreadable, match="another fine-tuning"):
        trains.restore(saved[-1])
