"""How a point treats real photos of known species: the `--shifted-data` photos in validation.

The generated validation split cannot show the "real photo -> novel" shortcut (see
hiertune.data.photo_split); these photos can. At a trial's recommended point (its score and raw
thresholds) each photo is classified as evaluation classifies any image, and the results are
given overall and per species: superclass and subclass accuracy, and the share called a novel
superclass.
"""

from __future__ import annotations

import math
import re

import numpy as np

from hiertune.models.registry import Heads
from hiertune.novelty.posthoc import EvalBatch, decide
from hiertune.novelty.records import GridPoint
from hiertune.novelty.scores import FeatureScorer, score_levels

PHOTO_KEYS = ("photos_super_acc", "photos_sub_acc", "photos_called_novel")


def metric_name(name: str) -> str:
    """A subclass name as MLflow and Ray Tune accept it in a metric's name."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name).strip("_") or "unnamed"


def photo_results(batch: EvalBatch, heads: Heads, point: GridPoint, scorers: dict[str, FeatureScorer] | None,
                  photos: np.ndarray, subclass_names: tuple[str, ...]) -> dict[str, float]:
    """Flat metrics of the photos (boolean mask over the batch's rows) at `point` (its `score`,
    raw thresholds): PHOTO_KEYS overall, then per species `<key>.<subclass name>`."""
    if not photos.any():
        return {}
    levels = score_levels(batch, heads, point.score, scorers)
    pred_super, pred_sub = (t.numpy() for t in decide(levels, heads, point.thr_super, point.thr_sub))
    true_super, true_sub = batch.super_target.numpy(), batch.sub_target.numpy()
    out = {}
    species = [(None, photos)] + [(int(s), photos & (true_sub == s)) for s in np.unique(true_sub[photos])]
    for sub, rows in species:
        suffix = "" if sub is None else f".{metric_name(subclass_names[sub])}"
        out[f"photos_super_acc{suffix}"] = float((pred_super[rows] == true_super[rows]).mean())
        out[f"photos_sub_acc{suffix}"] = float((pred_sub[rows] == true_sub[rows]).mean())
        out[f"photos_called_novel{suffix}"] = float((pred_super[rows] == heads.n_super).mean())
    return out


def species_results(results: dict[str, float], species: str) -> dict[str, float]:
    """PHOTO_KEYS of one species from photo_results' flat metrics (NaN: no photo of it)."""
    return {k: results.get(f"{k}.{metric_name(species)}", math.nan) for k in PHOTO_KEYS}
