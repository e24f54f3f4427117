"""Hostile inputs that hiertune accepts, through the CLI: what it does instead of refusing (reads,
recomputes, replaces, warns in one line), and what it must never do (use a rewritten cache,
drop an image silently, leave a half-written file or an empty folder, wait minutes). Warnings
the CLI logs are read from the log records (`warnings`), printed ones from stderr."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hiertune.training.feature_check import DIGEST_KEY, content_digest

from conftest import write_image
from hostile_cases import RAW_PASSWORDS
from test_hostile import entries, file_size_limit


@pytest.fixture
def warnings(caplog):
    """The warning lines hiertune logs during the test."""
    caplog.set_level(logging.WARNING, logger="hiertune")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_predict_replaces_an_existing_output_and_checks_it_before_predicting(cli, exported_model, tiny_data, tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    result = cli("predict", str(exported_model), str(tiny_data / "test_images"), "-o", str(out))
    assert result.code == 0, result.err
    assert [r[0] for r in _rows(out)] == ["image", "0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".p.csv")) == []
    # A full disk while writing it leaves the previous file whole, and no temporary beside it.
    before = out.read_bytes()
    with file_size_limit(40):
        result = cli("predict", str(exported_model), str(tiny_data / "test_images"), "-o", str(out))
    assert result.code == 2 and result.err_lines == [f"hiertune: error: cannot write {out}: File too large"]
    assert out.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".p.csv")]


def test_predict_reads_gif_and_tiff_and_names_the_files_it_skips(cli, exported_model, tiny_data, tmp_path, warnings):
    pics = tmp_path / "pics"
    shutil.copytree(tiny_data / "test_images", pics)
    Image.open(pics / "0.jpg").save(pics / "7.gif")
    Image.open(pics / "1.jpg").save(pics / "8.tif")
    (pics / "notes.txt").write_text("not an image")
    (pics / "9.heic").write_bytes(b"\0" * 64)
    result = cli("predict", str(exported_model), str(pics), "-o", str(tmp_path / "p.csv"))
    assert result.code == 0, result.err
    assert [r[0] for r in _rows(tmp_path / "p.csv")[1:]] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "7.gif", "8.tif"]
    assert warnings() == [f"warning: {pics}: skipped 2 file(s) that are not images by their extension "
                          "(.jpg, .jpeg, .png, .bmp, .webp, .gif, .tif, .tiff) (first: '9.heic')"]
    assert result.err_lines == [f"warning: {pics}: converted 1 non-RGB image(s) to RGB (first: pics/7.gif)"]


def test_ls_shows_a_sweep_whose_record_is_truncated_as_damaged(cli, tmp_path):
    sweep = tmp_path / "sweeps" / "cut"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text('{"space": "s.yaml", "fami')
    (sweep / "trials.json").write_text("[]")
    result = cli("ls", "--storage", str(tmp_path / "sweeps"), "--json")
    assert result.code == 0, result.err
    [entry] = json.loads(result.out.splitlines()[-1])["sweeps"]
    assert entry["status"] == "damaged sweep.json"


def _frozen_space(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / "frozen.yaml"
    path.write_text(f"family: layover\nfixed: {{epochs: 1, backbone: resnet10t, layover_hidden: 16, batch_size: 32, "
                    f"image_size: 32, threads: 1, augment: false, shifted: none, data: {data}, outliers: none}}\n")
    return path


def test_a_rewritten_or_nan_feature_cache_is_detected_and_computed_again(cli, cache_root, tiny_data, tmp_path,
                                                                          warnings, caplog):
    space = _frozen_space(tmp_path, tiny_data)
    first = cli("train", str(space), "--out", str(tmp_path / "r0"), "--json")
    assert first.code == 0, first.err
    [path] = (cache_root / "features").glob("*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    original = load_file(str(path))
    for n, edit in enumerate(("other values", "nan")):
        changed = {k: v.clone() for k, v in original.items()}
        name = sorted(changed)[0]
        changed[name].view(-1)[0] = float("nan") if edit == "nan" else changed[name].view(-1)[0] + 1
        # The right key, other values; the NaN with a digest that matches them, as a forger would write.
        forged = {DIGEST_KEY: content_digest({k: v.numpy() for k, v in changed.items()})} if edit == "nan" else {}
        save_file(changed, str(path), metadata={**metadata, **forged})
        caplog.clear()
        result = cli("train", str(space), "--out", str(tmp_path / f"r{n + 1}"), "--json")
        assert result.code == 0, result.err
        [line] = warnings()
        reason = "holds NaN" if edit == "nan" else "do not match their digest"
        assert line.startswith(f"feature cache {path} unusable") and reason in line, line
        final, expected = (json.loads(r.out.splitlines()[-1])["final"] for r in (result, first))
        assert [final[k] for k in ("train_loss", "seen", "hypervolume")] == \
            [expected[k] for k in ("train_loss", "seen", "hypervolume")]
        assert all(np.array_equal(v, original[k]) for k, v in load_file(str(path)).items())  # computed again


def test_shifted_data_images_resized_on_decoding_are_warned_about(cli, tiny_data, tmp_path, warnings):
    shifted = tmp_path / "shifted"
    shutil.copytree(tiny_data, shifted)
    for n in (3, 4):
        write_image(shifted / "train_images" / f"{n}.jpg", n, size=40)
    space = tmp_path / "space.yaml"
    space.write_text(f"family: cnn\nfixed: {{epochs: 1, cnn_width: 8, threads: 1, data: {tiny_data}, outliers: none}}\n")
    result = cli("train", str(space), "--shifted-data", str(shifted), "--out", str(tmp_path / "run"))
    assert result.code == 0, result.err
    assert warnings() == [
        f"warning: --shifted-data {shifted}: resized 2 image(s) to 64x64 (first: train_data.csv line 5: "
        "train_images/3.jpg)"]


def test_a_cache_far_larger_than_its_images_is_not_written(cli, exported_model, tmp_path, monkeypatch, warnings):
    from hiertune.data import cache

    monkeypatch.setattr(cache, "CACHE_ALWAYS_BYTES", 0)  # the rule at a scale a test can afford
    pics = tmp_path / "thumbs"
    pics.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, format="PNG")
    for n in range(50):
        (pics / f"{n}.png").write_bytes(buffer.getvalue())
    cache_dir = tmp_path / "c"
    result = cli("predict", str(exported_model), str(pics), "-o", str(tmp_path / "p.csv"), "--cache-dir", str(cache_dir))
    assert result.code == 0, result.err
    assert len(_rows(tmp_path / "p.csv")) == 51
    [note] = [line for line in warnings() if "not cached" in line]
    assert note.startswith(f"warning: {pics}: decoded images not cached: ")
    assert not list(cache_dir.glob("*.parquet"))


def test_an_unreachable_mlflow_server_is_reported_without_minutes_of_retries(cli, tiny_data, tmp_path, monkeypatch):
    """MLflow's defaults (7 retries with backoff: 277 s against a closed port) as a user has them."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    space = tmp_path / "space.yaml"
    space.write_text(f"family: cnn\nfixed: {{epochs: 1, cnn_width: 8, data: {tiny_data}, outliers: none}}\n")
    before = entries(tmp_path)
    start = time.monotonic()
    result = cli("sweep", str(space), "--storage", str(tmp_path / "sweeps"),
                 "--mlflow-uri", f"http://u:{RAW_PASSWORDS['hash']}@127.0.0.1:1")
    assert time.monotonic() - start < 60
    assert result.code == 2 and len(result.err_lines) == 1 and "MLflow store http://127.0.0.1:1: " in result.err
    assert RAW_PASSWORDS["hash"] not in result.err and entries(tmp_path) == before


@pytest.mark.parametrize("password", list(RAW_PASSWORDS.values()))
def test_a_raw_password_is_masked_in_any_line_that_quotes_its_uri(password):
    from hiertune import secrets

    uri = f"postgresql://user:{password}@db.internal:5432/mlflow"
    secrets.remember_uri(uri)
    for text in (uri, repr(uri), json.dumps({"uri": uri}), f"failed: {uri}/x"):
        shown = secrets.redact(text)
        assert password not in shown, shown
    # a database URI keeps its password, encoded so that the driver reads the same one
    from urllib.parse import unquote, urlsplit

    assert unquote(urlsplit(secrets.tracking_uri(uri)).password) == password
