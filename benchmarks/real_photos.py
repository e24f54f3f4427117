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

from hiertune.cli import run_script
from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.data.views import parse_views
from hiertune.sweep.space import load_space, parse_assignments
from hiertune.training.features import FeatureStore
from hiertune.training.leave_out import leave_species_out, mean_figures
from hiertune.training.source_probe import source_separability

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# The CPU route of today's knee: pretrained lite0 at 160 px, frozen, linear heads on cached features.
BASE = dict(family="dualhead", backbone="tf_efficientnet_lite0", pretrained=True, finetune="linear", image_size=160,
            feature_views=1, optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=10, batch_size=64,
            pseudo_novel_fraction=0.15, val_fraction=0.1, outlier_fraction=0.5, kl_alpha=0.1,
            shifted_weight=0.0)  # the point chosen without photos, unless a recipe lets the other species' choose
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
    "oe + 4 source dirs": {"outlier_mode": "oe", "source_directions": 4},
    "oe + 8 source dirs": {"outlier_mode": "oe", "source_directions": 8},
    "oe + 16 source dirs": {"outlier_mode": "oe", "source_directions": 16},
    "oe + 32 source dirs": {"outlier_mode": "oe", "source_directions": 32},
    "oe + 64 source dirs": {"outlier_mode": "oe", "source_directions": 64},
    "photos + oe + 16 dirs": {"shifted_train_fraction": 1.0, "outlier_mode": "oe", "source_directions": 16},
    # The other species' photos weigh in choosing the point (as in a sweep given --shifted-data),
    # the held-out species' never.
    "oe photos choose": {"outlier_mode": "oe", "shifted_weight": 0.5},
    "oe + 8 dirs photos choose": {"outlier_mode": "oe", "source_directions": 8, "shifted_weight": 0.5},
    "oe + 16 dirs photos choose": {"outlier_mode": "oe", "source_directions": 16, "shifted_weight": 0.5},
}
# What an ensemble selects from beside the recipe's own model (--ensemble): what a sweep of one
# frozen backbone varies (seed, learning rate, outlier share, KL weight).
LIBRARY = ({"seed": 1}, {"seed": 2}, {"lr": 3e-4}, {"lr": 3e-3}, {"outlier_fraction": 0.25},
           {"outlier_fraction": 1.0}, {"kl_alpha": 0.5})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "nndl2025"))
    parser.add_argument("--outliers", default=str(SHARED / "outliers" / "tinyimagenet-ood"))
    parser.add_argument("--shifted-data", default=str(SHARED / "shifted-real"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-probe", action="store_true", help="skip (a), the source probe")
    parser.add_argument("--grid-space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "dualhead.yaml"),
                        help="the search space whose post-hoc grid chooses the points (default: the shipped dualhead)")
    parser.add_argument("--probe-directions", type=lambda t: [int(k) for k in t.split(",")], default=[0, 16],
                        help="(a) after projecting out this many source directions (comma-separated; default 0,16)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--ensemble", type=int, default=0, metavar="N",
                        help="also an ensemble of N picks (Caruana selection on validation) from the recipe's "
                             "model and LIBRARY's variations of it, per fold")
    parser.add_argument("--views", type=parse_views, default=(), metavar="flip[,zoom]",
                        help="also each model (and ensemble) on its outputs averaged over the validation images "
                             "and these test-time views (hiertune.data.views)")
    args = parser.parse_args()
    cache_root = default_cache_root()
    cfg = TrialConfig.from_dict({**BASE, "data": args.data, "outliers": args.outliers, "shifted": "data",
                                 "shifted_data": args.shifted_data, **parse_assignments(args.set)})
    store = FeatureStore(cache_root)
    grid = load_space(args.grid_space).posthoc_grid()
    t0 = time.perf_counter()
    if not args.no_probe:
        print("source separability on the frozen backbone (logistic probe, 5-fold AUROC):")
        bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), cache_root,
                             cfg.shift_config())
        probes = {k: source_separability(cfg, bundle, store, k) for k in args.probe_directions}
        print(f"  {'pair':<25} " + " ".join(f"{f'{k} dirs out':>12}" for k in probes))
        for name in probes[args.probe_directions[0]]:
            print(f"  {name:<25} " + " ".join(f"{p[name]:>12.3f}" for p in probes.values()))
        print(f"  ({time.perf_counter() - t0:.0f}s, features included)\n")
    header = (f"{'recipe':<26} {'photo super':>11} {'photo sub':>9} {'called novel':>12} {'seen':>6} "
              f"{'novel_sub':>9} {'novel_super':>11} {'s':>5}")
    print("leave-species-out over the photos' species (held-out species' real photos; validation groups)")
    print(header)
    for name in args.recipes.split(","):
        t = time.perf_counter()
        result = leave_species_out(TrialConfig.from_dict({**cfg.to_dict(), **RECIPES[name]}), cache_root, store,
                                   posthoc=grid, library=LIBRARY if args.ensemble else (), ensemble=args.ensemble,
                                   views=args.views)
        seconds = time.perf_counter() - t
        tta = f" + {'+'.join(args.views)}"
        for label, species in ((name, result.species), (f"  {tta}", result.views),
                               (f"  ensemble of {args.ensemble}", result.ensemble),
                               (f"  ensemble of {args.ensemble}{tta}", result.ensemble_views)):
            if not species:
                continue
            mean = mean_figures(species)
            print(f"{label:<26} {mean['photos_super_acc']:>11.3f} {mean['photos_sub_acc']:>9.3f} "
                  f"{mean['photos_called_novel']:>12.3f} {mean['seen_acc']:>6.3f} {mean['novel_sub_acc']:>9.3f} "
                  f"{mean['novel_super_acc']:>11.3f} {seconds:>5.0f}", flush=True)
            for sp, s in species.items():
                print(f"    {sp:<22} {s['photos_super_acc']:>11.3f} {s['photos_sub_acc']:>9.3f} "
                      f"{s['photos_called_novel']:>12.3f}")
        if result.members:
            print(f"    ensemble weights per fold (recipe, then {', '.join(map(str, LIBRARY))}): {result.members}")
    print("\ntargets: photo super ≥ 0.70, photo sub ≥ 0.35, seen ≥ 0.93, novel_sub ≥ 0.653, novel_super ≥ 0.992")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
