"""Real photos of known species at a point, per species; the source-separability probe."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hiertune.errors import UserError
from hiertune.models.registry import Heads
from hiertune.novelty.photos import metric_name, photo_results
from hiertune.novelty.records import GridPoint
from hiertune.novelty.posthoc import EvalBatch
from hiertune.novelty.source import source_auroc

HEADS = Heads(2, 3, (0, 0, 1), novel_logit=False)


def test_photo_results_per_species_at_the_points_thresholds():
    big, small = 6.0, 0.0
    # Superclass logits: confident (msp ~1) or flat (msp 0.5, below the threshold: novel).
    super_logits = torch.tensor([[big, small], [big, small], [small, small], [small, big], [small, big], [big, small]])
    sub_logits = torch.tensor([[small, big, small], [big, small, small], [big, small, small],
                               [small, small, big], [small, small, big], [big, small, small]])
    sup_t, sub_t = torch.tensor([0, 0, 0, 1, 1, 0]), torch.tensor([1, 1, 1, 2, 2, 0])
    batch = EvalBatch(super_logits, sub_logits, super_logits, sub_logits, sup_t, sub_t)
    photos = np.array([True, True, True, True, True, False])  # the last row is no photo
    point = dataclasses.replace(GridPoint.unmeasured("msp", 0.9, 0.9), thr_super=0.9, thr_sub=0.9)
    out = photo_results(batch, HEADS, point, None, photos, ("gull", "king penguin", "bull frog"))
    # gull has no photo; king penguin: right, wrong subclass, novel; bull frog: both right.
    assert out["photos_super_acc.king_penguin"] == pytest.approx(2 / 3)
    assert out["photos_sub_acc.king_penguin"] == pytest.approx(1 / 3)
    assert out["photos_called_novel.king_penguin"] == pytest.approx(1 / 3)
    assert out["photos_super_acc.bull_frog"] == out["photos_sub_acc.bull_frog"] == 1.0
    assert out["photos_super_acc"] == pytest.approx(4 / 5) and out["photos_called_novel"] == pytest.approx(1 / 5)
    assert not any("gull" in k for k in out)
    assert photo_results(batch, HEADS, point, None, np.zeros(6, dtype=bool), ("a", "b", "c")) == {}
    assert metric_name("European fire salamander!") == "European_fire_salamander"


def test_source_auroc_separates_sources_only_when_they_differ():
    rng = np.random.default_rng(0)
    same = source_auroc(rng.normal(size=(300, 16)), rng.normal(size=(200, 16)))
    apart = source_auroc(rng.normal(size=(300, 16)), rng.normal(0.8, 1, size=(200, 16)))
    assert 0.35 < same < 0.65 and apart > 0.95
    # Capped draws: a large pool costs what the cap does, and the answer stays.
    assert source_auroc(rng.normal(size=(5000, 16)), rng.normal(0.8, 1, size=(200, 16)), cap=500) > 0.95
    with pytest.raises(UserError, match="needs at least 5 images of each source"):
        source_auroc(rng.normal(size=(3, 4)), rng.normal(size=(30, 4)))


def test_source_separability_reads_each_pool_of_a_bundle(tiny_data, tiny_outliers, tmp_path, monkeypatch):
    from hiertune.training import source_probe
    from hiertune.training.config import TrialConfig
    from hiertune.data.bundle import load_bundle
    from hiertune.training.features import FeatureStore
    from hiertune.training.source_probe import source_separability

    fits = []
    monkeypatch.setattr(source_probe, "source_auroc", lambda *a, **k: fits.append(1) or source_auroc(*a, **k))

    cfg = TrialConfig(family="dualhead", backbone="resnet10t", finetune="linear", data_size=32, image_size=32,
                      threads=1, shifted="data", shifted_data=str(tiny_data), pseudo_novel_fraction=0.0)
    bundle = load_bundle(str(tiny_data), str(tiny_outliers), 32, cfg.split_config(), tmp_path, cfg.shift_config())
    store = FeatureStore(tmp_path)
    aurocs = source_separability(cfg, bundle, store)
    assert set(aurocs) == {"labeled_vs_outliers", "labeled_vs_photos", "outliers_vs_photos"}
    assert all(0.0 <= v <= 1.0 for v in aurocs.values())
    # The photos here are the labeled images themselves: no probe can tell them apart better
    # than it tells the outliers from either.
    assert aurocs["labeled_vs_photos"] < min(aurocs["labeled_vs_outliers"], aurocs["outliers_vs_photos"])
    assert len(fits) == 3
    # The features from the disk cache, and the probe's figures too: a second sweep on them fits nothing.
    fresh = FeatureStore(tmp_path)
    assert source_separability(cfg, bundle, fresh) == aurocs and fresh.computed == 0
    assert len(fits) == 3 and len(list((tmp_path / "probes").glob("source-*.json"))) == 1
    # The directions that tell the labeled images from the outliers, projected out: the probe is
    # blinder, on other features, so measured (and kept) anew.
    projected = source_separability(cfg, bundle, store, directions=4)
    assert projected["labeled_vs_outliers"] < aurocs["labeled_vs_outliers"]
    assert len(fits) == 6 and len(list((tmp_path / "probes").glob("source-*.json"))) == 2
