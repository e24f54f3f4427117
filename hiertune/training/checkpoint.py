"""The checkpoint directory a trial writes every epoch: the one module that writes and reads it.

Everything in it loads without executing code: weights and feature scorers as safetensors, the
optimizer/scheduler/RNG state as tensors and numbers (`torch.load(weights_only=True)`), the
per-epoch history as JSON, the post-hoc grid as an `.npz` without pickles. Readers that take a
URI work on a local path or an `s3://` checkpoint alike.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hiertune.errors import UserError, first_line
from hiertune.novelty.posthoc import PosthocResult
from hiertune.training.records import EpochMetrics
from hiertune.novelty.scores import FeatureScorer, save_scorers
from hiertune.storage import join, read_bytes
from hiertune.training.faults import CheckpointUnreadable
from hiertune.training.features import FROZEN_PART, weights_digest

MODEL = "model.safetensors"
STATE = "state.pt"  # optimizer, scheduler, RNGs, attempt: tensors and numbers only (weights_only=True)
HISTORY = "history.json"
POSTHOC = "posthoc.npz"  # every post-hoc grid point of the last evaluation
SCORERS = "scorers.safetensors"
# model.safetensors' metadata in a lean checkpoint: the digest of the frozen backbone left out of it.
FROZEN_DIGEST = "hiertune.frozen_backbone"


def _check_fits(saved: dict, model: dict, path: Path) -> None:
    """A readable checkpoint of another model (another family or backbone, another dataset's
    class counts) named for what does not fit, not as a damaged file."""
    shapes = [f"{k} is {list(saved[k].shape)} there, {list(model[k].shape)} in this trial's model"
              for k in model if k in saved and saved[k].shape != model[k].shape]
    missing = [k for k in model if k not in saved]
    extra = [k for k in saved if k not in model]
    if shapes or missing or extra:
        what = shapes[:2] + ([f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"] if missing else []) + (
            [f"{len(extra)} unexpected, e.g. {extra[0]}"] if extra else [])
        raise CheckpointUnreadable(f"{path}: the checkpoint does not fit this trial's model ({'; '.join(what)}): "
                                   "written for another model or dataset")


@dataclass
class TrainState:
    """What a checkpoint saves and a resume restores: the model, its optimizer and schedule, the
    random streams (the trial's two, and torch's global ones that dropout draws from), the epochs
    done and their metrics. An attempt is one run of the training loop; a restart from a
    checkpoint (a retry after a failure, a killed worker, `--resume`) is the next one, and every
    epoch records the attempt that ran it."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    order_gen: torch.Generator  # batch order and mixup partners, on the CPU
    aug_gen: torch.Generator  # augmentation, corruptions or cached views, on the device
    epoch: int = 0  # epochs done
    attempt: int = 1
    history: list[dict] = field(default_factory=list)  # every epoch's reported metrics, across attempts
    frozen_digest: str | None = None  # the frozen backbone's weights_digest, once a lean save needed it

    def save(self, path: Path, result: PosthocResult, scorers: dict[str, FeatureScorer] | None,
             lean: bool = False) -> None:
        """This state, with the last evaluation's post-hoc grid and feature scorers, into `path`.
        `lean`: a frozen backbone is named by its weights' digest instead of saved (it is the
        pretrained weights the trial was built from, most of the file): for checkpoints that
        resume a trial or replay its validation, never for one a model is written from."""
        weights, metadata = self.model.state_dict(), None
        if lean and getattr(self.model, "backbone_frozen", False):
            if self.frozen_digest is None:
                self.frozen_digest = weights_digest(self.model)
            weights = {k: v for k, v in weights.items() if not k.startswith(FROZEN_PART)}
            metadata = {FROZEN_DIGEST: self.frozen_digest}
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, path / MODEL, metadata=metadata)
        cuda = self.aug_gen.device.type == "cuda"
        torch.save({"epoch": self.epoch, "attempt": self.attempt, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "order_rng": self.order_gen.get_state(),
                    "aug_rng": self.aug_gen.get_state(), "torch_rng": torch.get_rng_state(),
                    **({"cuda_rng": torch.cuda.get_rng_state(self.aug_gen.device)} if cuda else {})}, path / STATE)
        (path / HISTORY).write_text(json.dumps(self.history))
        result.save(path / POSTHOC)
        if scorers:
            save_scorers(scorers, path / SCORERS)

    def restore(self, path: Path) -> None:
        """In place, from the checkpoint in `path`; this run is then the attempt after the one that wrote it."""
        loaders = ((MODEL, _read_model),
                   (STATE, lambda p: torch.load(p, weights_only=True, map_location="cpu")),
                   (HISTORY, lambda p: json.loads(p.read_text())))
        loaded = {name: _read(path / name, load) for name, load in loaders}
        self.frozen_digest = _load_model(self.model, *loaded[MODEL], path / MODEL)
        state = loaded[STATE]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.order_gen.set_state(state["order_rng"])
            self.aug_gen.set_state(state["aug_rng"])
            # Checkpoints written before the global generators were saved lack them.
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])
            if "cuda_rng" in state and self.aug_gen.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.aug_gen.device)
            self.epoch, self.attempt = int(state["epoch"]), int(state["attempt"]) + 1
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointUnreadable(f"{path / STATE}: not a hiertune checkpoint state "
                                       f"({type(exc).__name__}: {exc})") from None
        self.history = loaded[HISTORY]


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """A checkpoint's model.safetensors into `model` (built as the trial built it)."""
    _load_model(model, *_read(path, _read_model), path)


def _read(path: Path, load):
    try:
        return load(path)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        raise CheckpointUnreadable(f"{path}: unreadable or truncated checkpoint ({first_line(exc)})") from None


def _read_model(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def _load_model(model: torch.nn.Module, weights: dict, metadata: dict, path: Path) -> str | None:
    """Loads `weights` into `model`; a lean checkpoint's frozen backbone must be the one `model`
    has (the digest it returns), or the checkpoint was written from other weights."""
    expected = model.state_dict()
    frozen = metadata.get(FROZEN_DIGEST)
    if frozen is not None:
        if not getattr(model, "backbone_frozen", False):
            raise CheckpointUnreadable(f"{path}: the checkpoint leaves out a frozen backbone, and this trial's "
                                       "backbone trains: written for another fine-tuning")
        if (here := weights_digest(model)) != frozen:
            raise CheckpointUnreadable(f"{path}: written with other backbone weights than this trial's (digest "
                                       f"{frozen[:12]}, here {here[:12]}): resume it with the "
                                       "pretrained weights it started from")
        expected = {k: v for k, v in expected.items() if not k.startswith(FROZEN_PART)}
    _check_fits(weights, expected, path)
    model.load_state_dict(weights, strict=frozen is None)
    return frozen


def read_history(checkpoint: str | None) -> list[EpochMetrics]:
    """Every epoch a trial reported, from its latest checkpoint (a path or an s3:// URI;
    complete across resumes)."""
    if checkpoint is None:
        return []
    path = join(checkpoint, HISTORY)
    try:
        history = json.loads(read_bytes(path))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"{path}: unreadable or truncated ({first_line(exc)})") from None
    if not isinstance(history, list):
        raise UserError(f"{path}: not a list of per-epoch records")
    try:
        return [EpochMetrics.from_flat(h) for h in history]
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a list of per-epoch records ({first_line(exc)})") from None


def read_posthoc(checkpoint: str) -> PosthocResult:
    """The post-hoc grid of a checkpoint's last evaluation (a path or an s3:// URI)."""
    uri = join(checkpoint, POSTHOC)
    try:
        return PosthocResult.load(io.BytesIO(read_bytes(uri)))
    except (OSError, ValueError, KeyError, EOFError, TypeError, RecursionError, zipfile.BadZipFile) as exc:
        raise UserError(f"{uri}: unreadable post-hoc results ({first_line(exc)})") from None
