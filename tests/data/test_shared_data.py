"""The competition data and the Tiny ImageNet outliers in ../shared, when present (CI has them)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED

NNDL = SHARED / "data" / "nndl2025"
OUTLIERS = SHARED / "data" / "outliers" / "tinyimagenet-ood"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not NNDL.is_dir() or not OUTLIERS.is_dir(),
                                reason=f"shared data not present at {SHARED / 'data'}")]


def test_inspect_reports_the_competition_data(cli):
    result = cli("data", "inspect", str(NNDL), "--outliers", str(OUTLIERS), "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out.splitlines()[-1])
    assert summary["labeled_images"] == 5658
    assert summary["superclasses"] == 3 and summary["subclasses"] == 87
    assert summary["subclasses_without_images"] == 0
    assert summary["test_images"] == 11180
    assert summary["outliers"]["classes"] == 93 and summary["outliers"]["images"] == 9300
    assert summary["per_superclass"] == {"bird": 1665, "dog": 1874, "reptile": 2119}
    # Some Tiny ImageNet images are grayscale: converted, counted, said.
    assert summary["cache"]["outliers"]["converted"] > 0
    assert "warning: outlier images: converted" in result.err
    warm = json.loads(cli("data", "inspect", str(NNDL), "--json").out.splitlines()[-1])
    assert warm["cache"]["train"]["status"] == "warm" and warm["cache"]["train"]["decoded"] == 0
