"""Helpers for the fault tests: a tiny sweep space, sweep subprocesses, and what Ray and MLflow recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

DEADLINE_S = 600


def fault_space(path: Path, data: Path, samples: int, epochs: int, faults: str = "") -> Path:
    """A tiny cnn sweep whose trials all run to the end (grace period = max_t: ASHA stops none),
    two at a time whatever the machine, so trials start in a known order."""
    path.write_text(f"""
family: cnn
fixed: {{epochs: {epochs}, batch_size: 32, cnn_width: 8, threads: 1, data: {data}, faults: "{faults}"}}
search:
  lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
tune: {{num_samples: {samples}, sampler: tpe, seed: 5, max_failures: 1, max_concurrent: 2}}
scheduler: {{max_t: {epochs}, grace_period: {epochs}, reduction_factor: 2}}
resources: {{cpus_per_trial: 1}}
""")
    return path


@dataclass
class SweepProcess:
    proc: subprocess.Popen
    storage: Path
    name: str
    log: Path  # stdout and stderr go to files: a pipe nobody reads would stall a chatty Ray

    @property
    def dir(self) -> Path:
        return self.storage / self.name

    @property
    def out(self) -> str:
        return self.log.with_suffix(".out").read_text()

    @property
    def err(self) -> str:
        return self.log.with_suffix(".err").read_text()

    def wait(self, timeout: float = DEADLINE_S) -> int:
        return self.proc.wait(timeout=timeout)


class Launcher:
    """Starts `hiertune sweep` processes, each in a session of its own, and ends every process of
    those sessions on close: Ray's workers sit in process groups of their own, and Ray's agents
    outlive a killed driver."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.started: list[SweepProcess] = []

    def start(self, space: Path, storage: Path, name: str, *extra: str) -> SweepProcess:
        env = {**os.environ, "HIERTUNE_CACHE_DIR": str(self.cache)}
        cmd = [sys.executable, "-m", "hiertune", "sweep", str(space), "--name", name, "--storage", str(storage),
               "--json", *extra]
        log = storage.parent / f"{name}-{len(self.started)}.log"
        with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, start_new_session=True)
        self.started.append(SweepProcess(proc, storage, name, log))
        return self.started[-1]

    def close(self) -> None:
        for sweep in self.started:
            kill_session(sweep.proc.pid)
            if sweep.proc.poll() is None:
                sweep.proc.wait(timeout=60)


def session_pids(sid: int) -> list[int]:
    """Every process of session `sid`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


def kill_session(sid: int) -> None:
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(condition, what: str, sweep: SweepProcess, timeout: float = DEADLINE_S):
    """Polls `condition` until it returns something truthy; fails if the sweep exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if sweep.proc.poll() is not None:
            pytest.fail(f"the sweep exited (code {sweep.proc.returncode}) before {what}: {sweep.err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def trial_dirs(tune_dir: Path) -> dict[int, Path]:
    """Trial number (as the sweep sampled them) → the trial's folder in Ray Tune's experiment."""
    dirs = {}
    for d in tune_dir.glob("trial_*"):
        try:
            dirs[json.loads((d / "params.json").read_text())["trial_number"]] = d
        except (OSError, ValueError):  # not started yet, or being written
            continue
    return dirs


def results(trial_dir: Path) -> list[dict]:
    """Every result Ray recorded for the trial, in order."""
    path = trial_dir / "result.json"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]  # the last may be half-written


def history(trial_dir: Path) -> list[dict]:
    """The per-epoch history in the trial's latest checkpoint."""
    checkpoint = max(trial_dir.glob("checkpoint_*"))
    return json.loads((checkpoint / "history.json").read_text())


def failures(trial_dir: Path) -> int:
    """How many times Ray recorded the trial failing (its error file holds one entry per failure)."""
    path = trial_dir / "error.txt"
    return path.read_text().count("Failure # ") if path.is_file() else 0


def ray_statuses(tune_dir: Path) -> dict[str, str]:
    """trial id → status in Ray Tune's newest experiment state."""
    state = json.loads(max(tune_dir.glob("experiment_state-*.json")).read_text())
    trials = [json.loads(t[0]) for t in state["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def mlflow_runs(storage: Path, name: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def children(runs: list) -> dict[str, object]:
    """trial id → its MLflow run, checking that no trial has two."""
    by_trial: dict[str, object] = {}
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            trial_id = run.data.tags["hiertune.trial_id"]
            assert trial_id not in by_trial, f"trial {trial_id} has two MLflow runs"
            by_trial[trial_id] = run
    return by_trial


def steps(client: MlflowClient, run, metric: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, metric)]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


# Trial 0 fails once at its second epoch (a transient fault) and is retried; trial 1's loss turns
# NaN in its second epoch; trial 2 runs out of memory at once; trial 3 stops at its second epoch
# until the test kills its worker.
FAULT_PLAN = "0=raise_once@1;1=nan@1;2=oom@0;3=stall@1"
STALLED = 3


@dataclass
class FaultSweep:
    sweep: SweepProcess
    space: Path
    code: int
    killed_pid: int

    @property
    def tune_dir(self) -> Path:
        return self.sweep.dir / "tune"
