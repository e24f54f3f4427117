"""What one trial may ask of Ray: the space's `resources`, fitted to the largest node there is.

Ray queues a trial that no node can hold and its autoscaler says so every half minute, forever
(`No available node types can fulfill resource request {'CPU': 4.0}`). So before Ray is asked,
the request is compared with the largest node: this machine for a local Ray (counted as Ray
counts it when it starts: cgroups and CUDA_VISIBLE_DEVICES included), or, on a cluster, the
largest node now connected or that its autoscaler can add. A request that does not fit is cut
to that node, in one line; a cluster with no node that can run a trial at all is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hiertune.errors import UserError

log = logging.getLogger("hiertune")


@dataclass(frozen=True)
class Node:
    """The largest node a trial can be placed on: its CPUs and GPUs."""

    cpus: float
    gpus: float
    where: str  # for the one line: "this machine", "the largest node of the cluster"


@dataclass(frozen=True)
class Fit:
    """A trial's request as the space asks it and as it runs."""

    asked_cpus: float
    asked_gpus: float
    cpus: float
    gpus: float
    node: Node

    @property
    def changed(self) -> bool:
        return (self.cpus, self.gpus) != (self.asked_cpus, self.asked_gpus)

    @property
    def parallel(self) -> int:
        """Trials the node runs side by side."""
        counts = [self.node.cpus // self.cpus]
        if self.gpus:
            counts.append(self.node.gpus // self.gpus)
        return max(1, int(min(counts)))

    def line(self) -> str:
        return (f"resources: the space asks {_cpus(self.asked_cpus)}{_gpus(self.asked_gpus, ' and ')} per trial; "
                f"{self.node.where} has {_cpus(self.node.cpus)} and {_gpus(self.node.gpus) or 'no GPU'}: each trial "
                f"gets {_cpus(self.cpus)}{_gpus(self.gpus, ', ') or ', no GPU'}")


def local_node() -> Node:
    """This machine, as a local Ray will count it."""
    from ray._private.accelerators import get_accelerator_manager_for_resource
    from ray._private.utils import get_num_cpus

    gpu = get_accelerator_manager_for_resource("GPU")
    visible = gpu.get_current_process_visible_accelerator_ids()
    gpus = len(visible) if visible is not None else gpu.get_current_node_num_accelerators()
    return Node(float(get_num_cpus()), float(gpus), "this machine")


def cluster_node(wants_gpu: bool, where: str) -> Node:
    """The largest node of the connected Ray: alive now, or a node type its autoscaler may add
    (a cluster whose GPU workers scale from zero has none of them alive before the first trial)."""
    import ray

    shapes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    shapes += _autoscaler_node_types()
    if not shapes:
        raise UserError("the Ray cluster has no node")
    # With GPUs asked, the node with the most GPUs (then CPUs); otherwise the most CPUs.
    best = max(shapes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)) if wants_gpu else (r.get("CPU", 0),))
    return Node(float(best.get("CPU", 0)), float(best.get("GPU", 0)), where)


def fit_connected(cpus: float, gpus: float, address: str | None) -> Fit:
    """The request fitted to the Ray this process is connected to, said in one line if cut."""
    fitted = fit(cpus, gpus, cluster_node(bool(gpus), "the largest node of the cluster" if address else "this machine"))
    if fitted.changed:
        log.info(fitted.line())
    return fitted


def _autoscaler_node_types() -> list[dict]:
    try:  # Ray keeps the cluster launcher's node types in its GCS; no public API reads them (Ray 2.x)
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as exc:  # noqa: BLE001 - no autoscaler config is the common case, not an error
        log.debug("no autoscaler node types: %s", exc)
        return []
    if config is None:
        return []
    return [dict(group.resources) for group in config.node_group_configs if group.max_count != 0]


def fit(cpus: float, gpus: float, node: Node) -> Fit:
    """The request cut to `node`; refused (one line) when that node cannot run a trial at all."""
    if node.cpus < min(cpus, 1):
        raise UserError(f"resources: the space asks {_cpus(cpus)} per trial, and {node.where} has "
                        f"{_cpus(node.cpus)}; no trial could ever start (give a node CPUs, or --address another cluster)")
    return Fit(cpus, gpus, min(cpus, node.cpus), min(gpus, node.gpus), node)


def _cpus(n: float) -> str:
    return f"{n:g} CPU" + ("" if n == 1 else "s")


def _gpus(n: float, lead: str = "") -> str:
    if not n:
        return ""
    return f"{lead}{n:g} GPU" + ("" if n <= 1 else "s")
