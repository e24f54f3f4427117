"""`hiertune data inspect`: validate a data directory and describe it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hiertune.data.cache import PendingWrites
from hiertune.data.dataset import CompetitionData, load_competition
from hiertune.data.outliers import OutlierSet
from hiertune.data.sources import load_outliers, resolve_data_dir


def inspect_data(data: str | None, outliers: str | None, image_size: int, cache_root: Path
                 ) -> tuple[dict, list[str]]:
    """The summary as a JSON-ready dict, and the warning lines the decode policy produced."""
    root = resolve_data_dir(data, cache_root)
    pending = PendingWrites()
    dataset = load_competition(root, image_size, cache_root, with_test=True, pending=pending)
    outlier_set = load_outliers(outliers, root, image_size, cache_root, pending)
    pending.commit()
    summary = _summary(dataset, outlier_set, image_size)
    warnings = [w for name, report in dataset.caches.items()
                if (w := report.fixes.warning(f"{name} images", image_size))]
    if outlier_set is not None and outlier_set.cache is not None:
        w = outlier_set.cache.fixes.warning("outlier images", image_size)
        warnings += [w] if w else []
    return summary, warnings


def _summary(data: CompetitionData, outliers: OutlierSet | None, image_size: int) -> dict:
    h, t = data.hierarchy, data.train
    per_super = np.bincount(t.superclass, minlength=len(h.superclasses))
    per_sub = np.bincount(t.subclass, minlength=len(h.subclasses))
    caches = {name: report.to_dict() for name, report in data.caches.items()}
    if outliers is not None and outliers.cache is not None:
        caches["outliers"] = outliers.cache.to_dict()
    return {
        "data_dir": str(data.root),
        "labeled_images": len(t.names),
        "superclasses": len(h.superclasses),
        "subclasses": len(h.subclasses),
        "subclasses_without_images": int((per_sub == 0).sum()),
        "per_superclass": {name: int(n) for name, n in zip(h.superclasses, per_super)},
        "subclasses_per_superclass": {name: int((h.sub_to_super == s).sum())
                                      for s, name in enumerate(h.superclasses)},
        "per_subclass": {name: int(n) for name, n in zip(h.subclasses, per_sub)},
        "test_images": len(data.test_names),
        "image_size": [image_size, image_size, 3],
        "outliers": outliers.summary() if outliers is not None else None,
        "cache": caches,
    }


def render(summary: dict) -> str:
    subs = summary["subclasses_per_superclass"]
    per_sub = np.array(list(summary["per_subclass"].values()))
    lines = [
        f"data       {summary['data_dir']}",
        f"labeled    {summary['labeled_images']:,} images, {summary['superclasses']} superclasses, "
        f"{summary['subclasses']} subclasses ({per_sub.min()}-{per_sub.max()} images per subclass)",
    ]
    for name, n in summary["per_superclass"].items():
        lines.append(f"  {name:<12} {n:>7,} images  {subs[name]:>3} subclasses")
    if summary["subclasses_without_images"]:
        lines.append(f"  ({summary['subclasses_without_images']} mapped subclasses have no labeled image)")
    lines.append(f"test       {summary['test_images']:,} images")
    size = summary["image_size"]
    lines.append(f"images     {size[0]}x{size[1]} RGB uint8")
    o = summary["outliers"]
    lines.append(f"outliers   {o['source']}: {o['classes']} classes, {o['images']:,} images "
                 f"({o['per_class_min']}-{o['per_class_max']} per class)" if o else "outliers   none")
    if (probe := summary.get("source_separability")):
        lines.append(f"source     how well a logistic probe tells the sources apart on {probe['backbone']} at "
                     f"{probe['image_size']} px (AUROC; 0.5: alike, 1.0: the source alone separates them)")
        for key, what in (("labeled_vs_outliers", "labeled vs outliers"),
                          ("labeled_vs_photos", "labeled vs --shifted-data photos"),
                          ("outliers_vs_photos", "outliers vs --shifted-data photos")):
            if key in probe:
                lines.append(f"  {what:<36} {probe[key]:.3f}")
    for name, c in summary["cache"].items():
        detail = f"{c['decoded']:,} of {c['images']:,} decoded" if c["decoded"] else f"{c['images']:,} images"
        lines.append(f"cache      {name:<9} {c['status']:<8} {detail} in {c['seconds']:.2f}s  {c['path']}")
    return "\n".join(lines)
