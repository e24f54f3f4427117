"""`export-best --ensemble N`: an ensemble of a sweep's trials, chosen on validation, retrained,
calibrated on its own scores, and written as one exported model.

1. The library: every trial with a checkpoint whose heads read the same frozen backbone features
   as the picked point's trial (same backbone, weights, input size, outlier mode), so each costs a
   pass of its heads over the cached validation features (hiertune.training.replay).
2. Ensemble selection on validation (hiertune.novelty.ensemble.select: Caruana's greedy selection
   with replacement, N picks, by the hypervolume of the ensemble's own post-hoc front), then the
   pick (`--pick`, knee by default) applied to that front (on the grid of the sweep's space): the ensemble's point, with its
   thresholds' seen acceptance rates.
3. Each member is retrained as a single export would retrain it; the ensemble's thresholds are
   calibrated on the ensemble's own scores of the calibration split, to its point's acceptance
   (hiertune.export.retrain.calibrate_point), never copied from a member.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import DataBundle, load_bundle
from hiertune.errors import UserError
from hiertune.export.predictor import (ENSEMBLE, MEMBERS, METRICS, SUB_MAP, SUPER_MAP, ExportedModel, Thresholds,
                                      write_json)
from hiertune.export.retrain import RetrainOutput, calibrate_point
from hiertune.models.registry import Heads
from hiertune.novelty.ensemble import Selection, combine, ensemble_grid, select
from hiertune.novelty.metrics import ACCURACIES, OBJECTIVES
from hiertune.novelty.posthoc import GROUP_KEYS, PosthocConfig
from hiertune.novelty.records import GridPoint
from hiertune.novelty.scores import score_levels
from hiertune.sweep.front import Pick
from hiertune.sweep.records import FrontPoint
from hiertune.sweep.state import TrialRecord
from hiertune.training.checkpoint import read_posthoc
from hiertune.training.features import FeatureStore
from hiertune.training.replay import replay_validation

log = logging.getLogger("hiertune")
# What must match for two trials' heads to read the same cached features and output the same classes.
SHARED = ("backbone", "pretrained", "image_size", "data", "outliers", "data_size", "outlier_mode", "split_seed",
          "val_fraction", "pseudo_novel_fraction", "shifted", "shifted_data")


@dataclass
class EnsemblePlan:
    members: list[tuple[TrialRecord, int]]  # trial, weight (times picked)
    point: FrontPoint  # the ensemble's point on its own front, under the ensemble's name
    front: list[GridPoint]  # the ensemble's own post-hoc front
    selection: Selection
    library: list[str]  # the trials it chose from


def plan_ensemble(trials: dict[str, TrialRecord], anchor: FrontPoint, pick: Pick, size: int, cache_root: Path
                  ) -> EnsemblePlan:
    """Choose the members (selection on the sweep's validation split) and the ensemble's point."""
    if size < 2:
        raise UserError(f"--ensemble must be >= 2 (picks, with replacement), got {size}")
    first = trials[anchor.trial_id]
    base = TrialConfig.from_dict(first.config, where=f"{first.name} config")
    if not base.model_config().backbone_frozen:
        raise UserError(f"--ensemble combines heads on one frozen backbone; the picked point's trial {first.name} "
                        f"trains its backbone (finetune {base.finetune})")
    library = [t for t in trials.values() if t.checkpoint and t.status != "failed" and t.config
               and _shares_features(base, TrialConfig.from_dict(t.config, where=f"{t.name} config"))]
    remote = [t.name for t in library if "://" in str(t.checkpoint)]
    if remote:
        raise UserError(f"--ensemble reads the trials' checkpoints on this machine; {remote[0]}'s is "
                        f"{library[0].checkpoint}")
    library.sort(key=lambda t: t.trial_id != first.trial_id)  # the picked trial first
    bundle = load_bundle(base.data, base.outliers, base.data_size, base.split_config(), cache_root,
                         base.shift_config())
    store = FeatureStore(cache_root)
    others = sum(1 for t in trials.values() if t.checkpoint and t.status != "failed") - len(library)
    log.info("ensemble: replaying the validation outputs of %d trial(s) sharing %s's frozen features, outlier mode "
             "(%s) and data settings%s", len(library), first.name, base.outlier_mode,
             f" ({others} other trial(s) with a checkpoint do not)" if others else "")
    replayed = [replay_validation(TrialConfig.from_dict(t.config), bundle, Path(t.checkpoint), store) for t in library]
    heads = replayed[0].heads
    # The grid the sweep evaluated (its space's), as the picked trial's checkpoint holds it.
    swept = read_posthoc(first.checkpoint)
    grid = PosthocConfig(scores=swept.scores, tau_super=tuple(swept.tau_super), tau_sub=tuple(swept.tau_sub),
                         shifted_weight=base.shifted_weight)
    chosen = select([r.batch for r in replayed], heads, size, grid)
    batch = combine([replayed[i].batch for i in chosen.members], [chosen.counts[i] for i in chosen.members])
    front = ensemble_grid(batch, heads, grid).front
    members = [(library[i], chosen.counts[i]) for i in chosen.members]
    name = "ensemble(" + ", ".join(f"{t.name}×{w}" if w > 1 else t.name for t, w in members) + ")"
    # As a front point: the members and weights stand as its parameters, so an export of another
    # ensemble is never taken for this one (hiertune.export.versions).
    point = FrontPoint(name, "+".join(t.trial_id for t, _ in members), "completed",
                       max(t.epochs for t, _ in members), {t.name: w for t, w in members}, pick.rank(front)[0])
    return EnsemblePlan(members, point, front, chosen, [t.name for t in library])


def _shares_features(a: TrialConfig, b: TrialConfig) -> bool:
    return b.model_config().backbone_frozen and all(getattr(a, k) == getattr(b, k) for k in SHARED)


def member_point(plan: EnsemblePlan, trial: TrialRecord) -> FrontPoint:
    """What a member's retraining is told: the ensemble's grid point (its score and rates), the
    member's trial and epochs."""
    return FrontPoint(trial.name, trial.trial_id, trial.status, trial.epochs, trial.params, plan.point.point)


def assemble(plan: EnsemblePlan, outputs: list[RetrainOutput], bundle: DataBundle, heads: Heads,
             calib_cfg: TrialConfig, cache_root: Path, views: tuple[str, ...] = ()) -> RetrainOutput:
    """The ensemble's directory, as the files of one export: its members' retrained directories
    under members/<i>/, its thresholds calibrated on its own scores of the calibration split
    (averaged over the test-time `views` too, which it then keeps)."""
    with tempfile.TemporaryDirectory(prefix="hiertune-ensemble-") as tmp:
        root = Path(tmp)
        dirs = []
        for i, output in enumerate(outputs, 1):
            member = root / MEMBERS / str(i)
            member.mkdir(parents=True)
            for name, data in output.files.items():
                (member / name).write_bytes(data)
            dirs.append(f"{MEMBERS}/{i}")
        for name in (SUPER_MAP, SUB_MAP):
            (root / name).write_bytes(outputs[0].files[name])
        point = plan.point.point
        entries = [{"dir": d, "weight": w, "trial": t.name, "trial_id": t.trial_id}
                   for d, (t, w) in zip(dirs, plan.members)]
        # Thresholds that accept everything until calibrated: the ensemble loads as it will be predicted.
        write_json(root / ENSEMBLE, {"members": entries, "score": point.score, "thr_super": "-inf",
                                     "thr_sub": "-inf", "views": list(views)})
        model = ExportedModel.load(root, device=calib_cfg.device, features=FeatureStore(cache_root))
        calib = bundle.for_trial(calib_cfg.outlier_count, calib_cfg.outlier_fraction)
        out = model.forward_images(calib.val_images)
        scores = score_levels(out, heads, point.score)
        thr_super, thr_sub, calibration = calibrate_point(scores, calib, heads, point, calib_cfg.shifted_weight)
        figures = point.figures()
        write_json(root / ENSEMBLE, {
            "members": entries, "score": point.score, "thr_super": thr_super, "thr_sub": thr_sub, "views": list(views),
            "rule": "the members' logits averaged with their weights; each level's threshold accepts the fraction "
                    "of seen calibration images that the ensemble's point accepted of seen validation images",
            "selection": {"picks": sum(w for _, w in plan.members), "hypervolume": plan.selection.hypervolume,
                          "best_single_hypervolume": plan.selection.single, "steps": list(plan.selection.steps),
                          "library": plan.library},
            "point": {k: figures[k] for k in ("tau_super", "tau_sub", "thr_super", "thr_sub", "accept_super",
                                              "accept_sub", "accept_shifted_super", "accept_shifted_sub")}})
        write_json(root / METRICS, {
            "validation": {k: figures[k] for k in (*ACCURACIES, *OBJECTIVES, *GROUP_KEYS)},
            "calibration": calibration.to_dict(),
            "members": [json.loads(o.files[METRICS]) for o in outputs]})
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return RetrainOutput(files, calibration, Thresholds(point.score, thr_super, thr_sub, views),
                         sum(o.seconds for o in outputs))
