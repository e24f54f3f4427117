"""A truncated or missing file of a finished sweep: `hiertune pareto` and `hiertune sweep --resume`
name it in one line and exit 2, with no traceback and nothing written."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from faults.harness import FaultSweep, fault_space
from hiertune.sweep.state import load_trials

pytestmark = pytest.mark.slow


def completed_checkpoint(sweep_dir: Path) -> Path:
    return next(Path(t.checkpoint) for t in load_trials(sweep_dir) if t.status == "completed")


PARETO_CASES = {
    "trials.json": lambda d: d / "trials.json",
    "sweep.json": lambda d: d / "sweep.json",
    "posthoc.npz": lambda d: completed_checkpoint(d) / "posthoc.npz",
}
# What `pareto` does not read (MLflow's records, the learning curves): damaged, it is not stopped.
UNREAD_BY_PARETO = {
    "mlflow_runs.json": lambda d: d / "mlflow_runs.json",
    "history.json": lambda d: completed_checkpoint(d) / "history.json",
}
RESUME_CASES = {
    "tuner.pkl": lambda d: d / "tune" / "tuner.pkl",
    "experiment state": lambda d: max((d / "tune").glob("experiment_state-*.json")),
    "searcher state": lambda d: max((d / "tune").glob("searcher-state-*.pkl")),
    "search generator state": lambda d: max((d / "tune").glob("search_gen_state-*.json")),
    "sweep.json": lambda d: d / "sweep.json",
    "mlflow_runs.json": lambda d: d / "mlflow_runs.json",
}


@contextmanager
def truncated(path: Path):
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    try:
        yield
    finally:
        path.write_bytes(original)


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def assert_one_line(result, path: Path) -> None:
    assert result.code == 2, result.err[-2000:]
    assert len(result.err_lines) == 1 and "Traceback" not in result.err, result.err[-2000:]
    assert result.err_lines[0].startswith(f"hiertune: error: {path}: "), result.err_lines[0]


@pytest.mark.parametrize("case", PARETO_CASES)
def test_pareto_names_a_damaged_file(cli, fault_sweep: FaultSweep, case):
    sweep = fault_sweep.sweep
    path = PARETO_CASES[case](sweep.dir)
    before = snapshot(sweep.dir)
    with truncated(path):
        result = cli("pareto", sweep.name, "--storage", str(sweep.storage))
    assert_one_line(result, path)
    assert snapshot(sweep.dir) == {**before, str(path): Path(path).stat().st_mtime_ns}


@pytest.mark.parametrize("case", UNREAD_BY_PARETO)
def test_pareto_reads_only_what_the_front_needs(cli, fault_sweep: FaultSweep, case):
    sweep = fault_sweep.sweep
    with truncated(UNREAD_BY_PARETO[case](sweep.dir)):
        result = cli("pareto", sweep.name, "--storage", str(sweep.storage), "--json")
    assert result.code == 0, result.err[-2000:]
    assert json.loads(result.out.splitlines()[-1])["front"]


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_names_a_damaged_file_before_starting_anything(cli, fault_sweep: FaultSweep, case):
    sweep = fault_sweep.sweep
    path = RESUME_CASES[case](sweep.dir)
    before = snapshot(sweep.dir)
    with truncated(path):
        result = cli("sweep", str(fault_sweep.space), "--name", sweep.name, "--storage", str(sweep.storage),
                     "--resume")
    assert_one_line(result, path)
    assert snapshot(sweep.dir) == {**before, str(path): Path(path).stat().st_mtime_ns}


def test_resume_without_a_saved_experiment_state_says_so(cli, fault_sweep: FaultSweep, tmp_path):
    sweep = fault_sweep.sweep
    states = sorted((sweep.dir / "tune").glob("experiment_state-*.json"))
    for state in states:
        state.rename(tmp_path / state.name)
    try:
        result = cli("sweep", str(fault_sweep.space), "--name", sweep.name, "--storage", str(sweep.storage),
                     "--resume")
    finally:
        for state in states:
            (tmp_path / state.name).rename(state)
    assert result.code == 2 and len(result.err_lines) == 1
    assert result.err_lines[0] == (f"hiertune: error: {sweep.dir / 'tune'}: Ray Tune saved no experiment state "
                                   "before the sweep stopped, so there is nothing to resume; start it again under "
                                   "a new --name")


def test_a_malformed_fault_plan_is_one_line(cli, small_data, tmp_path):
    space = fault_space(tmp_path / "space.yaml", small_data, samples=1, epochs=1, faults="0=explode@1")
    result = cli("train", str(space), "--out", str(tmp_path / "out"))
    assert result.code == 2 and len(result.err_lines) == 1
    assert "faults: '0=explode@1' is not N=KIND@EPOCH" in result.err_lines[0]
    assert not (tmp_path / "out").exists()
