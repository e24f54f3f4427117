"""Which scores a rung epoch needs: ASHA's decisions with vim in the rung evaluation and without.

    python benchmarks/rung_scores.py SWEEP_DIR [--trials N]

vim's fit is the dearest part of an epoch's evaluation (a projection of every training and
validation feature onto half the feature width, in float64, each epoch). Epochs between rungs
leave it out; this says whether the rungs themselves need it. It reruns the trials of a finished
sweep (their configs from SWEEP_DIR/trials.json, in the sweep's search space: its post-hoc grid
and its scheduler's rungs), one after another in this process, with the full evaluation every
epoch, and at each rung compares the trial's front hypervolume (what ASHA ranks by) with and
without vim's points. Then it runs ASHA synchronously under both policies (at each rung the
trials promoted to it compete and the top 1/reduction_factor go on; without vim at the rungs,
a trial that reaches max_t is still fully evaluated there) and compares the promotions and the
sweep's end: the front of every trial's last result, and its knee. Run it on an idle machine;
about 20 s per 15-epoch cached-feature trial.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from hiertune.cli import run_script
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

    # ASHA run synchronously under each policy: at each rung the trials that policy promoted to
    # it compete, the top 1/reduction_factor go on. Without vim at the rungs a trial still gets
    # the full evaluation at its last epoch (max_t).
    policies = {"with vim": 0, "without": 1}
    alive = {p: sorted(at) for p in policies}
    last = {p: {} for p in policies}
    changed = reached = 0
    largest = 0.0
    print(f"\n{'rung':>5} {'hv changed':>10} {'largest change':>14}  promoted with vim at the rungs / without")
    for r in rungs[:-1]:
        diff = np.array([hypervolume_2d(at[k][r][0]) - hypervolume_2d(at[k][r][1]) for k in at])
        changed, reached = changed + int((diff > 1e-12).sum()), reached + len(diff)
        largest = max(largest, float(diff.max(initial=0.0)))
        promoted = {}
        for p, which in policies.items():
            hv = np.array([hypervolume_2d(at[k][r][which]) for k in alive[p]])
            top = max(1, math.floor(len(alive[p]) / space.scheduler.reduction_factor))
            promoted[p] = sorted(np.array(alive[p])[np.argsort(-hv, kind="stable")[:top]].tolist())
            last[p].update({k: at[k][r][which] for k in alive[p] if k not in promoted[p]})
            alive[p] = promoted[p]
        print(f"{r:>5} {int((diff > 1e-12).sum()):>10} {diff.max(initial=0.0):>14.2e}  "
              f"{promoted['with vim']} / {promoted['without']}")
    for p in policies:
        last[p].update({k: at[k][rungs[-1]][0] for k in alive[p]})
    for p in policies:
        pts = np.concatenate(list(last[p].values()))
        front = pts[pareto_front(pts)]
        knee = front[np.argmax(knee_distance(front[:, 0], front[:, 1]))]
        print(f"sweep front, {p:<8} at the rungs: {len(front)} points, hypervolume {hypervolume_2d(front):.6f}, "
              f"knee seen {knee[0]:.4f} unseen {knee[1]:.4f}; trials to max_t {alive[p]}")
    print(f"rung results whose hypervolume vim changed: {changed} of {reached}, by at most {largest:.2e}")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
