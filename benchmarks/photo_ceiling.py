"""How far a frozen backbone's features can take real photos of held-out species at issue 24's bar:
accepted, with the right superclass, while the validation outlier classes are rejected.

    python benchmarks/photo_ceiling.py [--data DIR --outliers DIR --shifted-data DIR] [--set key=value ...]

Each species of the photos is held out in turn. Heads are fitted on the frozen features (the
cached clean view a trial reads) of the labeled training split, the training outlier classes
and the other species' photos; each head's threshold is set on the validation outlier classes,
the images of validation's novel_super group, to reject a given share of them; printed is the
share of the held-out species' photos accepted and given the right superclass (the mean over
species, and per species at the bar). A head here needs no epochs, no post-hoc grid and no
generated validation image to keep, and its threshold is set on the very images it is scored
on: each figure is what that head could reach at best on these features, not what a sweep
recommends.

  logistic     a multinomial logistic regression over the three superclasses and "novel" (the
               outliers), classes weighted equally; the score is minus log p(novel)
  mahalanobis  the nearest subclass mean under one shrunk covariance (Lee et al. 2018), photos
               of the other species as their subclasses' images
  imagenet     the pretrained ImageNet classifier's probability on the ImageNet classes the labeled
               images of each superclass fall in (its mean distribution over them), the highest of
               the three; only for backbones whose weights install as a package (their classifier
               is in the file)
  both         logistic and imagenet together, each standardised on the training outliers: an
               image is accepted only where both accept it

Also printed: which validation outlier classes the best head accepts at the bar.
Defaults to ../shared data; reads and fills the feature cache; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hiertune.cli import run_script
from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.models.weights import package_weights
from hiertune.sweep.space import parse_assignments
from hiertune.training.config import TrialConfig
from hiertune.training.features import FeatureStore
from hiertune.training.source_probe import frozen_pool_features

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BASE = dict(family="dualhead", backbone="tf_efficientnet_lite0", pretrained=True, finetune="linear", image_size=160,
            feature_views=1)
# novel_super rejected: the best leave-species-out row's (lite2, ensemble of 5 + flip), and the bar.
REJECTED = (0.95, 0.973, 0.99, 0.992)
BAR = 0.992


def logistic(features: np.ndarray, target: np.ndarray, seed: int):
    """-log p(novel) of a balanced 4-class logistic head; its superclass is the argmax of the rest."""
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000, class_weight="balanced",
                                                              random_state=seed)).fit(features, target)

    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = head.predict_proba(x)
        return -np.log(p[:, -1] + 1e-12), p[:, :-1].argmax(1)
    return score


def mahalanobis(features: np.ndarray, subclass: np.ndarray, sub_to_super: np.ndarray):
    classes = np.unique(subclass)
    means = np.stack([features[subclass == c].mean(0) for c in classes])
    covariance = LedoitWolf().fit(features - means[np.searchsorted(classes, subclass)]).covariance_
    whiten = np.linalg.cholesky(np.linalg.inv(covariance))
    centres = means @ whiten

    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xw = x @ whiten
        d = (xw ** 2).sum(1)[:, None] - 2 * xw @ centres.T + (centres ** 2).sum(1)[None]
        return -d.min(1), sub_to_super[classes[d.argmin(1)]]
    return score


def imagenet_mass(backbone: str, features: np.ndarray, superclass: np.ndarray):
    """None where the backbone's ImageNet classifier is not at hand (weights from timm's hub)."""
    path = package_weights(backbone)
    if path is None:
        return None
    weights = load_file(str(path))
    w, b = weights["classifier.weight"].astype(np.float64), weights["classifier.bias"].astype(np.float64)

    def probs(x: np.ndarray) -> np.ndarray:
        z = x @ w.T + b
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    p = probs(features)
    profile = np.stack([p[superclass == s].mean(0) for s in np.unique(superclass)])
    profile /= profile.max(1, keepdims=True)

    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mass = np.log(probs(x) @ profile.T + 1e-12)
        return mass.max(1), mass.argmax(1)
    return score


def both(a, b, reference: np.ndarray):
    """Accepted only where both accept: the lower of the two scores, each in units of its spread
    over the training outliers."""
    ra, rb = a(reference)[0], b(reference)[0]

    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (sa, sup), (sb, _) = a(x), b(x)
        return np.minimum((sa - ra.mean()) / ra.std(), (sb - rb.mean()) / rb.std()), sup
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "nndl2025"))
    parser.add_argument("--outliers", default=str(SHARED / "outliers" / "tinyimagenet-ood"))
    parser.add_argument("--shifted-data", default=str(SHARED / "shifted-real"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the backbone's settings, e.g. --set backbone=tf_efficientnet_lite2 --set image_size=224")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cfg = TrialConfig.from_dict({**BASE, "data": args.data, "outliers": args.outliers, "shifted": "data",
                                 "shifted_data": args.shifted_data, **parse_assignments(args.set)})
    cache_root = default_cache_root()
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), cache_root, cfg.shift_config())
    feats = frozen_pool_features(cfg, bundle, FeatureStore(cache_root))
    splits, train, h = bundle.splits, bundle.data.train, bundle.data.hierarchy
    photo = bundle.shifted.photo
    photos, photo_sub, photo_sup = feats["shifted"], bundle.shifted.subclass[photo], bundle.shifted.superclass[photo]
    labeled, labeled_sup, labeled_sub = (feats["labeled"][splits.train], train.superclass[splits.train],
                                         train.subclass[splits.train])
    out_train, out_val = feats["outliers"][splits.outlier_pool], feats["outliers"][splits.outlier_val]
    novel = len(h.superclasses)
    print(f"{cfg.backbone} at {cfg.image_size} px, frozen: {len(labeled):,} labeled training images, "
          f"{len(out_train):,} training outliers, {len(out_val):,} validation outliers "
          f"({len(splits.outlier_val_classes)} classes), {len(photos)} photos ({time.perf_counter() - t0:.0f}s)")

    rows: dict[str, list[list[float]]] = {}
    at_bar: dict[str, np.ndarray] = {}
    imagenet = imagenet_mass(cfg.backbone, labeled, labeled_sup)  # the labeled images' alone: one for every fold
    for held in np.unique(photo_sub):
        other = photo_sub != held
        x = np.concatenate([labeled, out_train, photos[other]])
        sup = np.concatenate([labeled_sup, np.full(len(out_train), novel), photo_sup[other]])
        heads = {"logistic": logistic(x, sup, cfg.seed),
                 "mahalanobis": mahalanobis(np.concatenate([labeled, photos[other]]),
                                            np.concatenate([labeled_sub, photo_sub[other]]), h.sub_to_super),
                 "imagenet": imagenet}
        if imagenet is not None:
            heads["both"] = both(heads["logistic"], imagenet, out_train)
        for name, head in heads.items():
            if head is None:
                continue
            negative = head(out_val)[0]
            score, predicted = head(photos[photo_sub == held])
            right = predicted == photo_sup[photo_sub == held]
            rows.setdefault(name, []).append([float(np.mean((score > np.quantile(negative, r)) & right))
                                              for r in REJECTED])
            at_bar.setdefault(name, np.zeros(len(out_val), dtype=int))
            at_bar[name] += negative > np.quantile(negative, BAR)
    species = [h.subclasses[s].split(",")[0] for s in np.unique(photo_sub)]
    print(f"\nheld-out species' photos accepted with the right superclass, by share of validation outliers rejected "
          f"(targets: 0.70 at {BAR}); per species at {BAR}: {', '.join(species)}")
    print(f"  {'head':<12} " + " ".join(f"{r:>7}" for r in REJECTED) + "   per species")
    for name, figures in rows.items():
        mean = np.mean(figures, 0)
        print(f"  {name:<12} " + " ".join(f"{v:>7.3f}" for v in mean) + "   "
              + " ".join(f"{f[-1]:.2f}" for f in figures))
    best = max(rows, key=lambda n: np.mean(rows[n], 0)[-1])
    names = _class_names(args.outliers)
    classes = bundle.outliers.class_index[splits.outlier_val]
    counts = np.bincount(classes, weights=at_bar[best], minlength=len(bundle.outliers.classes))
    top = [(names.get(bundle.outliers.classes[c], bundle.outliers.classes[c]), counts[c] / len(rows[best]))
           for c in np.argsort(-counts)[:6] if counts[c]]
    print(f"\nvalidation outliers {best} accepts at {BAR} (mean over the folds): "
          + ", ".join(f"{n} {k:.1f}" for n, k in top) + f"  ({time.perf_counter() - t0:.0f}s)")


def _class_names(outliers: str) -> dict[str, str]:
    """Tiny ImageNet's words for its folder names, where the set has a classes csv beside it."""
    path = Path(outliers).with_suffix(".classes.csv")
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["wnid"]: row["name"].split(",")[0] for row in csv.DictReader(f)}


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
