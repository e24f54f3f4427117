"""The probes' cache: measured once per key, read after; anything damaged measured again."""

from __future__ import annotations

import json
import logging

import pytest

from hiertune.training.probe_cache import cached_probe, probe_key, probe_path

INPUTS = {"features": {"labeled": "ab12"}, "seed": 0}


class Probe:
    """A measurement that counts its calls and gives what it is told."""

    def __init__(self, records: dict):
        self.records, self.calls = records, 0

    def __call__(self) -> dict:
        self.calls += 1
        return self.records


def test_a_probe_is_measured_once_per_key_and_read_after(tmp_path):
    probe = Probe({"labeled_vs_outliers": {"auroc": 0.93}})
    first = cached_probe(tmp_path, "source", INPUTS, probe, ["labeled_vs_outliers"])
    again = cached_probe(tmp_path, "source", INPUTS, probe, ["labeled_vs_outliers"])
    assert probe.calls == 1 and not first.cached and again.cached
    assert again.records == first.records == {"labeled_vs_outliers": {"auroc": 0.93}}
    assert again.measured == first.measured
    assert probe_path(tmp_path, "source", probe_key("source", INPUTS)).is_file()
    # Other inputs, or another probe under the same inputs: another key, measured.
    cached_probe(tmp_path, "source", {**INPUTS, "seed": 1}, probe)
    cached_probe(tmp_path, "cost", INPUTS, probe)
    assert probe.calls == 3
    assert not [p for p in (tmp_path / "probes").iterdir() if p.name.startswith(".")]  # no staging file left


def test_fresh_measures_again_and_its_figures_replace_the_kept_ones(tmp_path):
    """--remeasure: a kept measurement (say, from a busy machine) is not read but replaced."""
    busy = Probe({"a": {"train_seconds": 7.0}})
    kept = cached_probe(tmp_path, "cost", INPUTS, busy)
    quiet = Probe({"a": {"train_seconds": 1.0}})
    fresh = cached_probe(tmp_path, "cost", INPUTS, quiet, fresh=True)
    assert quiet.calls == 1 and not fresh.cached and fresh.records == {"a": {"train_seconds": 1.0}}
    after = cached_probe(tmp_path, "cost", INPUTS, busy)
    assert busy.calls == 1 and after.cached and after.records == fresh.records and after.measured == fresh.measured
    assert kept.records != after.records


def test_without_a_cache_root_every_call_measures_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    probe = Probe({"a": {"x": 1.0}})
    assert cached_probe(None, "source", INPUTS, probe).records == {"a": {"x": 1.0}}
    cached_probe(None, "source", INPUTS, probe)
    assert probe.calls == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, reason", [
    ('{"format": "hiertune-probe", "version": 1, "probe": "sou', "unreadable"),
    ("[1, 2]", "not a hiertune-probe file"),
    ('{"format": "hiertune-probe", "version": 1, "probe": "source", "key": "KEY", "measured": "t", '
     '"records": {"labeled_vs_outliers": {"auroc": NaN}}}', "is not a finite number"),
    ('{"format": "hiertune-probe", "version": 1, "probe": "source", "key": "KEY", "measured": "t", '
     '"records": {"labeled_vs_outliers": {"auroc": true}}}', "is not a finite number"),
    ('{"format": "hiertune-probe", "version": 1, "probe": "source", "key": "KEY", "measured": "t", '
     '"records": {"labeled_vs_outliers": {"auroc": 0.5}, "extra": {"auroc": 0.5}}}', "holds records"),
    ('{"format": "hiertune-probe", "version": 1, "probe": "source", "key": "another", "measured": "t", '
     '"records": {"labeled_vs_outliers": {"auroc": 0.5}}}', "written for another probe or key"),
    ('{"format": "hiertune-probe", "version": 1, "probe": "source", "key": "KEY", '
     '"records": {"labeled_vs_outliers": {"auroc": 0.5}}}', "no time of measurement"),
])
def test_a_damaged_or_foreign_file_is_said_and_measured_again(tmp_path, caplog, content, reason):
    key = probe_key("source", INPUTS)
    path = probe_path(tmp_path, "source", key)
    path.parent.mkdir(parents=True)
    path.write_text(content.replace('"KEY"', json.dumps(key)))
    probe = Probe({"labeled_vs_outliers": {"auroc": 0.93}})
    with caplog.at_level(logging.WARNING, logger="hiertune"):
        result = cached_probe(tmp_path, "source", INPUTS, probe, ["labeled_vs_outliers"])
    assert probe.calls == 1 and not result.cached and result.records == {"labeled_vs_outliers": {"auroc": 0.93}}
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"warning: {path}: ") and reason in line and line.endswith("; measured again")
    # The file now holds the new measurement, which the next call reads.
    assert cached_probe(tmp_path, "source", INPUTS, probe, ["labeled_vs_outliers"]).cached and probe.calls == 1


def test_a_measurement_that_is_not_a_number_is_given_but_not_kept(tmp_path):
    probe = Probe({"labeled_vs_outliers": {"auroc": float("nan")}})
    result = cached_probe(tmp_path, "source", INPUTS, probe)
    assert result.records["labeled_vs_outliers"]["auroc"] != result.records["labeled_vs_outliers"]["auroc"]
    cached_probe(tmp_path, "source", INPUTS, probe)
    assert probe.calls == 2 and not (tmp_path / "probes").exists()
