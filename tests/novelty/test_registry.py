"""The score registry: what every score declares and does (a contract over each one), what its
needs decide (where it can be computed), and what registering checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hiertune.errors import UserError
from hiertune.novelty import registry
from hiertune.novelty.posthoc import PosthocConfig, posthoc_grid
from hiertune.novelty.registry import NEEDS, VIM_SKIPPED, list_scores, needs_of, register_score, score, unavailable
from hiertune.novelty.scores import all_level_scores
from tests.novelty.test_fast_eval import HEADS, batch, scorers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list_scores())
class TestEveryScore:
    def test_declares_known_needs(self, name):
        spec = score(name)
        assert spec.needs and spec.needs <= set(NEEDS) and spec.name == name

    def test_is_finite_and_within_its_bounds(self, name):
        b, fitted = batch(300, 0, coarse=False), scorers(0)
        levels = all_level_scores(b, HEADS, (name,), fitted)[name]
        low, high = score(name).bounds or (-np.inf, np.inf)
        for values in (levels.super_score, levels.sub_score):
            assert values.shape == (300,) and values.dtype == torch.float64
            finite = values[torch.isfinite(values)]
            assert len(finite) >= 290  # fdbd is NaN only with a single class, never here
            assert ((finite >= low) & (finite <= high)).all()

    def test_is_unavailable_exactly_where_its_needs_are_missing(self, name):
        spec = score(name)
        full, no_vim = scorers(0), scorers(0, vim=False)
        headless = {level: dataclasses.replace(s, head=None) for level, s in full.items()}
        assert unavailable(name, full) is None
        assert (unavailable(name, None) is None) == spec.logits_only
        assert (unavailable(name, headless) is None) == ("head" not in spec.needs)
        assert (unavailable(name, no_vim) == VIM_SKIPPED) == ("principal_subspace" in spec.needs)

    def test_the_grid_skips_it_with_its_reason_when_unavailable(self, name):
        result = posthoc_grid(batch(120, 1, coarse=True), HEADS, PosthocConfig(scores=(name,)), None)
        if score(name).logits_only:
            assert result.scores == (name,) and not result.skipped
        else:
            assert result.scores == () and result.skipped == {name: unavailable(name, None)}


def test_needs_of_several_scores_is_their_union():
    assert needs_of(("msp",)) == {"logits"}
    assert needs_of(("msp", "knn", "vim")) == {"logits", "train_features", "head", "principal_subspace"}


def test_unknown_score_is_one_line_with_the_closest():
    with pytest.raises(UserError, match=r"^unknown novelty score 'mahalanobs' \(did you mean 'mahalanobis'\?\)"):
        score("mahalanobs")


def test_registering_checks_the_name_and_the_needs(monkeypatch):
    monkeypatch.setattr(registry, "_SCORES", dict(registry._SCORES))
    with pytest.raises(ValueError, match="registered twice"):
        register_score("msp")(lambda level: level.logits[:, 0])
    with pytest.raises(ValueError, match="unknown need 'gpu'"):
        register_score("toy", needs=("gpu",))(lambda level: level.logits[:, 0])

    @register_score("first_logit")
    def first_logit(level):
        return level.logits[:, 0]

    assert list_scores()[-1] == "first_logit" and score("first_logit").logits_only
    got = all_level_scores(batch(10, 2, coarse=False), HEADS, ("first_logit",))["first_logit"]
    assert torch.equal(got.super_score, batch(10, 2, coarse=False).super_logits[:, 0].double())
