"""The source-separability figures of a data bundle on a configuration's frozen backbone:
generated training images against outliers and against real photos of known species
(hiertune.novelty.source), from the same cached features the trials read; and the report of
`hiertune data inspect --source-probe`, on the weights that install with hiertune. Near 1.0 means a
head can call an image novel for its source rather than its species."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hiertune.training.config import SIZE_LIMITS, TrialConfig
from hiertune.data.bundle import DataBundle, load_bundle
from hiertune.data.corrupt import ShiftConfig
from hiertune.errors import UserError
from hiertune.novelty.source import source_auroc
from hiertune.training.device import autocast, pick_device, precision
from hiertune.training.features import FeatureStore, bundle_pools, images_digest, pool_features
from hiertune.training.loop import build, heads_for
from hiertune.training.probe_cache import cached_probe
from hiertune.training.source_nullspace import source_basis

PROBE_BACKBONE = "tf_efficientnet_lite0"  # the weights that install with hiertune: works offline
PAIRS = {"labeled_vs_outliers": ("labeled", "outliers"), "labeled_vs_photos": ("labeled", "shifted"),
         "outliers_vs_photos": ("outliers", "shifted")}


def frozen_pool_features(cfg: TrialConfig, bundle: DataBundle, store: FeatureStore) -> dict[str, np.ndarray | None]:
    """The clean view of `cfg`'s frozen features per pool of the bundle, [N, D] each, from the
    cache the trials read; "shifted" holds only the --shifted-data photos (None without them),
    not corruptions."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)  # as a trial builds its model: randomly initialised weights match its features' key
    model, augment = build(cfg, heads_for(bundle, cfg), device)
    feats = pool_features(model, bundle_pools(bundle), augment, cfg.image_size, 1, device, autocast(device, cfg.amp),
                          str(precision(device, cfg.amp)), store)
    flat = {pool: np.concatenate([a[:, 0].reshape(len(a), -1) for a in f.values()], 1) for pool, f in feats.items()}
    if "shifted" in flat:
        photo = bundle.shifted.photo
        flat["shifted"] = flat["shifted"][photo] if photo is not None and photo.any() else None
    return flat


def source_separability(cfg: TrialConfig, bundle: DataBundle, store: FeatureStore,
                        directions: int = 0) -> dict[str, float]:
    """AUROC of a source probe for each pair of PAIRS whose pools the bundle has (the photos:
    only the --shifted-data ones, not corruptions), on the clean view of `cfg`'s frozen features;
    with `directions`, after projecting out that many source directions fitted on the labeled
    images against the outliers (hiertune.training.source_nullspace), as a trial without photos
    in training fits them."""
    flat = frozen_pool_features(cfg, bundle, store)
    if directions:
        if "outliers" not in flat:
            raise UserError("the source probe's directions are fitted against the outliers: give --outliers")
        basis = source_basis(flat["labeled"], flat["outliers"], directions, cfg.seed)
        flat = {pool: None if f is None else f - (f @ basis.T) @ basis for pool, f in flat.items()}
    pairs = {name: (a, b) for name, (a, b) in PAIRS.items() if flat.get(a) is not None and flat.get(b) is not None}
    # A pure function of these features and the seed: the next sweep on them reads it (probe_cache).
    inputs = {"features": {pool: images_digest(f) for pool, f in flat.items() if f is not None}, "seed": cfg.seed,
              "pairs": pairs}
    result = cached_probe(store.cache_root, "source", inputs, lambda: {
        name: {"auroc": source_auroc(flat[a], flat[b], seed=cfg.seed)} for name, (a, b) in pairs.items()}, pairs)
    return {name: record["auroc"] for name, record in result.records.items()}


def source_report(data: str, outliers: str | None, shifted_data: str | None, data_size: int, image_size: int,
                  cache_root: Path) -> dict[str, float]:
    if not 1 <= image_size <= SIZE_LIMITS["image_size"]:
        raise UserError(f"--probe-image-size must be in 1-{SIZE_LIMITS['image_size']:,}, got {image_size:,}")
    cfg = TrialConfig(backbone=PROBE_BACKBONE, pretrained=True, finetune="linear",
                      image_size=image_size, data_size=data_size, device="cpu")
    shift = ShiftConfig(source="data", data=shifted_data) if shifted_data else ShiftConfig(source="none")
    bundle = load_bundle(data, outliers, data_size, cfg.split_config(), cache_root, shift)
    if bundle.outliers is None and bundle.shifted is None:
        raise UserError("--source-probe needs outliers or --shifted-data: there is only one source to compare")
    return {**source_separability(cfg, bundle, FeatureStore(cache_root)), "backbone": PROBE_BACKBONE,
            "image_size": image_size}
