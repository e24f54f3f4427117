"""Real sweeps in subprocesses, with faults; every process they start is ended afterwards."""

from __future__ import annotations

import os
import signal

import pytest

from faults.harness import (
    FAULT_PLAN,
    STALLED,
    FaultSweep,
    Launcher,
    fault_space,
    results,
    trial_dirs,
    wait_for,
)


@pytest.fixture(scope="session")
def sweep_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fault-cache")


@pytest.fixture
def start_sweep(sweep_cache):
    launcher = Launcher(sweep_cache)
    yield launcher.start
    launcher.close()


@pytest.fixture(scope="session")
def fault_sweep(small_data, tmp_path_factory, sweep_cache):
    """One real sweep with a fault in most trials, and a Ray worker SIGKILLed mid-trial."""
    root = tmp_path_factory.mktemp("faults")
    space = fault_space(root / "space.yaml", small_data, samples=4, epochs=2, faults=FAULT_PLAN)
    launcher = Launcher(sweep_cache)
    try:
        sweep = launcher.start(space, root / "sweeps", "faults")
        tune_dir = sweep.dir / "tune"

        def stalled_worker() -> int | None:
            trial = trial_dirs(tune_dir).get(STALLED)
            reported = results(trial) if trial else []
            return reported[-1]["pid"] if reported and reported[-1]["epoch"] == 1 else None

        pid = wait_for(stalled_worker, "the stalled trial reported its first epoch", sweep)
        os.kill(pid, signal.SIGKILL)
        yield FaultSweep(sweep, space, sweep.wait(), pid)
    finally:
        launcher.close()
