"""Which folder of `export/` each chosen point goes to: an export is never silently overwritten.

A point already exported with the same settings (the same front point of the same trial, the same
calibration split, the same test images) is reused as it is: `export-best --top 2` after
`export-best` retrains only point 2. Any other point gets the next free number, so an export of
another pick, another calibration or another version of hiertune's retraining sits beside the
earlier ones, which stay what their MLflow model versions point at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from hiertune.errors import UserError
from hiertune.export.predictor import SOURCE, plain
from hiertune.export.results import ExportSummary
from hiertune.sweep.records import FrontPoint

SUMMARY = "export.json"  # what export-best reported for the folder, written before mlflow.json


@dataclass(frozen=True)
class Slot:
    rank: int  # the point's place under the pick, 1 = best
    number: int  # its folder: export/<number>
    point: FrontPoint
    reused: ExportSummary | None  # the earlier export's summary, when it is reused


def settings(point: FrontPoint, calibration_fraction: float, test_images: str | None,
             views: tuple[str, ...] = ()) -> dict:
    """What makes two exports the same: recorded in source.json."""
    return {"point": point.row(), "calibration_fraction": calibration_fraction, "test_images": test_images,
            "views": list(views)}


def assign(export_dir: Path, points: list[FrontPoint], calibration_fraction: float, test_images: str | None,
           views: tuple[str, ...] = ()) -> list[Slot]:
    found = _existing(export_dir)
    taken = [int(f.name) for f in export_dir.glob("*") if f.name.isdigit()]
    free = max(taken, default=0) + 1
    slots = []
    for rank, point in enumerate(points, start=1):
        # As source.json holds it (write_json): a NaN figure reads back as "nan", never equal to NaN.
        wanted = json.loads(json.dumps(plain(settings(point, calibration_fraction, test_images, views))))
        match = next((n for n, (source, _) in sorted(found.items()) if {k: source.get(k) for k in wanted} == wanted
                      and found[n][1] is not None), None)
        if match is not None:
            slots.append(Slot(rank, match, point, replace(found[match][1], dir=str(export_dir / str(match)),
                                                          reused=True)))
        else:
            slots.append(Slot(rank, free, point, None))
            free += 1
    return slots


def _existing(export_dir: Path) -> dict[int, tuple[dict, ExportSummary | None]]:
    """Each numbered export folder's source.json and summary (None: an export from before summaries)."""
    out = {}
    for folder in export_dir.glob("*"):
        if not folder.name.isdigit() or not (folder / SOURCE).is_file():
            continue
        try:
            source = json.loads((folder / SOURCE).read_text())
            summary = ExportSummary.from_dict(json.loads((folder / SUMMARY).read_text()), str(folder / SUMMARY)) \
                if (folder / SUMMARY).is_file() else None
        except (OSError, ValueError, UserError):
            source, summary = {}, None  # a damaged folder is never reused, and its number stays taken
        out[int(folder.name)] = (source, summary)
    return out
