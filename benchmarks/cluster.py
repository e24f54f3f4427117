"""One Ray node vs two: the same small sweep through `--address` on a one-node and a two-node cluster.

    python benchmarks/cluster.py [--trials 8] [--epochs 2] [--repeats 2]

Every cluster runs on this machine (ray.cluster_utils.Cluster on loopback, storage in a local
folder all nodes share), so the figures say what a second Ray node costs or gains here, not what
a second machine would: (a) one node with 2 CPUs, (b) two nodes with 1 CPU each, both running
two 1-CPU trials at a time; (c) one node with 1 CPU, one trial at a time, for scale. Every trial
does the same work (same model, epochs, data; ASHA's grace period is max_t, so none stops early).
The driver's imports and the data cache are warmed first, the three run in turn `--repeats`
times, and the fastest of each counts, so a busy spell on a shared machine weighs on all three
alike. Runs on the synthetic default. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from ray.cluster_utils import Cluster

from hiertune.cli import run_script
from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.sweep.space import load_space
from hiertune.sweep.run import SweepPlace, run_sweep
from hiertune.sweep.state import load_trials
import hiertune.sweep.tracking  # noqa: F401  (imported by the first sweep otherwise, and timed with it)

SPACE = """
family: cnn
fixed: {{epochs: {epochs}, batch_size: 64, cnn_width: 16, outlier_fraction: 0.6, threads: 1}}
search:
  lr: {{type: float, low: 1.0e-3, high: 2.0e-2, log: true}}
  dropout: {{type: float, low: 0.0, high: 0.3}}
tune: {{num_samples: {trials}, sampler: tpe, seed: 0}}
scheduler: {{max_t: {epochs}, grace_period: {epochs}, reduction_factor: 2}}
resources: {{cpus_per_trial: 1}}
"""


def sweep_on(cpus: list[int], space, tmp: Path, name: str) -> tuple[float, float, int]:
    """Wall time of the whole sweep, of Tune's part, and how many nodes ran trials."""
    ray_tmp = tempfile.mkdtemp(prefix="htb", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    os.environ["RAY_TMPDIR"] = ray_tmp  # keeps the cluster's address file away from other Ray users
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus[0], "include_dashboard": False})
    try:
        for n in cpus[1:]:
            cluster.add_node(num_cpus=n)
        cluster.wait_for_nodes()
        start = time.perf_counter()
        result = run_sweep(space, SweepPlace.resolve(name, str(tmp / "sweeps"), None), default_cache_root(),
                           address=cluster.address)
        wall = time.perf_counter() - start
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        del os.environ["RAY_TMPDIR"]
    nodes = {t.metrics.get("node_id") for t in load_trials(Path(result["dir"]))}
    return wall, result["wall_seconds"], len(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = {"(a) 1 node x 2 CPUs": [2], "(b) 2 nodes x 1 CPU": [1, 1], "(c) 1 node x 1 CPU": [1]}
    timings: dict[str, list[tuple[float, float, int]]] = {label: [] for label in runs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "space.yaml").write_text(SPACE.format(epochs=args.epochs, trials=args.trials))
        space = load_space(tmp / "space.yaml")
        base = space.trial_config()
        load_bundle(base.data, base.outliers, base.data_size, base.split_config(), default_cache_root())
        for r in range(args.repeats):
            for i, (label, cpus) in enumerate(runs.items()):
                timings[label].append(sweep_on(cpus, space, tmp, f"run{r}-{i}"))
    print(f"{args.trials} trials x {args.epochs} epochs, 1 CPU each; {os.cpu_count()} CPUs on this machine; "
          f"fastest of {args.repeats}")
    best = {label: min(t) for label, t in timings.items()}
    for label, (wall, tune_wall, nodes) in best.items():
        every = ", ".join(f"{t[0]:.1f}" for t in timings[label])
        print(f"  {label}: sweep {wall:6.1f} s, of which Tune {tune_wall:6.1f} s; trials ran on {nodes} node(s)"
              f"  (every run: {every} s)")
    one, two, single = (best[label][0] for label in runs)
    print(f"  two nodes / one node (same CPUs): {two / one:.2f}; one node 2 CPUs / 1 CPU: {one / single:.2f}")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
