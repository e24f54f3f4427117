"""Real photos of known species: the "real photo -> novel" shortcut measured, and what each
training recipe does to photos of species whose real photos training never saw.

    python benchmarks/real_photos.py [--data DIR --outliers DIR --shifted-data DIR] [--set key=value ...]
                                     [--recipes base,oe,...]

(a) Source separability on the frozen backbone: the cross-validated AUROC of a logistic probe
between generated training images, outliers and the real photos (hiertune.novelty.source).
(b) Per recipe, a leave-species-out run (hiertune.training.leave_out): the held-out species'
photos at the recommended point (superclass, subclass accuracy, share called a novel
superclass), and validation's in-source seen, novel_sub and novel_super group accuracies.
Targets (issue 24): photos ≥ 0.70 superclass and ≥ 0.35 subclass, seen ≥ 0.93, novel_sub ≥ 0.653,
novel_super ≥ 0.992. Defaults to ../shared data; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.sweep.space import parse_assignments
from hiertune.training.features import FeatureStore
from hiertune.training.leave_out import leave_species_out
from hiertune.training.source_probe import source_separability

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# The CPU route of today's knee: pretrained lite0 at 160 px, frozen, linear heads on cached features.
BASE = dict(family="dualhead", backbone="tf_efficientnet_lite0", pretrained=True, finetune="linear", image_size=160,
            feature_views=1, optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=10, batch_size=64,
            pseudo_novel_fraction=0.15, val_fraction=0.1, outlier_fraction=0.5, kl_alpha=0.1)
RECIPES = {
    "base (novel class)": {},
    "oe": {"outlier_mode": "oe"},
    "outlier_weight 0.3": {"outlier_weight": 0.3},
    "outliers super only": {"outlier_levels": "super"},
    "outliers sub only": {"outlier_levels": "sub"},
    "no outliers": {"outlier_fraction": 0.0},
    "photos of other species": {"shifted_train_fraction": 1.0},
    "photos + oe": {"shifted_train_fraction": 1.0, "outlier_mode": "oe"},
    "photos + weight 0.3": {"shifted_train_fraction": 1.0, "outlier_weight": 0.3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "nndl2025"))
    parser.add_argument("--outliers", default=str(SHARED / "outliers" / "tinyimagenet-ood"))
    parser.add_argument("--shifted-data", default=str(SHARED / "shifted-real"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-probe", action="store_true", help="skip (a), the source probe")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    args = parser.parse_args()
    cache_root = default_cache_root()
    cfg = TrialConfig.from_dict({**BASE, "data": args.data, "outliers": args.outliers, "shifted": "data",
                                 "shifted_data": args.shifted_data, **parse_assignments(args.set)})
    store = FeatureStore(cache_root)
    t0 = time.perf_counter()
    if not args.no_probe:
        print("source separability on the frozen backbone (logistic probe, 5-fold AUROC):")
        bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), cache_root,
                             cfg.shift_config())
        for name, value in source_separability(cfg, bundle, store).items():
            print(f"  {name:<25} {value:.3f}")
        print(f"  ({time.perf_counter() - t0:.0f}s, features included)\n")
    header = (f"{'recipe':<26} {'photo super':>11} {'photo sub':>9} {'called novel':>12} {'seen':>6} "
              f"{'novel_sub':>9} {'novel_super':>11} {'s':>5}")
    print("leave-species-out over the photos' species (held-out species' real photos; validation groups)")
    print(header)
    rows = {}
    for name in args.recipes.split(","):
        t = time.perf_counter()
        result = leave_species_out(TrialConfig.from_dict({**cfg.to_dict(), **RECIPES[name]}), cache_root, store)
        m = rows[name] = result.mean
        print(f"{name:<26} {m['photos_super_acc']:>11.3f} {m['photos_sub_acc']:>9.3f} {m['photos_called_novel']:>12.3f} "
              f"{m['seen_acc']:>6.3f} {m['novel_sub_acc']:>9.3f} {m['novel_super_acc']:>11.3f} "
              f"{time.perf_counter() - t:>5.0f}", flush=True)
        for species, s in result.species.items():
            print(f"    {species:<22} {s['photos_super_acc']:>11.3f} {s['photos_sub_acc']:>9.3f} "
                  f"{s['photos_called_novel']:>12.3f}")
    print("\ntargets: photo super ≥ 0.70, photo sub ≥ 0.35, seen ≥ 0.93, novel_sub ≥ 0.653, novel_super ≥ 0.992")


if __name__ == "__main__":
    main()
