"""hiertune.export.results: an export's summary, read back from export.json to be reused."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from hiertune.errors import UserError
from hiertune.export.results import Calibration, ExportResult, ExportSummary, LoggedModel

CALIBRATION = Calibration(images=40, target_accept_super=0.9, target_accept_sub=0.8, accept_super=0.875,
                          accept_sub=0.8, shifted_images=8, target_accept_shifted_super=0.7,
                          target_accept_shifted_sub=0.6, accept_shifted_super=0.75, accept_shifted_sub=0.5,
                          seen_only_accept_super=0.9, seen_only_accept_shifted_super=0.5, seen_only_accept_sub=0.8,
                          seen_only_accept_shifted_sub=0.4, copied_accept_super=math.nan,
                          copied_accept_sub=math.nan, seen_super_acc=0.7, seen_sub_acc=0.6)
SUMMARY = ExportSummary(2, "/s/export/2", "trial-03", "energy", 12.5, CALIBRATION, 0.8, 0.7,
                        LoggedModel("sqlite:///m.db", "r1", "models:/m/1", "hiertune-s", "1"), "/s/export/2/submission.csv",
                        120, {"seen_super_acc": 0.9, "seen_sub_acc": 0.8, "unseen_super_acc": 0.7, "unseen_sub_acc": 0.6})


def test_a_summary_reads_back_from_its_json_as_it_was():
    again = ExportSummary.from_dict(json.loads(json.dumps(SUMMARY.to_dict())), "export.json")
    assert json.dumps(again.to_dict()) == json.dumps(SUMMARY.to_dict())  # NaN-safe equality
    reused = dataclasses.replace(again, reused=True)
    assert reused.to_dict()["reused"] is True and "already exported: reused" in reused.render()


def test_the_console_says_what_was_calibrated_and_where_the_model_is():
    text = ExportResult("s", "knee", 12.5, [SUMMARY]).render()
    assert text.startswith("export-best s (knee): 1 model(s), retrained in 12s wall")
    assert "seen acceptance super 87.5% (target 90.0%), sub 80.0% (target 80.0%) on 40 images" in text
    assert "submission: /s/export/2/submission.csv (120 rows)" in text and "hiertune-s version 1" in text


def test_an_older_calibration_reads_with_nan_for_what_it_did_not_record():
    older = {k: v for k, v in CALIBRATION.to_dict().items() if not k.startswith(("copied", "seen_only"))}
    assert math.isnan(Calibration.from_dict(older).seen_only_accept_sub)


def test_a_damaged_summary_or_an_impossible_rate_is_refused():
    broken = {**SUMMARY.to_dict(), "mlflow": {"run_id": "r1"}}
    with pytest.raises(UserError, match="export.json: not an export summary"):
        ExportSummary.from_dict(broken, "export.json")
    with pytest.raises(ValueError, match="accept_sub"):
        dataclasses.replace(CALIBRATION, accept_sub=1.5)
    with pytest.raises(ValueError, match="images"):
        dataclasses.replace(CALIBRATION, images=0)
