"""Real sweeps in subprocesses, with faults; every process they start is ended afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import (
    FAULT_PLAN,
    STALLED,
    FaultSweep,
    SweepProcess,
    fault_space,
    kill_session,
    results,
    trial_dirs,
    wait_for,
)


@pytest.fixture(scope="session")
def start_sweep(tmp_path_factory):
    """Starts `hiertune sweep` in a session of its own; ends every process in it afterwards."""
    started: list[SweepProcess] = []
    cache = tmp_path_factory.mktemp("fault-cache")

    def start(space: Path, storage: Path, name: str, *extra: str) -> SweepProcess:
        env = {**os.environ, "HIERTUNE_CACHE_DIR": str(cache)}
        cmd = [sys.executable, "-m", "hiertune", "sweep", str(space), "--name", name, "--storage", str(storage),
               "--json", *extra]
        log = storage.parent / f"{name}-{len(started)}.log"
        with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, start_new_session=True)
        started.append(SweepProcess(proc, storage, name, log))
        return started[-1]

    yield start
    for sweep in started:
        kill_session(sweep.proc.pid)
        if sweep.proc.poll() is None:
            sweep.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def fault_sweep(small_data, tmp_path_factory, start_sweep) -> FaultSweep:
    """One real sweep with a fault in most trials, and a Ray worker SIGKILLed mid-trial."""
    root = tmp_path_factory.mktemp("faults")
    space = fault_space(root / "space.yaml", small_data, samples=4, epochs=2, faults=FAULT_PLAN)
    sweep = start_sweep(space, root / "sweeps", "faults")
    tune_dir = sweep.dir / "tune"

    def stalled_worker() -> int | None:
        trial = trial_dirs(tune_dir).get(STALLED)
        reported = results(trial) if trial else []
        return reported[-1]["pid"] if reported and reported[-1]["epoch"] == 1 else None

    pid = wait_for(stalled_worker, "the stalled trial reported its first epoch", sweep)
    os.kill(pid, signal.SIGKILL)
    return FaultSweep(sweep, space, sweep.wait(), pid)
