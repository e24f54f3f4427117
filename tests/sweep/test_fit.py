"""The sweep on the machine a user has: resources fitted to the largest node, a time budget, the
cost plan that leaves out what a budget cannot afford, and a resume that keeps what it started with."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import space_file
from hiertune.errors import UserError
from hiertune.sweep.space import load_space
from hiertune.sweep import cost, resources
from hiertune.progress import duration
from hiertune.sweep.budget import parse_duration
from hiertune.sweep.resume import check_same_data, data_inputs, resumed_space
from hiertune.sweep.state import SweepMeta
from hiertune.training.probe import EpochCost

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
NO_GPU = resources.Node(2.0, 0.0, "this machine")


def test_a_request_larger_than_the_largest_node_is_cut_to_it_in_one_line():
    fitted = resources.fit(4, 0.25, NO_GPU)
    assert (fitted.cpus, fitted.gpus, fitted.parallel) == (2, 0, 1)
    assert fitted.line() == ("resources: the space asks 4 CPUs and 0.25 GPU per trial; this machine has 2 CPUs and "
                             "no GPU: each trial gets 2 CPUs, no GPU")
    gpu_node = resources.Node(16, 1, "the largest node of the cluster")
    assert resources.fit(4, 4, gpu_node).gpus == 1 and resources.fit(4, 0.25, gpu_node).parallel == 4
    assert not resources.fit(1, 0, NO_GPU).changed and resources.fit(1, 0, NO_GPU).parallel == 2
    with pytest.raises(UserError, match="has 0 CPUs; no trial could ever start"):
        resources.fit(1, 0, resources.Node(0, 0, "the largest node of the cluster"))


@pytest.mark.parametrize("setting", ["resources.cpus_per_trial=1000", "resources.gpus_per_trial=4"])
def test_a_space_asking_more_than_the_machine_has_gets_one_line_before_ray_or_the_data(
        cli, small_data, tmp_path, monkeypatch, caplog, setting):
    monkeypatch.setattr(resources, "local_node", lambda: NO_GPU)  # a GPU machine runs this test as one without
    caplog.set_level(logging.INFO, logger="hiertune")
    space = space_file(tmp_path, small_data, samples=1, max_t=1)
    start = time.monotonic()
    # A missing data folder stops the sweep right after the fit: what came before it is the point.
    result = cli("sweep", str(space), "--set", setting, "--data", str(tmp_path / "missing"),
                 "--storage", str(tmp_path / "sweeps"))
    assert time.monotonic() - start < 30
    assert result.code == 2, result.err
    fit_line, = [r.getMessage() for r in caplog.records if r.name == "hiertune"]
    asked = "1000 CPUs" if "cpus" in setting else "1 CPU and 4 GPUs"
    assert fit_line.startswith(f"resources: the space asks {asked} per trial; this machine has 2 CPUs and no GPU")
    error, = result.err_lines
    assert "missing" in error and not (tmp_path / "sweeps").exists()


def test_budget_durations_read_with_a_unit_and_reach_the_space(tmp_path):
    assert [parse_duration(v, "x") for v in ("15m", "1h30m", "90s", "2.5h", None)] == [900, 5400, 90, 9000, None]
    for bad in ("30", "15 minutes", "0m", "", "m"):
        with pytest.raises(UserError, match="x: "):
            parse_duration(bad, "x")
    assert [duration(s) for s in (45, 125, 900, 7500)] == ["45s", "2m05s", "15m00s", "2h05m"]
    space = load_space(SPACES / "dualhead.yaml")
    assert space.budget is None and space.with_overrides({"budget": "15m"}).budget == 900
    path = tmp_path / "s.yaml"
    path.write_text((SPACES / "smoke.yaml").read_text() + "budget: 2h\n")
    assert load_space(path).budget == 7200 and load_space(path).with_overrides({"lr": 1e-3}).budget == 7200
    path.write_text((SPACES / "smoke.yaml").read_text() + "budget: 120\n")
    with pytest.raises(UserError, match=r"s.yaml: budget: 120 is not a duration"):
        load_space(path)


def test_asha_keeps_a_third_at_each_rung():
    space = load_space(SPACES / "dualhead.yaml")  # grace 3, reduction 3, max_t 15
    assert cost.expected_epochs(space, 15) == pytest.approx(3 + (9 - 3) / 3 + (15 - 9) / 9)
    assert cost.first_rung(space, 15) == 3
    fifo = space.with_overrides({"scheduler.type": "fifo"})
    assert cost.expected_epochs(fifo, 15) == 15 and cost.first_rung(fifo, 15) == 15
    assert cost.full_share(space, 15) == 3 / 15 and cost.full_share(fifo, 15) == 1 / 15  # rungs 3, 9, 15


def _costs(kinds, seconds: dict[str, float]) -> dict:
    return {k.identity: EpochCost(seconds[k.cfg.finetune], 0.0, 0.0, k.cached) for k in kinds}


def test_a_budget_leaves_out_the_choices_it_cannot_afford_and_names_the_cheap_route():
    space = load_space(SPACES / "dualhead.yaml").with_overrides({"budget": "15m"})
    kinds = cost.space_kinds(space)
    assert len(kinds) == 5 and sum(k.weight for k in kinds) == pytest.approx(1.0)  # the 5 fine-tuning strategies
    assert [k.cached for k in kinds] == [k.cfg.finetune == "linear" for k in kinds]  # frozen: cached features
    per_epoch = {"full": 600, "partial": 400, "gradual": 200, "bn": 300, "linear": 15}
    result = cost.plan(space, kinds, _costs(kinds, per_epoch), parallel=1)
    text = "\n".join(result.lines)
    assert "finetune=full" in text and "~10m00s/epoch" in text and "(cached features)" in text and "~15s/epoch" in text
    assert "whole sweep: ~15h15m (32 trials x ~5.7 epochs under ASHA, 1 at a time); budget 15m00s" in text
    assert "cheap route: --set finetune=linear (frozen features, computed once) ~15s/epoch" in text
    assert result.left_out == ("budget 15m00s: left out finetune=full, partial, gradual, bn (one trial would not "
                               "reach the first ASHA rung, 3 epoch(s), in a quarter of the budget here)")
    assert "earlier sweep" not in text
    # Figures an earlier sweep measured say when, and how to measure them again.
    kept = cost.plan(space, kinds, _costs(kinds, per_epoch), parallel=1, measured="2026-12-05T08:09:46Z")
    assert kept.lines[0] == ("cost here, one epoch measured on a few batches, by an earlier sweep at 2026-12-05T08:09:46Z "
                             "(1 trial(s) at a time, 4 CPU(s) each; --remeasure measures again):")
    left = result.space
    assert left.fixed["finetune"] == "linear" and "finetune" not in {p.name for p in left.sampled}
    assert {p.name for p in left.sampled} >= {"lr", "kl_alpha", "corrupt_p"} and left.budget == 900
    # What was left out, as sweep.json records it for --resume, gives the same space again.
    assert result.drops == {"finetune": ["full", "partial", "gradual", "bn"]}
    assert cost.without(space, result.drops) == left

    # A budget that affords two strategies keeps them as choices, and the condition on the others goes
    roomy = space.with_overrides({"budget": "50m"})
    kept = cost.plan(roomy, kinds, _costs(kinds, {**per_epoch, "partial": 1200, "gradual": 1200, "bn": 200}), 1)
    finetune = next(p for p in kept.space.sampled if p.name == "finetune")
    assert finetune.choices == ("linear", "bn") and "unfreeze_depth" not in {p.name for p in kept.space.params}
    assert cost.without(roomy, kept.drops) == kept.space

    # Nothing affordable: refused in one line naming the cheap route
    tight = space.with_overrides({"budget": "1m"})
    refused = cost.plan(tight, kinds, _costs(kinds, per_epoch), 1)
    assert refused.refusal.startswith("budget 1m00s: no kind of trial this space samples reaches its first ASHA rung")
    assert refused.refusal.endswith("take the cheap route: --set finetune=linear")


def test_a_resume_takes_the_recorded_settings_and_refuses_others(tmp_path, small_data):
    space = space_file(tmp_path, small_data, samples=2, max_t=2)
    data = str(small_data.resolve())
    meta = SweepMeta(str(space.resolve()), "cnn", False, overrides={"data": data, "budget": "10m", "epochs": 1},
                     cache_dir=str(tmp_path / "cache"))
    resumed, recorded = resumed_space(meta, "s", None, {}, None)
    assert resumed.budget == 600 and resumed.fixed["epochs"] == 1 and recorded == meta.overrides
    assert resumed_space(meta, "s", str(space), {"data": data, "budget": "10m"}, str(tmp_path / "cache"))[0] == resumed
    refusals = {"--data /elsewhere: sweep 's' was started with --data " + data: ({"data": "/elsewhere"}, None, None),
                "--budget 5m: sweep 's' was started with --budget 10m": ({"budget": "5m"}, None, None),
                "--set lr=0.1: sweep 's' was started with no --set lr": ({"lr": 0.1}, None, None),
                "sweep 's' was started with " + str(space.resolve()): ({}, str(tmp_path / "other.yaml"), None),
                "--cache-dir /c: sweep 's' was started with --cache-dir": ({}, None, "/c")}
    for message, (given, space_arg, cache) in refusals.items():
        with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
            resumed_space(meta, "s", space_arg, given, cache)


def test_a_resume_refuses_data_whose_pixels_changed(small_data, tmp_path):
    from hiertune.data.bundle import load_bundle
    from hiertune.data.splits import SplitConfig

    bundle = load_bundle(str(small_data), None, 64, SplitConfig(), tmp_path / "cache")
    recorded = data_inputs(bundle)
    check_same_data(recorded, bundle, "s")
    check_same_data(None, bundle, "s")  # a sweep from before the data was recorded
    bundle.data.train.images = np.ascontiguousarray(bundle.data.train.images[::-1])
    with pytest.raises(UserError, match="its labeled images changed since it started"):
        check_same_data(recorded, bundle, "s")
    with pytest.raises(UserError, match="was started on val 999"):
        check_same_data({**recorded, "val": 999}, bundle, "s")


def test_an_epoch_is_measured_on_a_few_batches(small_data, tmp_path, one_thread):
    from hiertune.training.config import TrialConfig
    from hiertune.data.bundle import load_bundle
    from hiertune.training.features import FeatureStore
    from hiertune.training.probe import measure_epoch

    cfg = TrialConfig(family="cnn", data=str(small_data), batch_size=32, cnn_width=8, threads=1)
    bundle = load_bundle(cfg.data, None, 64, cfg.split_config(), tmp_path / "cache")
    first = measure_epoch(cfg, bundle, FeatureStore(), 1, full_share=0.2)  # the first kind: its evaluation timed
    assert not first.cached and first.train_seconds > 0 and first.eval_seconds > 0 and first.posthoc_seconds > 0
    other = measure_epoch(cfg, bundle, FeatureStore(), 1, posthoc_seconds=7.0)  # the others take it as given
    assert other.posthoc_seconds == 7.0 and other.seconds == other.train_seconds + other.eval_seconds + 7.0
