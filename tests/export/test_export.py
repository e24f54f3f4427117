"""export-best and predict on a real small sweep: retrain, calibrate, submission, MLflow registry."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import last_json, write_image
from hiertune.data.dataset import read_mapping
from hiertune.data.images import list_image_files
from hiertune.export.predictor import calibrate, calibrate_both


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def exported(finished_sweep):
    """A 3-trial sweep on the small synthetic set, then export-best --top 2 (the step its summary
    prints, run by the shared fixture)."""
    ((args, export),) = [(args, run) for args, run in finished_sweep.ran if args[0] == "export-best"]
    assert args[args.index("--top") + 1] == "2" and export.code == 0, export.err[-3000:]
    return {"storage": finished_sweep.storage, "sweep": finished_sweep.dir, "cache": str(finished_sweep.cache),
            "data": finished_sweep.data, "uri": finished_sweep.mlflow_uri, "name": finished_sweep.name}


@pytest.mark.slow
def test_export_writes_valid_submissions_and_self_contained_models(exported):
    test_dir = exported["data"] / "test_images"
    names = list_image_files(test_dir)
    n_super = len(read_mapping(exported["data"] / "superclass_mapping.csv"))
    n_sub = len(read_mapping(exported["data"] / "subclass_mapping.csv"))
    dirs = sorted((exported["sweep"] / "export").iterdir())
    assert [d.name for d in dirs] == ["1", "2"]  # and no staging leftovers beside them
    trials = set()
    for d in dirs:
        header, rows = read_rows(d / "submission.csv")
        assert header == ["image", "superclass_index", "subclass_index"]
        assert [r["image"] for r in rows] == names  # every test image once, numeric order
        sup = np.array([int(r["superclass_index"]) for r in rows])
        sub = np.array([int(r["subclass_index"]) for r in rows])
        assert sup.min() >= 0 and sup.max() <= n_super and sub.min() >= 0 and sub.max() <= n_sub
        assert np.all(sub[sup == n_super] == n_sub)  # a novel superclass has a novel subclass
        config = json.loads((d / "config.json").read_text())
        sub_to_super = np.array(config["heads"]["sub_to_super"])
        seen_sub = sub < n_sub
        assert np.array_equal(sub_to_super[sub[seen_sub]], sup[seen_sub])  # hierarchy respected

        # Retrained on everything but the calibration split: no pseudo-novel holdout, all outlier classes.
        trial = config["trial"]
        assert trial["pseudo_novel_fraction"] == 0.0 and trial["outlier_val_fraction"] == 0.0
        assert trial["val_fraction"] == pytest.approx(0.1)
        source = json.loads((d / "source.json").read_text())
        assert source["sweep"] == exported["name"] and trial["epochs"] == source["point"]["epochs"]
        trials.add(source["trial_id"])

        # Calibration reproduces the seen acceptance the sweep's threshold had at both levels: for
        # in-source seen images alone to within a calibration image or two, and with the shifted
        # group it misses the two groups' rates (weighted) no more than that threshold would.
        calib = json.loads((d / "metrics.json").read_text())["calibration"]
        thresholds = json.loads((d / "thresholds.json").read_text())
        assert thresholds["sweep"]["accept_super"] == pytest.approx(calib["target_accept_super"])
        assert calib["shifted_images"] > 0 and trial["shifted"] == "corrupt"
        w = trial["shifted_weight"]
        for level in ("super", "sub"):
            target, alone = calib[f"target_accept_{level}"], calib[f"seen_only_accept_{level}"]
            in_source = calib["images"] - calib["shifted_images"]
            assert target - 1e-9 <= alone <= target + 3 / in_source, (level, target, alone)
            target_shifted = calib[f"target_accept_shifted_{level}"]
            assert target_shifted == pytest.approx(source["point"][f"accept_shifted_{level}"])

            def miss(seen_rate, shifted_rate):
                return (1 - w) * abs(seen_rate - target) + w * abs(shifted_rate - target_shifted)

            assert miss(calib[f"accept_{level}"], calib[f"accept_shifted_{level}"]) <= miss(
                alone, calib[f"seen_only_accept_shifted_{level}"]) + 1e-12
        assert calib["images"] > 0
    assert len(trials) == 2  # --top 2 means two different trials


@pytest.mark.slow
def test_predict_and_mlflow_pyfunc_agree_with_the_export(exported, cli, tmp_path):
    export_dir = exported["sweep"] / "export" / "1"
    test_dir = exported["data"] / "test_images"
    _, submission = read_rows(export_dir / "submission.csv")
    expected = {r["image"]: (r["superclass_index"], r["subclass_index"]) for r in submission}

    # Any folder, any file names: the test images renamed, plus one grayscale image.
    folder = tmp_path / "images"
    folder.mkdir()
    renamed = {}
    for i, name in enumerate(list_image_files(test_dir)[:40]):
        new = f"img_{chr(97 + i % 26)}{i}.jpg"
        shutil.copyfile(test_dir / name, folder / new)
        renamed[new] = name
    write_image(folder / "gray.png", 7, mode="L")

    out = tmp_path / "predictions.csv"
    result = cli("predict", str(export_dir), str(folder), "-o", str(out), "--scores", "--json")
    assert result.code == 0, result.err[-2000:]
    assert "converted 1 non-RGB image" in result.err
    header, rows = read_rows(out)
    assert header[:3] == ["image", "superclass_index", "subclass_index"]
    assert {"novelty_score_super", "novelty_score_sub", "p_super_0", "p_sub_0"} <= set(header)
    assert len(rows) == len(renamed) + 1
    for r in rows:
        if r["image"] in renamed:
            assert (r["superclass_index"], r["subclass_index"]) == expected[renamed[r["image"]]]
        probs = [float(r[k]) for k in header if k.startswith("p_super_")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)

    # The registered model, loaded back through MLflow, gives the same predictions.
    info = json.loads((export_dir / "mlflow.json").read_text())
    mlflow.set_tracking_uri(exported["uri"])
    mlflow.set_registry_uri(exported["uri"])
    uri = f"models:/{info['registered_model']}/{info['version']}"
    model = mlflow.pyfunc.load_model(uri)
    # Its environment installs what the model's code imports, pinned as hiertune pins them; not
    # `hiertune`, which no package index has (its code travels in the model).
    requirements = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt")).read_text().split()
    pinned = dict(r.split("==") for r in requirements)
    assert {"torch", "torchvision", "timm", "safetensors", "mlflow"} <= set(pinned) and "hiertune" not in pinned
    paths = [str(folder / r["image"]) for r in rows]
    frame = model.predict(pd.DataFrame({"image": paths}))
    assert frame["superclass_index"].tolist() == [int(r["superclass_index"]) for r in rows]
    assert frame["subclass_index"].tolist() == [int(r["subclass_index"]) for r in rows]
    assert np.allclose(frame["novelty_score_super"], [float(r["novelty_score_super"]) for r in rows])


@pytest.mark.slow
def test_exports_are_logged_and_registered_under_the_sweep(exported):
    client = MlflowClient(exported["uri"])
    experiment = client.get_experiment_by_name(exported["name"])
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    exports = [r for r in runs if "hiertune.export" in r.data.tags]
    assert sorted(r.data.tags["hiertune.export"] for r in exports) == ["1", "2"]
    for run in exports:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.metrics["retrain_seconds"] > 0
        files = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
        assert {"export/submission.csv", "export/model.safetensors", "export/thresholds.json"} <= files
        # The thresholds and score the model uses, and only the settings its family reads.
        folder = exported["sweep"] / "export" / run.data.tags["hiertune.export"]
        point = json.loads((folder / "source.json").read_text())["point"]
        used = json.loads((folder / "thresholds.json").read_text())
        params = run.data.params
        assert float(params["tau_super"]) == pytest.approx(point["tau_super"]) and params["novelty_score"] == used["score"]
        assert float(params["thr_sub"]) == pytest.approx(float(used["thr_sub"]))
        assert "backbone" not in params and "kl_alpha" not in params and params["cnn_width"] == "8"
    versions = client.search_model_versions(f"name='hiertune-{exported['name']}'")
    assert sorted(v.tags["hiertune.export"] for v in versions) == ["1", "2"]


@pytest.mark.slow
def test_a_failed_export_leaves_the_previous_one_intact(finished_sweep):
    failed = finished_sweep.failed_export  # a new export (3) of point 1, failing as it logs to MLflow
    assert isinstance(failed.error, OSError) and "disk full (test)" in str(failed.error)
    assert failed.before and failed.after == failed.before
    assert failed.listing == ["1", "2"]  # no staging left, old or new


@pytest.mark.slow
def test_a_retraining_in_this_process_is_the_one_a_ray_task_made(exported, monkeypatch):
    """Export 1 was retrained in a Ray task (the fixture's Ray). Without a Ray, on a machine
    without GPUs where the retrainings would run one at a time, export-best retrains here: the
    same job gives the same weights, scorers, thresholds and calibration, and starts no Ray."""
    import ray

    from hiertune.data.bundle import load_bundle
    from hiertune.export import export as export_module
    from hiertune.export.predictor import CONFIG, MODEL, SCORERS, THRESHOLDS
    from hiertune.export.retrain import RetrainJob
    from hiertune.sweep.front import Pick, sweep_front
    from hiertune.sweep.state import load_trials, read_meta

    trials = {t.trial_id: t for t in load_trials(exported["sweep"])}
    meta = read_meta(exported["sweep"])
    point = Pick.parse(meta.pick).choose(sweep_front(list(trials.values()), False)[1], 1)[0]
    done = exported["sweep"] / "export" / "1"
    assert json.loads((done / "source.json").read_text())["trial_id"] == point.trial_id
    job = RetrainJob(1, point, export_module.retrain_config(trials[point.trial_id], point, 0.1), Path(exported["cache"]))
    cfg = job.cfg
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), Path(exported["cache"]),
                         cfg.shift_config())
    assert not ray.is_initialized()
    outputs, failures = export_module._retrain_all([job], bundle, meta.cpus_per_trial, meta.gpus_per_trial, None)
    assert not failures and not ray.is_initialized()
    files = outputs[1].files
    for name in (MODEL, SCORERS, CONFIG, THRESHOLDS):
        assert files[name] == (done / name).read_bytes(), name
    assert json.loads(files["metrics.json"])["calibration"] == json.loads((done / "metrics.json").read_text())["calibration"]
    # A retraining that fails here fails its export in one line, as a failed task does.
    monkeypatch.setattr(export_module, "retrain", lambda *a: (_ for _ in ()).throw(ValueError("no room\nleft (test)")))
    assert export_module._retrain_all([job], bundle, 1, 0, None) == ({}, [f"export 1 ({point.trial}) failed: left (test)"])


@pytest.mark.slow
def test_exporting_points_already_exported_reuses_them(exported, cli):
    """export-best --top 2 again: both points are exported with these settings, so nothing is
    retrained, overwritten or registered again."""
    export_dir = exported["sweep"] / "export"
    before = {p: p.read_bytes() for p in sorted(export_dir.rglob("*")) if p.is_file()}
    again = cli("export-best", exported["name"], "--storage", str(exported["storage"]), "--top", "2", "--json")
    assert again.code == 0, again.err[-2000:]
    result = last_json(again.out)
    assert result["retrain_wall_seconds"] == 0 and [e["reused"] for e in result["exports"]] == [True, True]
    assert [Path(e["dir"]).name for e in result["exports"]] == ["1", "2"]
    assert {p: p.read_bytes() for p in sorted(export_dir.rglob("*")) if p.is_file()} == before
    assert "(already exported: reused)" in cli("export-best", exported["name"], "--storage",
                                               str(exported["storage"])).out


@pytest.mark.slow
def test_bad_input_is_one_line(exported, cli, tmp_path):
    storage, name = str(exported["storage"]), exported["name"]
    cases = [
        (["export-best", "nope", "--storage", storage], "no such sweep"),
        (["export-best", name, "--storage", storage, "--pick", "best"], "expected knee, max-seen"),
        (["export-best", name, "--storage", storage, "--pick", "weight=2"], "W in [0, 1]"),
        (["export-best", name, "--storage", storage, "--top", "0"], "--top must be >= 1"),
        (["predict", str(tmp_path / "missing"), str(tmp_path)], "no such model directory"),
    ]
    broken = tmp_path / "broken"
    shutil.copytree(exported["sweep"] / "export" / "1", broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    cases.append((["predict", str(broken), str(exported["data"] / "test_images")],
                  f"{broken / 'model.safetensors'}: unreadable or truncated"))
    bad_images = tmp_path / "bad"
    bad_images.mkdir()
    (bad_images / "0.jpg").write_bytes(b"not a jpeg")
    cases.append((["predict", str(exported["sweep"] / "export" / "1"), str(bad_images)], "cannot decode image"))
    no_thresholds = tmp_path / "nothr"
    shutil.copytree(exported["sweep"] / "export" / "1", no_thresholds)
    (no_thresholds / "thresholds.json").unlink()
    cases.append((["predict", str(no_thresholds), str(bad_images)], "missing thresholds.json"))
    for argv, message in cases:
        result = cli(*argv, "-o", str(tmp_path / "out.csv")) if argv[0] == "predict" else cli(*argv)
        assert result.code == 2, (argv, result.err)
        assert len(result.err_lines) == 1 and message in result.err, (argv, result.err)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.safetensors", "scorers.safetensors", "config.json", "thresholds.json",
                                  "superclass_mapping.csv", "subclass_mapping.csv"])
def test_a_truncated_exported_model_file_is_named_in_one_line(exported, cli, tmp_path, name):
    model_dir = tmp_path / "model"
    shutil.copytree(exported["sweep"] / "export" / "1", model_dir)
    data = (model_dir / name).read_bytes()
    (model_dir / name).write_bytes(data[: len(data) // 2])
    result = cli("predict", str(model_dir), str(exported["data"] / "test_images"), "-o", str(tmp_path / "p.csv"))
    assert result.code == 2 and len(result.err_lines) == 1, result.err[-2000:]
    assert name in result.err_lines[0]
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("accept", [0.0, 0.05, 0.5, 0.93, 1.0])
def test_calibrate_accepts_the_target_fraction(accept):
    scores = np.random.default_rng(0).normal(size=1000)
    thr = calibrate(scores, accept)
    got = float((scores >= thr).mean())
    assert accept <= got <= accept + 1e-3
    if accept == 1.0:
        assert thr == -np.inf  # accepts new images below the calibration minimum too


def test_calibration_matches_both_seen_groups():
    seen = np.arange(100.0)
    shifted = np.arange(100.0) - 30  # the shift lowers every score
    assert calibrate_both(seen, 0.9, shifted, 0.6, 0.0) == calibrate(seen, 0.9)
    assert calibrate_both(seen, 0.9, shifted, float("nan"), 0.5) == calibrate(seen, 0.9)
    only_shifted = calibrate_both(seen, 0.9, shifted, 0.6, 1.0)
    assert (shifted >= only_shifted).mean() == pytest.approx(0.6)

    def miss(t, w):
        return (1 - w) * abs((seen >= t).mean() - 0.9) + w * abs((shifted >= t).mean() - 0.6)

    both = calibrate_both(seen, 0.9, shifted, 0.6, 0.5)
    assert miss(both, 0.5) <= min(miss(t, 0.5) for t in np.concatenate([seen, shifted])) + 1e-12
    assert miss(both, 0.5) < miss(calibrate(seen, 0.9), 0.5)
