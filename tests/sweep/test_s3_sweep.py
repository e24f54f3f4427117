"""A sweep whose data, storage and MLflow artifacts are on S3 (moto on loopback): interrupted, resumed
by a driver that has only S3, its front redrawn from S3, and no credential recorded anywhere."""

from __future__ import annotations

import pytest

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from conftest import AWS_KEY_ID, AWS_SECRET, files_under, last_json, space_file
from mlflow.tracking import MlflowClient

from hiertune.data.images import list_image_files

pytestmark = pytest.mark.slow


def test_s3_sweep_resumes_from_s3_alone_and_records_no_credential(cli, small_data, s3, cache_root, tmp_path,
                                                                   monkeypatch, one_ray):
    monkeypatch.chdir(tmp_path)  # an S3 sweep's default MLflow store is ./sweeps/mlflow.db
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    assert cli("data", "push", str(data), s3.uri("data")).code == 0
    shutil.rmtree(data)  # trials can only get the images from S3
    space = space_file(tmp_path, s3.uri("data"), samples=4, max_t=2, grace=2)
    storage = s3.uri("sweeps")
    cmd = [sys.executable, "-m", "hiertune", "sweep", str(space), "--name", "r", "--storage", storage]
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweeps' / 'mlflow.db'}")

    # Interrupt the driver once a trial has finished ...
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            experiment = client.get_experiment_by_name("r") if (tmp_path / "sweeps" / "mlflow.db").exists() else None
            if experiment and client.search_runs([experiment.experiment_id], "tags.`hiertune.status` = 'completed'"):
                break
        assert proc.poll() is None, "the sweep ended before it could be interrupted: " + first_log.read_text()[-2000:]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = json.loads(s3.read("sweeps/r/mlflow_runs.json"))["trials"]
    experiment = client.get_experiment_by_name("r")
    finished = [r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("hiertune.status") in ("completed", "stopped")]
    assert 1 <= len(before) and 1 <= len(finished) < 4  # interrupted with work left to resume

    # ... and resume it where only S3 knows the sweep.
    working = cache_root / "sweeps" / "s3" / s3.bucket / "sweeps" / "r"
    assert (working / "mlflow_runs.json").is_file()
    shutil.rmtree(working)
    resumed = cli("sweep", str(space), "--name", "r", "--storage", storage, "--resume", "--json")
    assert resumed.code == 0, resumed.err[-3000:]
    summary = last_json(resumed.out)
    assert sum(summary["trials"].values()) == 4 and summary["trials"]["failed"] == 0
    after = json.loads(s3.read("sweeps/r/mlflow_runs.json"))["trials"]
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())

    # Every trial's checkpoint and the sweep's own files are on S3.
    keys = set(s3.keys())
    trials = json.loads(s3.read("sweeps/r/trials.json"))
    assert sorted(t["trial_id"] for t in trials) == sorted(after)
    for t in trials:
        assert t["checkpoint"].startswith(s3.uri("sweeps", "r", "tune", f"trial_{t['trial_id']}", "checkpoint_"))
        key = t["checkpoint"][len(s3.uri()) + 1:]
        assert {f"{key}/posthoc.npz", f"{key}/model.safetensors", f"{key}/history.json"} <= keys
    assert {f"sweeps/r/{name}" for name in ("sweep.json", "pareto.csv", "pareto.png", "learning_curves.png",
                                            "tune/tuner.pkl")} <= keys
    assert summary["pareto_csv"] == s3.uri("sweeps", "r", "pareto.csv")

    # MLflow: a run per trial, each logged once; artifacts in the bucket beside the sweeps.
    experiment = client.get_experiment_by_name("r")
    assert experiment.artifact_location == s3.uri("sweeps", "mlartifacts")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["hiertune.trial_id"] for r in runs if "mlflow.parentRunId" in r.data.tags) == \
        sorted(after)
    front_csv = [k for k in keys if k.startswith("sweeps/mlartifacts/") and k.endswith("/artifacts/pareto.csv")]
    assert len(front_csv) == 1 and s3.read(front_csv[0]) == s3.read("sweeps/r/pareto.csv")

    # The front again, from S3 alone.
    shutil.rmtree(working)
    again = cli("pareto", "r", "--storage", storage, "--json")
    assert again.code == 0, again.err[-3000:]
    assert last_json(again.out)["front"] == summary["front"]

    # Export from S3 alone: the model retrained from the pushed data, its submission for the pushed
    # test images, and all of it beside the sweep in the bucket.
    shutil.rmtree(working)
    exported = cli("export-best", "r", "--storage", storage, "--json")
    assert exported.code == 0, exported.err[-3000:]
    keys = set(s3.keys())
    assert {f"sweeps/r/export/1/{name}" for name in ("model.safetensors", "config.json", "thresholds.json",
                                                      "submission.csv", "mlflow.json")} <= keys
    submission = s3.read("sweeps/r/export/1/submission.csv").decode().splitlines()
    assert submission[0] == "image,superclass_index,subclass_index"
    assert [row.split(",")[0] for row in submission[1:]] == list_image_files(small_data / "test_images")
    assert last_json(exported.out)["exports"][0]["dir"] == s3.uri("sweeps", "r", "export", "1")
    runs = client.search_runs([experiment.experiment_id])

    # No credential in any output, MLflow param or tag, stored object or local file.
    texts = [first_log.read_text(), resumed.out, resumed.err, again.out, again.err, exported.out, exported.err]
    texts += [f"{k}={v}" for r in runs for k, v in (*r.data.params.items(), *r.data.tags.items())]
    blobs = [s3.read(k) for k in s3.keys()] + [p.read_bytes() for p in files_under(tmp_path / "sweeps")]
    blobs += [p.read_bytes() for p in files_under(cache_root / "sweeps")]
    for secret in (AWS_KEY_ID, AWS_SECRET):
        assert not [t for t in texts if secret in t]
        assert not [b for b in blobs if secret.encode() in b]
