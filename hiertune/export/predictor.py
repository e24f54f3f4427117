"""An exported model directory, and predictions from it on any folder of images.

The directory is everything a prediction needs, and nothing in it executes code when loaded
(safetensors, JSON, CSV):

    model.safetensors      weights
    scorers.safetensors    feature-space scorers (every score but msp / energy / maxlogit / gen)
    config.json            the resolved trial config it was trained with, its head sizes and its input
                           pipeline (normalisation, input size, resampling)
    thresholds.json        score, raw thresholds, and how they were calibrated
    superclass_mapping.csv, subclass_mapping.csv   the label maps (novel last)
    metrics.json           validation (the sweep's point), calibration and retraining figures
    source.json            the sweep, trial and front point it came from
    history.json           per-epoch metrics of the retraining
    submission.csv         predictions for the competition's test images, when there were any

An ensemble (`export-best --ensemble N`) is a directory of its own: `ensemble.json` (the members'
folders and weights, the score and the raw thresholds calibrated on the ensemble's own scores),
`members/<i>/` (each an exported model directory as above), the label maps, and the same
metrics.json / source.json / submission.csv. `ExportedModel.load` reads either.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hiertune.training.config import TrialConfig
from hiertune.data.augment import AugmentConfig, BatchAugment
from hiertune.data.cache import load_images
from hiertune.data.dataset import read_mapping, write_mapping
from hiertune.data.images import FixCounts, check_submission_names, list_image_files, skipped_files
from hiertune.errors import UserError, first_line
from hiertune.fsutil import atomic_file
from hiertune.models.registry import Heads, ModelOutput, create_model
from hiertune.data.views import VIEWS, check_views
from hiertune.novelty.ensemble import average_views, logit_scores, mean_logits
from hiertune.novelty.posthoc import decide
from hiertune.novelty.registry import list_scores, score, unavailable
from hiertune.novelty.scores import FeatureScorer, LevelScores, load_scorers, score_levels
from hiertune.training import checkpoint
from hiertune.training.device import autocast, pick_device, precision
from hiertune.training.features import FeatureStore, predict_inputs
from hiertune.training.loop import forward_all

MODEL, SCORERS, CONFIG, THRESHOLDS = "model.safetensors", "scorers.safetensors", "config.json", "thresholds.json"
ENSEMBLE, MEMBERS = "ensemble.json", "members"
SUPER_MAP, SUB_MAP = "superclass_mapping.csv", "subclass_mapping.csv"
METRICS, SOURCE, HISTORY, SUBMISSION = "metrics.json", "source.json", "history.json", "submission.csv"
REQUIRED = (MODEL, CONFIG, THRESHOLDS, SUPER_MAP, SUB_MAP)
HEADER = ("image", "superclass_index", "subclass_index")
log = logging.getLogger("hiertune")


@dataclass(frozen=True)
class Thresholds:
    score: str
    thr_super: float  # raw: a level is accepted when its score >= its threshold
    thr_sub: float
    # Test-time views (hiertune.data.views) the outputs are averaged over beside the images: the
    # thresholds were calibrated on those averaged scores, so they travel together.
    views: tuple[str, ...] = ()


@dataclass
class Predictions:
    names: list[str]
    superclass: np.ndarray
    subclass: np.ndarray
    scores: LevelScores
    super_probs: np.ndarray  # softmax of the superclass head (a trailing novel column when trained with one)
    sub_probs: np.ndarray
    fixes: FixCounts

    def write_csv(self, path: str | Path, with_scores: bool = False) -> None:
        """Atomically; rows in the given (numeric file name) order."""
        head = list(HEADER)
        columns = [self.names, self.superclass.tolist(), self.subclass.tolist()]
        if with_scores:
            head += ["novelty_score_super", "novelty_score_sub"]
            head += [f"p_super_{i}" for i in range(self.super_probs.shape[1])]
            head += [f"p_sub_{i}" for i in range(self.sub_probs.shape[1])]
            columns += [self.scores.super_score.tolist(), self.scores.sub_score.tolist(),
                        *self.super_probs.T.astype(float).round(6).tolist(), *self.sub_probs.T.astype(float).round(6).tolist()]
        with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(head)
            writer.writerows(zip(*columns))

    def novel_superclass(self, heads: Heads) -> int:
        return int((self.superclass == heads.n_super).sum())

    def novel_subclass(self, heads: Heads) -> int:
        return int((self.subclass == heads.n_sub).sum())


@dataclass(frozen=True)
class PredictResult:
    """What `hiertune predict` wrote."""

    output: str
    rows: int
    model_dir: str
    novel_superclass: int  # rows predicted a novel superclass
    novel_subclass: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def render(self) -> str:
        return (f"wrote {self.output}: {self.rows:,} rows ({self.novel_superclass:,} novel superclass, "
                f"{self.novel_subclass:,} novel subclass)")


class ExportedModel:
    """A loaded model directory: `predict_folder` / `predict_images` give the submission's indices."""

    def __init__(self, root: Path, cfg: TrialConfig, heads: Heads, thresholds: Thresholds,
                 model: torch.nn.Module, scorers: dict[str, FeatureScorer] | None, superclasses: list[str],
                 subclasses: list[str], device: torch.device, pipeline: AugmentConfig,
                 features: FeatureStore | None = None):
        self.root, self.cfg, self.heads, self.thresholds = root, cfg, heads, thresholds
        self.model, self.scorers, self.device = model, scorers, device
        self.superclasses, self.subclasses = superclasses, subclasses
        self.augment = BatchAugment(pipeline, device)
        self.features = features

    @classmethod
    def load(cls, root: str | Path, device: str = "auto", threads: int | None = None,
             features: FeatureStore | None = None) -> "ExportedModel":
        """`features`: where a model with a frozen backbone reads and caches its backbone's
        features of the images it predicts (the sweep's cache: a test set is computed once)."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise UserError(f"{root}: not a folder (an exported model is a directory)")
        if not root.is_dir():
            raise UserError(f"{root}: no such model directory")
        if (root / ENSEMBLE).is_file():
            return EnsembleModel.load(root, device, threads, features)
        for name in REQUIRED:
            if (root / name).exists() and not (root / name).is_file():
                raise UserError(f"{root / name}: not a file")
        missing = [name for name in REQUIRED if not (root / name).is_file()]
        if missing:
            raise UserError(f"{root}: not an exported model (missing {', '.join(missing)})")
        if threads:
            torch.set_num_threads(threads)
        cfg, heads, pipeline = _config(root / CONFIG, _read(root / CONFIG, lambda path: json.loads(path.read_text())))
        thresholds = _thresholds(root / THRESHOLDS, _read(root / THRESHOLDS, lambda path: json.loads(path.read_text())))
        if (root / SOURCE).is_file():
            _check_source(root / SOURCE, _read(root / SOURCE, lambda path: json.loads(path.read_text())), thresholds)
        superclasses, subclasses = read_mapping(root / SUPER_MAP), read_mapping(root / SUB_MAP)
        if (len(superclasses), len(subclasses)) != (heads.n_super, heads.n_sub):
            raise UserError(f"{root}: the label maps have {len(superclasses)}/{len(subclasses)} seen classes but "
                            f"the model {heads.n_super}/{heads.n_sub}")
        run_on = pick_device(device)
        # Weights come from the directory: never from the hub or the file the trial started from.
        model = create_model(replace(cfg.model_config(), pretrained=False), heads)
        weights = _read(root / MODEL, lambda path: load_file(str(path)))
        _check_finite(root / MODEL, weights)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:  # the file is whole; it holds another model than config.json names
            raise UserError(f"{root / MODEL}: these weights are not a {cfg.family} model with backbone "
                            f"{cfg.backbone} and {heads.n_super}/{heads.n_sub} classes, which {CONFIG} describes "
                            f"({first_line(' '.join(str(exc).split()), 200)})") from None
        scorers = None
        if (root / SCORERS).is_file():
            _check_finite(root / SCORERS, _read(root / SCORERS, lambda path: load_file(str(path))))
            scorers = _read(root / SCORERS, load_scorers)
        if unavailable(thresholds.score, scorers):
            raise UserError(f"{root}: score {thresholds.score!r} needs {SCORERS} with its statistics, "
                            f"which is missing or incomplete")
        loaded = cls(root, cfg, heads, thresholds, model.to(run_on).eval(), scorers, superclasses, subclasses,
                     run_on, pipeline, features)
        if scorers is not None:  # statistics of another model fail only when they meet its features
            try:
                loaded._outputs(np.zeros((1, cfg.data_size, cfg.data_size, 3), dtype=np.uint8), cached=False)
            except (RuntimeError, IndexError, ValueError) as exc:
                raise UserError(f"{root / SCORERS}: these statistics do not fit the model in {MODEL} "
                                f"({first_line(' '.join(str(exc).split()), 200)})") from None
        return loaded

    def _outputs(self, images: np.ndarray, progress: str | None = None, cached: bool = True):
        """Both heads' outputs and the novelty scores."""
        out = self.forward_images(images, progress, cached)
        return out, score_levels(out, self.heads, self.thresholds.score, self.scorers)

    def forward_images(self, images: np.ndarray, progress: str | None = None, cached: bool = True) -> ModelOutput:
        """Both heads' outputs, averaged over the images and the thresholds' test-time views."""
        outs = [self._forward(VIEWS[v](images) if v else images, progress, cached)
                for v in (None, *self.thresholds.views)]
        return average_views(outs) if len(outs) > 1 else outs[0]

    def _forward(self, images: np.ndarray, progress: str | None, cached: bool) -> ModelOutput:
        """Both heads' outputs of the images as given; a frozen backbone's features are read from
        (and kept in) the feature cache when `cached`, so a test set runs through the backbone once."""
        amp = autocast(self.device, self.cfg.amp)
        inputs = predict_inputs(self.model, images, self.augment, self.cfg.image_size, self.device, amp,
                                str(precision(self.device, self.cfg.amp)), self.features if cached else None,
                                "images to predict")
        return forward_all(self.model, inputs, self.device, amp, progress=progress)

    def level_scores(self, images: np.ndarray, progress: str | None = None, names: list[str] | None = None
                     ) -> tuple[LevelScores, np.ndarray, np.ndarray]:
        """Hierarchical argmaxes and novelty scores of uint8 NHWC images, and both heads' softmax.
        Outputs that are not numbers (damaged weights or statistics) are refused, not predicted."""
        out, scores = self._outputs(images, progress)
        finite = torch.isfinite(out.super_logits).all(1) & torch.isfinite(out.sub_logits).all(1)
        bad = np.flatnonzero(~finite.numpy()
                             | np.isnan(scores.super_score.numpy()) | np.isnan(scores.sub_score.numpy()))
        if len(bad):
            first = names[bad[0]] if names is not None else f"image {bad[0] + 1}"
            raise UserError(f"{self.root}: the model's outputs are not finite for {len(bad)} of {len(images)} "
                            f"images (first: {first}); its weights or input pipeline are damaged")
        return scores, out.super_logits.softmax(1).numpy(), out.sub_logits.softmax(1).numpy()

    def predict_images(self, names: list[str], images: np.ndarray, fixes: FixCounts | None = None,
                       progress: str | None = None) -> Predictions:
        scores, p_super, p_sub = self.level_scores(images, progress, names)
        sup, sub = decide(scores, self.heads, self.thresholds.thr_super, self.thresholds.thr_sub)
        return Predictions(names, sup.numpy(), sub.numpy(), scores, p_super, p_sub, fixes or FixCounts())

    def predict_folder(self, folder: str | Path, cache_root: Path, progress: bool = True) -> Predictions:
        """Every image directly in `folder` (validated as training images are), numerically ordered."""
        names, images, fixes = read_folder(Path(folder), self.cfg.data_size, cache_root)
        return self.predict_images(names, images, fixes, progress="predicting" if progress else None)


class EnsembleModel(ExportedModel):
    """An ensemble directory loaded: its members' logits averaged with their weights
    (hiertune.novelty.ensemble.combine), scored and thresholded as one model's."""

    def __init__(self, root: Path, members: list[ExportedModel], weights: list[float], thresholds: Thresholds):
        first = members[0]
        super().__init__(root, first.cfg, first.heads, thresholds, first.model, None, first.superclasses,
                         first.subclasses, first.device, first.augment.config, first.features)
        self.members, self.weights = members, weights

    @classmethod
    def load(cls, root: Path, device: str = "auto", threads: int | None = None,
             features: FeatureStore | None = None) -> "EnsembleModel":
        raw = _read(root / ENSEMBLE, lambda path: json.loads(path.read_text()))
        members = raw.get("members") if isinstance(raw, dict) else None
        if not isinstance(members, list) or not members or not all(
                isinstance(m, dict) and isinstance(m.get("dir"), str) and m["dir"].startswith(f"{MEMBERS}/")
                and m["dir"][len(MEMBERS) + 1:].isdigit() and isinstance(m.get("weight"), (int, float))
                and not isinstance(m["weight"], bool) and m["weight"] > 0 for m in members):
            raise UserError(f"{root / ENSEMBLE}: not an ensemble (needs members: a list of {{dir: {MEMBERS}/<n>, "
                            f"weight > 0}})")
        thresholds = _thresholds(root / ENSEMBLE, raw)
        if thresholds.score not in logit_scores():
            raise UserError(f"{root / ENSEMBLE}: an ensemble scores with {', '.join(logit_scores())}, not "
                            f"{thresholds.score!r}")
        loaded = [ExportedModel.load(root / m["dir"], device, threads, features) for m in members]
        for m, model in zip(members, loaded):
            if (model.heads, model.subclasses, model.superclasses) != (loaded[0].heads, loaded[0].subclasses,
                                                                      loaded[0].superclasses):
                raise UserError(f"{root / m['dir']}: its classes differ from {members[0]['dir']}'s: not one ensemble")
        return cls(root, loaded, [float(m["weight"]) for m in members], thresholds)

    def _forward(self, images: np.ndarray, progress: str | None, cached: bool) -> ModelOutput:
        # The ensemble's views apply (in forward_images), not the members' own.
        outs = [m._forward(images, progress, cached) for m in self.members]
        return ModelOutput(mean_logits([o.super_logits for o in outs], self.weights),
                           mean_logits([o.sub_logits for o in outs], self.weights),
                           outs[0].super_features, outs[0].sub_features)


def write_config(root: Path, cfg: TrialConfig, heads: Heads) -> None:
    """config.json as `ExportedModel.load` reads it; the input pipeline is written out so that
    predict applies what training applied even under another timm version."""
    write_json(root / CONFIG, {
        "trial": cfg.to_dict(),
        "heads": {"n_super": heads.n_super, "n_sub": heads.n_sub, "sub_to_super": list(heads.sub_to_super),
                  "novel_logit": heads.novel_logit},
        "input": cfg.augment_config().pipeline()})


def _config(path: Path, raw) -> tuple[TrialConfig, Heads, AugmentConfig]:
    """config.json checked whole: a trial config TrialConfig accepts, heads that fit it, and the
    input pipeline the model was trained with."""
    if not isinstance(raw, dict) or not isinstance(raw.get("trial"), dict) or not isinstance(raw.get("heads"), dict):
        raise UserError(f"{path}: not an exported model's config (needs 'trial' and 'heads' mappings)")
    cfg = TrialConfig.from_dict(raw["trial"], where=str(path))
    h = raw["heads"]
    counts = [h.get("n_super"), h.get("n_sub")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts):
        raise UserError(f"{path}: not an exported model's config (heads.n_super/n_sub must be positive integers, "
                        f"got {counts})")
    links = h.get("sub_to_super")
    if not isinstance(links, list) or len(links) != h["n_sub"] or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < h["n_super"] for k in links):
        raise UserError(f"{path}: not an exported model's config (heads.sub_to_super must list a superclass "
                        f"in 0-{h['n_super'] - 1} for each of {h['n_sub']} subclasses)")
    if not isinstance(h.get("novel_logit"), bool):
        raise UserError(f"{path}: not an exported model's config (heads.novel_logit must be true or false)")
    try:
        # The input pipeline the model was trained with, as written: not re-derived from this timm.
        pipeline = AugmentConfig.none(**raw["input"])
    except (KeyError, TypeError, UserError) as exc:
        raise UserError(f"{path}: no usable input pipeline ({type(exc).__name__}: {exc})") from None
    if pipeline.size != cfg.image_size:
        raise UserError(f"{path}: input.size {pipeline.size} does not match trial.image_size {cfg.image_size}, "
                        "the size the model was trained at")
    return cfg, Heads(h["n_super"], h["n_sub"], tuple(links), h["novel_logit"]), pipeline


def _thresholds(path: Path, raw) -> Thresholds:
    """A known score, and thresholds that are numbers: -inf accepts every image (what calibration
    writes when the sweep's point accepted all), NaN or +inf would silently call all novel."""
    if not isinstance(raw, dict) or not {"score", "thr_super", "thr_sub"} <= raw.keys():
        raise UserError(f"{path}: not an exported model's thresholds (needs score, thr_super, thr_sub)")
    if raw["score"] not in list_scores():
        raise UserError(f"{path}: unknown novelty score {raw['score']!r} (known: {', '.join(list_scores())})")
    values = []
    for key in ("thr_super", "thr_sub"):
        try:
            value = float(raw[key]) if not isinstance(raw[key], bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value) or value == math.inf:
            raise UserError(f"{path}: {key} must be a number or -inf, got {raw[key]!r}")
        low, high = score(raw["score"]).bounds or (-math.inf, math.inf)
        if value != -math.inf and not low <= value <= high:
            raise UserError(f"{path}: {key} {value:g} is outside what score {raw['score']!r} can take "
                            f"([{low:g}, {high:g}]): thresholds of another score?")
        values.append(value)
    return Thresholds(raw["score"], *values, check_views(raw.get("views", []), str(path)))


def _check_source(path: Path, raw, thresholds: Thresholds) -> None:
    """source.json names the front point the thresholds were calibrated for: its score must be theirs."""
    point = raw.get("point") if isinstance(raw, dict) else None
    score = point.get("score") if isinstance(point, dict) else None
    if score is not None and score != thresholds.score:
        raise UserError(f"{path}: the exported point's score is {score!r} but {THRESHOLDS} holds thresholds "
                        f"for {thresholds.score!r}")


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A NaN or infinite weight makes every output NaN, and every image "novel": refused here."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{path}: tensor {name!r} holds NaN or infinite values")


def _read(path: Path, load):
    """`load(path)`, any damage to the file reported as one line naming it."""
    try:
        return load(path)
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as exc:
        raise UserError(f"{path}: unreadable or truncated ({first_line(exc)})") from None


def read_folder(folder: Path, image_size: int, cache_root: Path) -> tuple[list[str], np.ndarray, FixCounts]:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: not a folder of images")
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found")
    names = list_image_files(folder)
    if not names:
        raise UserError(f"{folder}: folder has no images")
    check_submission_names(folder, names)
    if (warning := skipped_files(folder)):
        log.warning(warning)
    images, report = load_images(folder, names, image_size, cache_root, desc=f"decoding {folder.name}")
    return names, images, report.fixes


def calibrate(scores: np.ndarray, accept: float) -> float:
    """The raw threshold that accepts the fraction `accept` of these (seen calibration) scores.

    A sweep threshold that accepted every seen validation image carries over as -inf, accepting
    everything, rather than the calibration minimum, which would reject new images below it."""
    if not math.isfinite(accept) or accept >= 1.0:
        return -math.inf
    return float(np.quantile(np.asarray(scores, dtype=float), 1.0 - accept, method="lower"))


def write_model_dir(out: Path, trained: Path, cfg: TrialConfig, heads: Heads, superclasses, subclasses,
                    score: str, views: tuple[str, ...] = ()) -> None:
    """A model directory from a trial's last checkpoint `trained`: its weights, scorers and history,
    the label maps, the config, and thresholds that accept everything until `write_thresholds`."""
    out.mkdir()
    shutil.copyfile(trained / checkpoint.MODEL, out / MODEL)
    shutil.copyfile(trained / checkpoint.HISTORY, out / HISTORY)
    if (trained / checkpoint.SCORERS).is_file():
        shutil.copyfile(trained / checkpoint.SCORERS, out / SCORERS)
    write_mapping(out / SUPER_MAP, superclasses)
    write_mapping(out / SUB_MAP, subclasses)
    write_config(out, cfg, heads)
    write_thresholds(out, Thresholds(score, -math.inf, -math.inf, views))


def write_thresholds(out: Path, thresholds: Thresholds, how: dict | None = None) -> None:
    """thresholds.json: the raw thresholds `load` reads, and (`how`) how they were calibrated."""
    write_json(out / THRESHOLDS, {"score": thresholds.score, "thr_super": thresholds.thr_super,
                                  "thr_sub": thresholds.thr_sub, "views": list(thresholds.views), **(how or {})})


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(plain(obj), indent=1))


def plain(obj):
    """Strict JSON has no NaN or infinity: those become "nan" / "inf" / "-inf", which float() reads."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def calibrate_both(seen: np.ndarray, accept_seen: float, shifted: np.ndarray, accept_shifted: float,
                   weight: float) -> float:
    """One level's raw threshold that matches the sweep's acceptance of both seen groups: the
    attained score minimising (1 - w)·|seen miss| + w·|shifted miss|. With no shifted images or
    target, or w = 0, it is `calibrate` on the in-source seen scores."""
    seen, shifted = np.asarray(seen, dtype=float), np.asarray(shifted, dtype=float)
    if weight == 0 or len(shifted) == 0 or not math.isfinite(accept_shifted) or len(seen) == 0:
        return calibrate(seen, accept_seen)
    candidates = np.unique(np.concatenate([seen, shifted, [-math.inf]]))

    def accepted(scores: np.ndarray) -> np.ndarray:  # fraction >= each candidate
        return 1 - np.searchsorted(np.sort(scores), candidates, side="left") / len(scores)

    miss = ((1 - weight) * np.abs(accepted(seen) - min(accept_seen, 1.0))
            + weight * np.abs(accepted(shifted) - min(accept_shifted, 1.0)))
    return float(candidates[np.argmin(miss)])
