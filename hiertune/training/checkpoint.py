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
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hiertune.errors import UserError, first_line
from hiertune.novelty.posthoc import PosthocResult
from hiertune.novelty.scores import save_scorers
from hiertune.storage import join, read_bytes
from hiertune.training.faults import CheckpointUnreadable

MODEL = "model.safetensors"
STATE = "state.pt"  # optimizer, scheduler, RNG, attempt: tensors and numbers only (weights_only=True)
HISTORY = "history.json"
POSTHOC = "posthoc.npz"  # every post-hoc grid point of the last evaluation
SCORERS = "scorers.safetensors"


def save_checkpoint(path: Path, epoch: int, attempt: int, history: list[dict], model, optimizer, scheduler,
                    order_gen: torch.Generator, aug_gen: torch.Generator, result, scorers) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, path / MODEL)
    torch.save({"epoch": epoch, "attempt": attempt, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "order_rng": order_gen.get_state(),
                "aug_rng": aug_gen.get_state()}, path / STATE)
    (path / HISTORY).write_text(json.dumps(history))
    result.save(path / POSTHOC)
    if scorers:
        save_scorers(scorers, path / SCORERS)


def load_checkpoint(path: Path, model, optimizer, scheduler, order_gen: torch.Generator,
                    aug_gen: torch.Generator) -> tuple[int, list[dict], int]:
    """Restore in place; returns (epochs done, history, the attempt that wrote the checkpoint)."""
    loaders = ((MODEL, lambda p: model.load_state_dict(load_file(p))),
               (STATE, lambda p: torch.load(p, weights_only=True, map_location="cpu")),
               (HISTORY, lambda p: json.loads(p.read_text())))
    loaded = {}
    for name, load in loaders:
        try:
            loaded[name] = load(path / name)
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
            raise CheckpointUnreadable(f"{path / name}: unreadable or truncated checkpoint "
                                       f"({first_line(exc)})") from None
    state = loaded[STATE]
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        order_gen.set_state(state["order_rng"])
        aug_gen.set_state(state["aug_rng"])
        return int(state["epoch"]), loaded[HISTORY], int(state["attempt"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointUnreadable(f"{path / STATE}: not a hiertune checkpoint state "
                                   f"({type(exc).__name__}: {exc})") from None


def read_history(checkpoint: str | None) -> list[dict]:
    """Every epoch a trial reported, from its latest checkpoint (a path or an s3:// URI;
    complete across resumes)."""
    if checkpoint is None:
        return []
    path = join(checkpoint, HISTORY)
    try:
        history = json.loads(read_bytes(path))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable or truncated ({first_line(exc)})") from None
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise UserError(f"{path}: not a list of per-epoch records")
    return history


def read_posthoc(checkpoint: str) -> PosthocResult:
    """The post-hoc grid of a checkpoint's last evaluation (a path or an s3:// URI)."""
    uri = join(checkpoint, POSTHOC)
    try:
        return PosthocResult.load(io.BytesIO(read_bytes(uri)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{uri}: unreadable post-hoc results ({first_line(exc)})") from None
