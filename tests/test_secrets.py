"""Planted credentials through a real sweep, export-best and predict against a real MLflow
server (its basic-auth password in the URI, percent-encoded with '@', ':' and '/' inside) with
AWS credentials in the environment; then an unreachable server. No planted value may appear in
any output or in any file the commands, Ray's session directory or the MLflow server leave.
(Hostile edits of an exported model run in the fast tier, on conftest's small exported model.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import files_under, free_port
from hostile_cases import URI_PASSWORD, URI_PASSWORD_ENCODED, URI_USER

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
AWS = {"AWS_ACCESS_KEY_ID": "AKIAPLANTED15HIERTUN", "AWS_SECRET_ACCESS_KEY": "planted/Secret+15hiertuneXyZ0a9b8c7",
       "AWS_SESSION_TOKEN": "PlantedSession15TokenHiertuneQqRr"}
# Every spelling a leak could take: as written in the URI, decoded, re-encoded, and the AWS values.
SECRETS = sorted({URI_PASSWORD, URI_PASSWORD_ENCODED, quote(URI_PASSWORD), "pa@ss:w0rd", *AWS.values()})


def _wait_up(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError("mlflow server did not start")


@pytest.fixture(scope="module")
def leaks(tmp_path_factory, small_data):
    root = tmp_path_factory.mktemp("secrets")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    server_dir = root / "mlflow-server"
    server_dir.mkdir()
    server_log = (root / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{server_dir / 'm.db'}",
         "--artifacts-destination", str(server_dir / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))}
    env.update(AWS, PYTHONPATH=str(REPO), RAY_TMPDIR=str(ray_tmp), HIERTUNE_CACHE_DIR=str(root / "cache"),
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", AWS_EC2_METADATA_DISABLED="true")
    space = root / "space.yaml"
    space.write_text(f"""
family: cnn
fixed: {{epochs: 1, batch_size: 32, cnn_width: 8, threads: 1, data: {small_data}}}
search:
  lr: {{type: float, low: 1.0e-3, high: 2.0e-2, log: true}}
tune: {{num_samples: 2, sampler: random, seed: 1}}
scheduler: {{max_t: 1, grace_period: 1, reduction_factor: 2}}
resources: {{cpus_per_trial: 1}}
""")
    storage = root / "sweeps"

    def start(*argv: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hiertune", *argv], env=env, cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
        out, err = proc.communicate(timeout=900)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return finish(start(*argv))

    dead = f"http://{URI_USER}:{URI_PASSWORD_ENCODED}@127.0.0.1:{free_port()}"
    # Commands that need no server, or only the export, run beside what is under way: most of
    # their time is interpreter start-up, and a refused command stops before Ray or a trial starts.
    unreachable = start("sweep", str(space), "--name", "f", "--storage", str(storage), "--mlflow-uri", dead)
    try:
        _wait_up(f"http://127.0.0.1:{port}", server, 300)
        uri = f"http://{URI_USER}:{URI_PASSWORD_ENCODED}@127.0.0.1:{port}"
        runs = {
            "sweep": run("sweep", str(space), "--name", "s", "--storage", str(storage), "--mlflow-uri", uri, "--json"),
            "export": run("export-best", "s", "--storage", str(storage), "--mlflow-uri", uri, "--json"),
        }
        after_export = {
            "predict": start("predict", str(storage / "s" / "export" / "1"), str(small_data / "test_images"),
                             "-o", str(root / "predictions.csv"), "--json"),
            "unreachable-export": start("export-best", "s", "--storage", str(storage), "--mlflow-uri", dead)}
        runs.update({name: finish(proc) for name, proc in after_export.items()}, unreachable=finish(unreachable))
        yield {"root": root, "ray": ray_tmp, "storage": storage, "runs": runs, "model": storage / "s" / "export" / "1",
               "server": f"http://127.0.0.1:{port}"}
    finally:
        if unreachable.poll() is None:
            unreachable.kill()
            unreachable.wait()
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        server_log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def rest(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _found(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


def test_a_sweep_export_and_predict_succeed_without_showing_a_secret(leaks):
    for name in ("sweep", "export", "predict"):
        r = leaks["runs"][name]
        assert r.returncode == 0, (name, r.stderr[-3000:])
        assert not _found(r.stdout + r.stderr), (name, _found(r.stdout + r.stderr))
    export = json.loads(leaks["runs"]["export"].stdout.splitlines()[-1])
    assert export["exports"][0]["mlflow"]["tracking_uri"].startswith("http://127.0.0.1:")
    # MLflow's own "View run … at" line was printed, and carries the host only.
    views = [line for line in leaks["runs"]["export"].stdout.splitlines() if "View run" in line]
    assert views and all("@127.0.0.1" not in line for line in views), views


def test_no_file_a_sweep_export_or_ray_leaves_holds_a_secret(leaks):
    files = [*files_under(leaks["root"]), *files_under(leaks["ray"])]
    names = {p.name for p in files}
    # The places the secrets used to reach are among those searched.
    assert {"tuner.pkl", "mlflow.json", "predictions.csv", "mlflow-server.log"} <= names, sorted(names)[:50]
    assert any(p.name.startswith("runtime_env_agent") for p in files), "Ray's runtime_env agent log not found"
    leaked = {str(p): _found(p.read_bytes()) for p in files if p.is_file() and not p.is_symlink()}
    assert not {p: s for p, s in leaked.items() if s}


@pytest.mark.parametrize("name", ["unreachable", "unreachable-export"])
def test_an_unreachable_server_is_one_line_without_its_credentials(leaks, name):
    r = leaks["runs"][name]
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MLflow store http://127.0.0.1:" in lines[0], lines
    assert not _found(r.stdout + r.stderr)
    assert not (leaks["storage"] / "f").exists()


def test_sweep_logs_to_an_mlflow_server_over_http(leaks):
    assert leaks["runs"]["sweep"].returncode == 0, leaks["runs"]["sweep"].stderr[-3000:]
    assert not (leaks["storage"] / "mlflow.db").exists()  # nothing went to a local store
    server = leaks["server"]
    experiment = rest(server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=s")["experiment"]
    runs = rest(server, "/api/2.0/mlflow/runs/search",
                {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    sweep_runs = [(r, t) for r, t in zip(runs, tags) if "hiertune.export" not in t]  # export-best's run is beside them
    children = [t for _, t in sweep_runs if "mlflow.parentRunId" in t]
    assert len(sweep_runs) == 3 and len(children) == 2
    assert all(t["hiertune.status"] == "completed" for t in children)
    metric_names = {m["key"] for r, _ in sweep_runs for m in r["data"].get("metrics", [])}
    assert {"hypervolume", "seen", "unseen", "train_loss"} <= metric_names
    parent_id = next(r["info"]["run_id"] for r, t in sweep_runs if "mlflow.parentRunId" not in t)
    listing = rest(server, f"/api/2.0/mlflow/artifacts/list?run_id={parent_id}")
    assert {"pareto.csv", "pareto.png"} <= {f["path"] for f in listing.get("files", [])}
