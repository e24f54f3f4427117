"""`hiertune data inspect --source-probe`: how separable the outliers, and a user's real photos
of known species, are from the labeled images by source alone on a pretrained frozen backbone
(hiertune.training.source_probe). Near 1.0 means a head can call an image novel for its source
rather than its species."""

from __future__ import annotations

from pathlib import Path

from hiertune.config import SIZE_LIMITS, TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.data.corrupt import ShiftConfig
from hiertune.errors import UserError

PROBE_BACKBONE = "tf_efficientnet_lite0"  # the weights that install with hiertune: works offline


def source_report(data: str, outliers: str | None, shifted_data: str | None, data_size: int, image_size: int,
                  cache_root: Path) -> dict[str, float]:
    from hiertune.training.features import FeatureStore
    from hiertune.training.source_probe import source_separability

    if not 1 <= image_size <= SIZE_LIMITS["image_size"]:
        raise UserError(f"--probe-image-size must be in 1-{SIZE_LIMITS['image_size']:,}, got {image_size:,}")
    cfg = TrialConfig(family="dualhead", backbone=PROBE_BACKBONE, pretrained=True, finetune="linear",
                      image_size=image_size, data_size=data_size, device="cpu")
    shift = ShiftConfig(source="data", data=shifted_data) if shifted_data else ShiftConfig(source="none")
    bundle = load_bundle(data, outliers, data_size, cfg.split_config(), cache_root, shift)
    if bundle.outliers is None and bundle.shifted is None:
        raise UserError("--source-probe needs outliers or --shifted-data: there is only one source to compare")
    return {**source_separability(cfg, bundle, FeatureStore(cache_root)), "backbone": PROBE_BACKBONE,
            "image_size": image_size}
