"""What the sweep decides before its first trial: which frozen features it computes once for
every trial, from the same answer the trials and the cost plan read (ModelConfig.backbone_frozen)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hiertune.sweep import cost
from hiertune.sweep.run import shared_frozen_config
from hiertune.sweep.space import parse_space


def space(family: str = "dualhead", fixed: dict | None = None, search: dict | None = None):
    raw = {"family": family, "fixed": {"backbone": "resnet10t", "epochs": 2, **(fixed or {})},
           "search": search or {}}
    return parse_space(yaml.safe_load(yaml.safe_dump(raw)), Path("space.yaml"))


@pytest.mark.parametrize("fixed, search, shared", [
    ({"finetune": "linear"}, {}, True),
    ({"finetune": "partial", "unfreeze_depth": 0}, {}, True),  # no stage unfrozen: frozen, as the trials see it
    ({"finetune": "partial", "unfreeze_depth": 1}, {}, False),
    ({"finetune": "gradual", "unfreeze_depth": 0}, {}, False),  # grows a stage from epoch 1 on
    ({"finetune": "partial"}, {"unfreeze_depth": {"type": "int", "low": 0, "high": 3}}, True),
    ({"finetune": "partial"}, {"unfreeze_depth": {"type": "categorical", "choices": [1, 2]}}, False),
    ({}, {"finetune": {"type": "categorical", "choices": ["full", "partial"]},
          "unfreeze_depth": {"type": "int", "low": 0, "high": 2}}, True),
    ({"finetune": "linear", "feature_views": 0}, {}, False),  # no cached features asked for
])
def test_the_sweep_shares_features_whenever_a_trial_can_freeze_its_backbone(fixed, search, shared):
    s = space(fixed=fixed, search=search)
    frozen = shared_frozen_config(s)
    assert (frozen is not None) == shared
    if frozen is not None:
        assert frozen.model_config().backbone_frozen


def test_an_always_frozen_family_shares_them_whatever_finetune_says():
    assert shared_frozen_config(space("layover", {"finetune": "full", "layover_hidden": 8})) is not None
    assert shared_frozen_config(space("cnn", {"cnn_width": 4})) is None  # no backbone


@pytest.mark.parametrize("fixed", [{"finetune": "partial", "unfreeze_depth": 0}, {"finetune": "partial"},
                                   {"finetune": "linear"}, {"finetune": "full"}])
def test_the_cost_plan_calls_frozen_what_the_model_does(fixed):
    (kind,) = cost.space_kinds(space(fixed=fixed))
    frozen = kind.cfg.model_config().backbone_frozen
    assert kind.cached == frozen and ("(cached features)" in kind.label()) == frozen


def test_a_new_sqlite_store_opens_in_a_thread_and_an_unwritable_one_is_refused_at_once(tmp_path):
    """A new store's tables (MLflow's migrations, seconds) are made while Ray starts; a folder that
    cannot hold the store is still refused before anything starts, in this thread."""
    from hiertune.errors import UserError
    from hiertune.sweep import run
    from hiertune.sweep.place import SweepPlace

    place = SweepPlace.resolve("s", str(tmp_path / "sweeps"), None)
    assert run._new_sqlite(place)
    opening = run._open_recorder(place, new_store=True)
    recorder = opening.result(timeout=120)
    assert recorder.client.get_experiment_by_name("s") is not None and (tmp_path / "sweeps" / "mlflow.db").is_file()
    assert not run._new_sqlite(place)
    # The store now exists: opened here, as before.
    assert run._open_recorder(place, new_store=False).result().experiment_id == recorder.experiment_id

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(UserError, match="MLflow store .*is not a folder"):
        run._open_recorder(SweepPlace.resolve("s", str(blocked / "sweeps"), None), new_store=True)


def test_an_epochs_cost_is_kept_for_the_next_sweep_and_measured_again_when_asked(tiny_data, cache_root, monkeypatch):
    """The cost plan's figures: measured once on this machine, read by the next sweep of the same
    kinds and data (which says when they were measured), and measured again with --remeasure."""
    from hiertune.data.bundle import load_bundle
    from hiertune.training.features import FeatureStore

    s = space("cnn", {"cnn_width": 4, "data": str(tiny_data), "batch_size": 4})
    base = s.trial_config()
    bundle = load_bundle(base.data, None, base.data_size, base.split_config(), cache_root, base.shift_config())
    store, kinds = FeatureStore(cache_root), cost.space_kinds(s)
    measured = []
    real = cost._measure_all
    monkeypatch.setattr(cost, "_measure_all", lambda *args: measured.append(1) or real(*args))

    def plan(fresh: bool = False):
        return cost.measure(kinds, None, bundle, store, 1, 0, True, data={"labeled": "d1"}, fresh=fresh)

    first, when = plan()
    assert len(measured) == 1 and when is None
    again, when = plan()
    assert len(measured) == 1 and when is not None and again == first
    _, when = plan(fresh=True)
    assert len(measured) == 2 and when is None
    _, when = plan()
    assert len(measured) == 2 and when is not None
