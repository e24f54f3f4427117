"""cluster.yaml against Ray's own schema and pyproject's pins; a sweep across two Ray nodes."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import last_json, space_file

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")


def test_cluster_yaml_is_a_valid_ray_config_with_pyprojects_pins():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # prepare fills the defaults the launcher adds
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject what it should
        validate_config(prepare_config({**yaml.safe_load((ROOT / "cluster.yaml").read_text()), "max_worker": 3}))

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[.*\])?==(\S+)", dep).groups() for dep in project["dependencies"])
    commands = [c for key in COMMANDS for c in config.get(key) or []]
    pinned = re.findall(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s\"']+)", "\n".join(commands))
    assert "ray" in dict(pinned)  # the Ray every node starts is installed by version
    assert [(name, version) for name, version in pinned if pins.get(name) != version] == []
    assert any(re.search(r"pip install -e \.$", c) for c in config["setup_commands"])  # the project, its pins

    head_type = config["head_node_type"]
    nodes = config["available_node_types"]
    assert not nodes[head_type]["resources"].get("GPU")
    workers = [t for name, t in nodes.items() if name != head_type]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 < t["max_workers"] for t in workers)
    assert any("mlflow server" in c and "s3://" in c for c in config["head_start_ray_commands"])


@pytest.fixture
def two_nodes(s3, monkeypatch):
    """A Ray head and a second node on loopback, one CPU each, started after `s3` so that every
    Ray process has its environment; Ray's files in a private temp dir, so the address file
    that `ray.init("auto")` would find is not the one other Ray users on this machine see."""
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="ht", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_runs_trials_on_both_nodes_and_stores_all_results_on_s3(cli, small_data, s3, two_nodes, tmp_path):
    space = space_file(tmp_path, small_data, samples=4, max_t=1)
    result = cli("sweep", str(space), "--name", "multi", "--storage", s3.uri("sweeps"), "--address",
                 two_nodes.address, "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json")
    assert result.code == 0, result.err[-3000:]
    assert last_json(result.out)["trials"] == {"completed": 4, "stopped": 0, "failed": 0, "interrupted": 0}

    trials = json.loads(s3.read("sweeps/multi/trials.json"))
    nodes = {two_nodes.head_node.node_id, *(n.node_id for n in two_nodes.worker_nodes)}
    assert {t["metrics"]["node_id"] for t in trials} == nodes and len(nodes) == 2
    keys = set(s3.keys("sweeps/multi/tune/"))
    for t in trials:  # whichever node ran it, its results and checkpoint reached S3
        trial_dir = f"sweeps/multi/tune/trial_{t['trial_id']}"
        assert json.loads(s3.read(f"{trial_dir}/result.json").splitlines()[-1])["node_id"] == t["metrics"]["node_id"]
        checkpoint = t["checkpoint"][len(s3.uri()) + 1:]
        assert checkpoint.startswith(trial_dir) and f"{checkpoint}/posthoc.npz" in keys
