"""cluster.yaml against Ray's own schema and pyproject's pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
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
