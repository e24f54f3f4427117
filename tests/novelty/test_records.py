"""hiertune.novelty.records: a grid point and a score's figures, checked where they are made."""

from __future__ import annotations

import dataclasses
import math

import pytest

from hiertune.data.splits import GROUPS
from hiertune.novelty.posthoc import GROUP_KEYS
from hiertune.novelty.records import NOVEL_GROUPS, GridPoint, ScoreFigures


def test_a_point_names_each_validation_group():
    names = set(GridPoint.unmeasured("msp", 0.5, 0.5).figures())
    assert set(GROUP_KEYS) <= names and {f"{g}_acc" for g in GROUPS} <= names


@pytest.mark.parametrize(("change", "match"), [
    ({"score": ""}, "score"),
    ({"tau_super": 1.5}, "tau_super"),
    ({"seen": -0.1}, r"seen must be in \[0, 1\]"),
    ({"accept_sub": "0.5"}, "must be a number"),
    ({"thr_sub": True}, "must be a number"),
])
def test_a_point_out_of_range_is_refused(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(GridPoint.unmeasured("msp", 0.5, 0.5), **change)


def test_raw_thresholds_may_be_any_number_and_figures_round_trip():
    p = dataclasses.replace(GridPoint.unmeasured("energy", 0.2, 0.3), thr_super=-7.5, seen=0.6)
    again = GridPoint.from_figures(p.score, p.figures())
    assert again.thr_super == -7.5 and again.seen == 0.6 and math.isnan(again.unseen)
    assert GridPoint.from_figures("msp", {}).tau_super != GridPoint.from_figures("msp", {}).tau_super  # NaN


def test_score_figures_keep_an_auroc_per_novel_group_only():
    f = ScoreFigures.from_figures({"auroc_novel_sub": 0.6, "auroc_novel_super": 0.9})
    assert [f.auroc(g) for g in NOVEL_GROUPS] == [0.6, 0.9]
    with pytest.raises(ValueError, match="seen_shifted"):
        f.auroc("seen_shifted")
    with pytest.raises(ValueError, match="hypervolume"):
        ScoreFigures.from_figures({}).__class__(*["x"] + [0.0] * 8)
