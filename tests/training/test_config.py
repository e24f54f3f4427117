"""TrialConfig: the flat settings of one trial, every family's own among them, checked once."""

from __future__ import annotations

from dataclasses import fields

import pytest

from hiertune.errors import UserError
from hiertune.models.registry import family, family_settings, list_families
from hiertune.training.config import TrialConfig


@pytest.mark.parametrize("name", list_families())
def test_a_familys_settings_are_flat_fields_that_reach_its_model_config(name):
    own = family(name).settings
    values = {f.name: f.default * 2 if f.name != "layover_stage" else -1 for f in fields(own)}
    cfg = TrialConfig.from_dict({"family": name, **values})
    assert cfg.model_config().settings == own(**values)
    assert {f.name for f in fields(own)} <= set(TrialConfig.field_names())


def test_every_familys_settings_are_checked_whichever_family_trains():
    # One family reads cnn_width; a bad one is still a mistake in the config, said at once.
    with pytest.raises(UserError, match=r"^config: cnn_width must be >= 1, got 0$"):
        TrialConfig.from_dict({"family": "dualhead", "cnn_width": 0})
    assert all(any(f.name in TrialConfig.field_names() for f in fields(s)) for s in family_settings())


def test_the_kl_term_reaches_only_a_family_that_declares_it():
    assert TrialConfig(family="dualhead", kl_alpha=0.3).loss_config().kl_alpha == 0.3
    assert TrialConfig(family="twomodel", kl_alpha=0.3).loss_config().kl_alpha == 0.0


def test_unknown_keys_and_choices_are_one_line_with_the_closest():
    with pytest.raises(UserError, match=r"^config: unknown key 'cnn_widht' \(did you mean 'cnn_width'\?\)$"):
        TrialConfig.from_dict({"cnn_widht": 8})
    with pytest.raises(UserError, match=r"^config: unknown finetune 'linaer' \(did you mean 'linear'\?\)"):
        TrialConfig.from_dict({"finetune": "linaer"})
    with pytest.raises(UserError, match=r"^config: unknown novelty_score 'engery' \(did you mean 'energy'\?\)"):
        TrialConfig.from_dict({"novelty_score": "engery"})
