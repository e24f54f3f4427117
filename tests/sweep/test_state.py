"""The sweep's own files (sweep.json, trials.json, Ray's state before a resume) and the status rule."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from hiertune.errors import UserError
from hiertune.sweep.place import SweepPlace
from hiertune.sweep.state import (SweepMeta, TrialRecord, check_ray_state, find_meta, load_trials, read_meta,
                                  save_trials, trial_status, write_meta)
from hiertune.sweep.tracking import MlflowSweepCallback


@pytest.mark.parametrize("iterations, failed, finished, status", [
    (4, False, True, "completed"), (5, False, True, "completed"), (2, False, True, "stopped"),
    (4, True, True, "failed"), (2, False, False, "interrupted"), (1, True, False, "failed"),
])
def test_trial_status_is_one_rule(iterations, failed, finished, status):
    assert trial_status(iterations, 4, 4, failed=failed, finished=finished) == status
    # A trial that asked for fewer epochs than the last rung and ran them all was not stopped.
    assert trial_status(iterations, iterations, 4, failed=failed, finished=finished) == \
        status.replace("stopped", "completed")


def test_sweep_meta_round_trips_and_reads_a_record_without_resources(tmp_path):
    meta = SweepMeta("spaces/cnn.yaml", "cnn", True, cpus_per_trial=2.0, gpus_per_trial=0.5, pick="weight=0.7",
                     objectives=("seen", "unseen"), left_out={"finetune": ["full", "bn"]})
    write_meta(tmp_path, meta)
    assert read_meta(tmp_path) == meta == find_meta(tmp_path)
    record = json.loads((tmp_path / "sweep.json").read_text())
    (tmp_path / "sweep.json").write_text(json.dumps({**record, "left_out": {"finetune": "full"}}))
    with pytest.raises(UserError, match="left_out is not a mapping of axes to value lists"):
        read_meta(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"space": "s.yaml", "family": "cnn", "sampled_thresholds": False}))
    assert read_meta(tmp_path) == SweepMeta("s.yaml", "cnn", False, 1.0, 0.0, "knee", ())  # before `pick:`
    assert find_meta(tmp_path / "nowhere") is None
    (tmp_path / "sweep.json").write_text(json.dumps({"space": "s.yaml", "family": "cnn"}))
    with pytest.raises(UserError, match="missing sampled_thresholds"):
        read_meta(tmp_path)


def test_trial_records_round_trip(tmp_path):
    trials = [TrialRecord("a1", "trial_a1", "stopped", 2, {"lr": 0.01}, None, {"seen": 0.5}, None, {"lr": 0.01})]
    save_trials(tmp_path, trials)
    assert load_trials(tmp_path) == trials


def ray_state(tune_dir: Path, pickled: bytes) -> Path:
    tune_dir.mkdir(parents=True)
    (tune_dir / "tuner.pkl").write_bytes(pickled)
    (tune_dir / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    return tune_dir


def test_ray_state_of_this_layout_passes(tmp_path):
    place = SweepPlace(str(tmp_path), "s", "sqlite:///x.db")
    state = {"callbacks": [MlflowSweepCallback(place, "cnn", 4)], "trainable": trial_status}
    for protocol in (2, 5):
        check_ray_state(ray_state(tmp_path / f"p{protocol}", pickle.dumps(state, protocol=protocol)))


@pytest.mark.parametrize("protocol", [2, 5])
def test_ray_state_of_the_flat_layout_is_refused_in_one_line(tmp_path, protocol):
    # What a sweep started before the regrouping pickled: its callback by the old module path.
    # Renaming the module in the stream keeps every other opcode (and length prefix) valid.
    place = SweepPlace(str(tmp_path), "s", "sqlite:///x.db")
    data = pickle.dumps({"callbacks": [MlflowSweepCallback(place, "cnn", 4)]}, protocol=protocol)
    if protocol >= 4:  # SHORT_BINUNICODE: one length byte before the text
        n = len("hiertune.sweep.tracking")
        old = data.replace(bytes([n]) + b"hiertune.sweep.tracking", bytes([n - 6]) + b"hiertune.tracking")
    else:  # GLOBAL: "module\nname\n"
        old = data.replace(b"hiertune.sweep.tracking\n", b"hiertune.tracking\n")
    tune_dir = ray_state(tmp_path / "tune", old)
    with pytest.raises(UserError) as info:
        check_ray_state(tune_dir)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tune_dir / 'tuner.pkl'}: written by an older hiertune layout")
    assert "hiertune.tracking.MlflowSweepCallback" in message and "cannot be resumed" in message


def test_trial_counts_count_each_status_and_refuse_an_unknown_one():
    from hiertune.sweep.state import TrialCounts

    counts = TrialCounts.of(["completed", "stopped", "completed", "interrupted"])
    assert counts.to_dict() == {"completed": 2, "stopped": 1, "failed": 0, "interrupted": 1}
    assert counts.ended == 3 and counts.nonzero() == {"completed": 2, "stopped": 1, "interrupted": 1}
    with pytest.raises(ValueError, match="running"):
        TrialCounts.of(["running"])
    with pytest.raises(ValueError, match="negative"):
        TrialCounts(completed=-1)
