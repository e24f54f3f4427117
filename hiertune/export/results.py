"""What `hiertune export-best` returns: one summary per exported model (also its folder's
export.json, which a later export reads back to reuse it) and the command's result, each
printing itself for a person (`render()`) and as JSON (`to_dict()`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from hiertune.errors import UserError


@dataclass(frozen=True)
class Calibration:
    """How an exported model's thresholds were calibrated (metrics.json's `calibration`): the seen
    acceptance the sweep's point had (`target_*`), what the calibrated thresholds reach on the
    calibration split, and what matching in-source seen images alone, or copying the sweep's raw
    thresholds, would have reached."""

    images: int
    target_accept_super: float
    target_accept_sub: float
    accept_super: float
    accept_sub: float
    shifted_images: int
    target_accept_shifted_super: float
    target_accept_shifted_sub: float
    accept_shifted_super: float
    accept_shifted_sub: float
    seen_only_accept_super: float
    seen_only_accept_shifted_super: float
    seen_only_accept_sub: float
    seen_only_accept_shifted_sub: float
    copied_accept_super: float  # NaN: the point had no raw threshold (a record from before they were kept)
    copied_accept_sub: float
    seen_super_acc: float  # in-source calibration images at the calibrated thresholds
    seen_sub_acc: float

    def __post_init__(self) -> None:
        if self.images < 1 or self.shifted_images < 0:
            raise ValueError(f"a calibration needs images, got {self.images} (and {self.shifted_images} shifted)")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise ValueError(f"calibration {f.name} must be a rate in [0, 1], got {value}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        """metrics.json's or export.json's calibration; a rate an older export did not record is NaN."""
        return cls(**{f.name: (int(d[f.name]) if f.type == "int" else float(d.get(f.name, math.nan)))
                      for f in fields(cls)})


@dataclass(frozen=True)
class LoggedModel:
    """Where an export is in MLflow: its run, and its version of the registered model."""

    tracking_uri: str  # redacted
    run_id: str
    model_uri: str
    registered_model: str
    version: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "LoggedModel":
        return cls(**{f.name: str(d[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class ExportSummary:
    k: int  # its folder: export/<k>
    dir: str
    trial: str
    score: str
    retrain_seconds: float
    calibration: Calibration
    validation_seen: float  # the front point's, on the sweep's validation split
    validation_unseen: float
    mlflow: LoggedModel
    submission: str | None = None
    rows: int | None = None  # the submission's
    test: dict | None = None  # leaderboard metrics on the test images, where the data has hidden labels
    reused: bool = False  # an earlier export with the same settings (hiertune.export.versions)

    def to_dict(self) -> dict:
        out = {"k": self.k, "dir": self.dir, "trial": self.trial, "score": self.score,
               "retrain_seconds": self.retrain_seconds, "calibration": self.calibration.to_dict(),
               "validation": {"seen": self.validation_seen, "unseen": self.validation_unseen},
               "mlflow": self.mlflow.to_dict()}
        if self.submission is not None:
            out.update(submission=self.submission, rows=self.rows)
        if self.test is not None:
            out["test"] = self.test
        if self.reused:
            out["reused"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "ExportSummary":
        """An export's export.json, as written by to_dict()."""
        try:
            return cls(int(d["k"]), str(d["dir"]), str(d["trial"]), str(d["score"]), float(d["retrain_seconds"]),
                       Calibration.from_dict(d["calibration"]), float(d["validation"]["seen"]),
                       float(d["validation"]["unseen"]), LoggedModel.from_dict(d["mlflow"]), d.get("submission"),
                       d.get("rows"), d.get("test"), bool(d.get("reused")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: not an export summary ({type(exc).__name__}: {exc})") from None

    def render(self) -> str:
        c = self.calibration
        retrained = "(already exported: reused)" if self.reused else f"retrain {self.retrain_seconds:.0f}s"
        lines = [f"  {self.k}: {self.dir}  {self.trial} score={self.score}  validation seen/unseen "
                 f"{self.validation_seen:.3f}/{self.validation_unseen:.3f}  {retrained}",
                 f"     calibration: seen acceptance super {_pct(c.accept_super)} (target "
                 f"{_pct(c.target_accept_super)}), sub {_pct(c.accept_sub)} (target "
                 f"{_pct(c.target_accept_sub)}) on {c.images} images"]
        if self.submission is not None:
            lines.append(f"     submission: {self.submission} ({self.rows:,} rows)")
        if self.test is not None:
            t = self.test
            lines.append(f"     test (hidden labels): seen super/sub {t['seen_super_acc']:.3f}/{t['seen_sub_acc']:.3f}, "
                         f"unseen super/sub {t['unseen_super_acc']:.3f}/{t['unseen_sub_acc']:.3f}")
        lines.append(f"     MLflow: {self.mlflow.registered_model} version {self.mlflow.version}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ExportResult:
    name: str  # the sweep's
    pick: str
    retrain_wall_seconds: float
    exports: list[ExportSummary]

    def to_dict(self) -> dict:
        return {"name": self.name, "pick": self.pick, "retrain_wall_seconds": self.retrain_wall_seconds,
                "exports": [e.to_dict() for e in self.exports]}

    def render(self) -> str:
        return "\n".join([f"export-best {self.name} ({self.pick}): {len(self.exports)} model(s), retrained in "
                          f"{self.retrain_wall_seconds:.0f}s wall", *(e.render() for e in self.exports)])


def _pct(value) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, float) else str(value)
