"""Sweeps found by name wherever they are, `hiertune ls`, and name errors before heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hiertune.sweep.results import next_steps
from hiertune.errors import UserError
from hiertune.sweep.catalog import find_sweep, list_sweeps
from hiertune.sweep.state import TrialRecord, save_trials, write_ended

ROOT = Path(__file__).resolve().parents[2]


def make_sweep(folder: Path, statuses: list[str] | None = None, age: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"space": "s.yaml", "family": "cnn", "sampled_thresholds": False}))
    if statuses is not None:
        save_trials(folder, [TrialRecord(f"t{k}", f"trial-{k:02d}", s, 1, {}, None, {}) for k, s in enumerate(statuses)])
    stamp = time.time() - age
    for p in folder.iterdir():
        os.utime(p, (stamp, stamp))
    return folder


def test_a_sweep_is_found_by_name_in_sweeps_and_in_the_storage_folders_inside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_sweep(tmp_path / "sweeps" / "plain", ["completed", "stopped"], age=300)
    make_sweep(tmp_path / "sweeps" / "demo" / "smoke-1", ["completed"], age=200)
    make_sweep(tmp_path / "sweeps" / "demo" / "smoke-2", ["completed", "interrupted"], age=100)
    make_sweep(tmp_path / "sweeps" / "demo" / "smoke-3")  # no trials.json yet: running, or killed
    write_ended(make_sweep(tmp_path / "sweeps" / "timed", ["completed", "interrupted"], age=400), "budget")
    (tmp_path / "sweeps" / "demo" / "data").mkdir()  # the demo's dataset is no sweep

    sweeps = tmp_path.resolve() / "sweeps"
    assert find_sweep("plain", None) == (str(sweeps), "plain")
    assert find_sweep("smoke-1", None) == (str(sweeps / "demo"), "smoke-1")
    # A storage folder's name stands for its newest sweep: `hiertune pareto demo` after the demo.
    assert find_sweep("demo", None) == (str(sweeps / "demo"), "smoke-3")
    assert find_sweep("smoke-1", "elsewhere") == ("elsewhere", "smoke-1")  # --storage is taken as given
    with pytest.raises(UserError, match="no sweep named 'nope'.*hiertune ls"):
        find_sweep("nope", None)

    entries = {e.name: e for e in list_sweeps()}
    assert set(entries) == {"plain", "smoke-1", "smoke-2", "smoke-3", "timed"}
    assert entries["timed"].status == "budget spent"  # its cut trial is the budget's doing
    assert (entries["plain"].status, entries["plain"].trials.nonzero()) == ("finished", {"completed": 1, "stopped": 1})
    assert entries["smoke-2"].status == "interrupted" and entries["smoke-3"].status == "unfinished"


def test_two_sweeps_of_one_name_ask_for_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_sweep(tmp_path / "sweeps" / "a" / "x", [])
    make_sweep(tmp_path / "sweeps" / "b" / "x", [])
    with pytest.raises(UserError, match="2 sweeps are named 'x'.*--storage"):
        find_sweep("x", None)


def test_ls_lists_sweeps_with_status_and_storage(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "no sweeps in ./sweeps" in cli("ls").out
    assert f"no sweeps in {tmp_path / 'elsewhere'}" in cli("ls", "--storage", str(tmp_path / "elsewhere")).out  # where it looked
    make_sweep(tmp_path / "sweeps" / "demo" / "smoke-1", ["completed", "stopped"])
    result = cli("ls")
    assert result.code == 0
    header, row = result.out.strip().splitlines()
    assert header.split()[:4] == ["name", "status", "trials", "modified"]
    assert row.startswith("smoke-1") and "finished" in row and row.endswith(str(tmp_path.resolve() / "sweeps" / "demo"))
    listed = json.loads(cli("ls", "--json").out.strip().splitlines()[-1])["sweeps"]
    assert [(e["name"], e["trials"]) for e in listed] == [("smoke-1", {"completed": 1, "stopped": 1})]


@pytest.mark.parametrize("command", ["pareto", "export-best"])
def test_a_wrong_sweep_name_fails_before_ray_mlflow_or_torch_are_imported(tmp_path, command):
    code = ("import sys; from hiertune.cli import main; rc = main([%r, 'nope']); "
            "heavy = sorted({'ray', 'mlflow', 'torch', 'optuna'} & set(sys.modules)); print(rc, heavy)") % command
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.stdout.split() == ["2", "[]"], run.stderr
    assert run.stderr.strip().splitlines() == [
        "hiertune: error: no sweep named 'nope' in ./sweeps or the storage folders inside it; `hiertune ls` lists "
        "the sweeps, --storage looks elsewhere"]


def test_the_demos_next_steps_name_its_sweep_plainly_and_its_stores_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_sweep(tmp_path / "sweeps" / "demo" / "smoke-1", ["completed"])
    storage = str(tmp_path.resolve() / "sweeps" / "demo")
    study = f"sqlite:///{storage}/smoke-1/optuna.db"
    text = next_steps("smoke-1", storage, f"sqlite:///{storage}/mlflow.db", study, f"{storage}/smoke-1/export/1",
                      "sweeps/demo/data/test_images")
    lines = text.splitlines()
    assert lines[0] == "next:"
    assert " pareto smoke-1   #" in text and "--storage" not in text  # found by name from here
    assert f" predict {storage}/smoke-1/export/1 sweeps/demo/data/test_images -o predictions.csv" in text
    assert f"ui --backend-store-uri sqlite:///{storage}/mlflow.db --port 5000" in text
    assert study in text
    monkeypatch.chdir(tmp_path / "sweeps")  # elsewhere, the storage is spelt out
    assert f" pareto smoke-1 --storage {storage}" in next_steps("smoke-1", storage)
