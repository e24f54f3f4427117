"""Which scores a rung epoch needs: ASHA's decisions with vim in the rung evaluation and without.

    python benchmarks/rung_scores.py SWEEP_DIR [--trials N]

vim's fit is the dearest part of an epoch's evaluation (a projection of every training and
validation feature onto half the feature width, in float64, each epoch). Epochs between rungs
leave it out; this says whether the rungs themselves need it. It reruns the trials of a finished
sweep (their configs from SWEEP_DIR/trials.json, in the sweep's search space: its post-hoc grid
and its scheduler's rungs), one after another in this process, with the full evaluation every
epoch, and at each rung compares the trial's front hypervolume (what ASHA ranks by) with and
without vim's points, then ASHA's promotions (the top 1/reduction_factor of the trials that
reached the rung, ranked by each) and the sweep's end: the front of every trial's last
rung, and its knee. Run it on an idle machine; about a second per epoch of a cached-feature trial.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.novelty.metrics import hypervolume_2d, knee_distance, pareto_front
from hiertune.training.checkpoint import read_posthoc
from hiertune.sweep.space import load_space
from hiertune.sweep.state import load_trials, read_meta
from hiertune.training.config import TrialConfig
from hiertune.training.features import FeatureStore
from hiertune.training.loop import run_trial

LEFT_OUT = "vim"


def points(result, keep) -> np.ndarray:
    """[n, 2] (seen, unseen) of every grid point of the scores `keep` says to keep."""
    rows = [s for s, name in enumerate(result.scores) if keep(name)]
    return np.stack([result.seen[rows].ravel(), result.unseen[rows].ravel()], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a finished sweep's directory (trials.json, sweep.json)")
    parser.add_argument("--trials", type=int, default=0, help="the first N trials only (0: all)")
    args = parser.parse_args()
    meta = read_meta(args.sweep)
    space = load_space(meta.space)
    rungs = space.scheduler.rungs
    trials = load_trials(args.sweep)[: args.trials or None]
    grid = space.posthoc_grid()
    if LEFT_OUT not in grid.scores:
        sys.exit(f"{meta.space}: the post-hoc grid has no {LEFT_OUT}: nothing to compare")
    base = TrialConfig.from_dict(trials[0].config)
    cache = default_cache_root()
    bundle = load_bundle(base.data, base.outliers, base.data_size, base.split_config(), cache, base.shift_config())
    store = FeatureStore(cache)
    print(f"{len(trials)} trials of {args.sweep} ({meta.space}), every epoch fully evaluated; rungs {rungs}")
    # trial -> rung -> (points with vim, points without)
    at: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    start = time.perf_counter()
    for k, t in enumerate(trials):
        cfg = TrialConfig.from_dict(t.config)
        at[k] = {}

        def keep(m, directory, k=k) -> None:
            if m.epoch in rungs:
                result = read_posthoc(str(directory))
                at[k][m.epoch] = (points(result, lambda s: True), points(result, lambda s: s != LEFT_OUT))

        run_trial(cfg, bundle, keep, features=store, rungs=None, posthoc=grid)
        print(f"  trial {k}: done ({time.perf_counter() - start:.0f}s)", flush=True)

    changed, largest, same_promotions = 0, 0.0, True
    print(f"\n{'rung':>5} {'trials':>6} {'hv changed':>10} {'largest change':>14} {'promoted (with vim)':>22} "
          f"{'promoted (without)':>20}")
    for r in rungs[:-1]:
        reached = [k for k in at if r in at[k]]
        hv_with = np.array([hypervolume_2d(at[k][r][0]) for k in reached])
        hv_without = np.array([hypervolume_2d(at[k][r][1]) for k in reached])
        diff = hv_with - hv_without
        changed += int((diff > 1e-12).sum())
        largest = max(largest, float(diff.max(initial=0.0)))
        top = max(1, math.floor(len(reached) / space.scheduler.reduction_factor))
        promote_with = sorted(np.array(reached)[np.argsort(-hv_with, kind="stable")[:top]].tolist())
        promote_without = sorted(np.array(reached)[np.argsort(-hv_without, kind="stable")[:top]].tolist())
        same_promotions &= promote_with == promote_without
        print(f"{r:>5} {len(reached):>6} {int((diff > 1e-12).sum()):>10} {diff.max(initial=0.0):>14.2e} "
              f"{str(promote_with):>22} {str(promote_without):>20}")
    # The sweep's end: every trial's front at the last rung it reached, joined.
    last = {k: max(at[k]) for k in at}
    for label, which in (("with vim", 0), ("without", 1)):
        pts = np.concatenate([at[k][last[k]][which] for k in at])
        front = pts[pareto_front(pts)]
        knee = front[np.argmax(knee_distance(front[:, 0], front[:, 1]))]
        print(f"sweep front {label:<9}: {len(front)} points, hypervolume {hypervolume_2d(front):.6f}, "
              f"knee seen {knee[0]:.4f} unseen {knee[1]:.4f}")
    print(f"rung results whose hypervolume vim changed: {changed}; largest change {largest:.2e}; "
          f"ASHA's promotions the same without vim at the rungs: {same_promotions}")


if __name__ == "__main__":
    main()
