"""hiertune.export.versions: which earlier export a new one may reuse."""

from __future__ import annotations

import json
from dataclasses import fields

from conftest import front_point
from hiertune.export import versions
from hiertune.export.predictor import SOURCE, write_json
from hiertune.export.results import Calibration, ExportSummary, LoggedModel
from hiertune.novelty.records import GridPoint


def test_an_export_is_reused_only_with_the_same_test_time_views(tmp_path):
    # A point with a figure it could not measure (NaN), written as export-best writes source.json.
    figures = {f.name: 0.5 for f in fields(GridPoint)[3:] if f.name not in ("seen", "unseen")}
    point = front_point("trial-01", 0.7, 0.7, **{**figures, "accept_shifted": float("nan")})
    folder = tmp_path / "export" / "1"
    folder.mkdir(parents=True)
    write_json(folder / SOURCE, versions.settings(point, 0.1, None, ("flip",)))
    summary = ExportSummary(1, str(folder), "trial-01", "msp", 3.0, Calibration.from_dict({"images": 9, "shifted_images": 0}),
                            0.7, 0.7, LoggedModel("sqlite:///m.db", "run", "models:/m/1", "m", "1"))
    (folder / versions.SUMMARY).write_text(json.dumps(summary.to_dict()))
    (same,) = versions.assign(tmp_path / "export", [point], 0.1, None, ("flip",))
    assert same.reused is not None and same.reused.reused and same.number == 1
    for views in ((), ("flip", "zoom")):
        (other,) = versions.assign(tmp_path / "export", [point], 0.1, None, views)
        assert other.reused is None and other.number == 2
