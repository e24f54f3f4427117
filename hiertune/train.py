"""One trial, top to bottom: build, (resume,) train an epoch, evaluate post hoc, report, repeat.

`run_trial` is the only place an epoch happens. It does not know about Ray: it gets a `report`
callable (metrics + a checkpoint directory) and optionally a directory to resume from, so the
same loop serves `hiertune train` in-process and the Ray Tune trainable.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hiertune.config import TrialConfig
from hiertune.data.augment import BatchAugment
from hiertune.data.batches import iterate_batches
from hiertune.data.bundle import DataBundle
from hiertune.errors import UserError
from hiertune.faults import CheckpointUnreadable, TrialDiverged, fault_for
from hiertune.losses import LOSS_PARTS, hierarchical_loss
from hiertune.models.registry import Heads, ModelOutput, create_model
from hiertune.novelty import (LOGIT_SCORES, EvalBatch, FeatureBank, FeatureScorer, PosthocConfig, point_metrics,
                              posthoc_grid, save_scorers)

log = logging.getLogger("hiertune")
Report = Callable[[dict, Path], None]


POINT_KEYS = ("seen_super_acc", "unseen_super_acc", "seen_sub_acc", "unseen_sub_acc", "seen", "unseen",
              "accept_super", "accept_sub")


class Checkpoint:
    """File names in a checkpoint directory; everything loads without executing code."""

    MODEL = "model.safetensors"
    STATE = "state.pt"  # optimizer, scheduler, RNG, attempt: tensors and numbers only (weights_only=True)
    HISTORY = "history.json"
    POSTHOC = "posthoc.npz"  # every post-hoc grid point of the last evaluation
    SCORERS = "scorers.safetensors"


def heads_for(bundle: DataBundle, cfg: TrialConfig) -> Heads:
    h = bundle.data.hierarchy
    return Heads(len(h.superclasses), len(h.subclasses), tuple(int(s) for s in h.sub_to_super),
                 novel_logit=cfg.outlier_mode == "class")


def pick_device(cfg: TrialConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but no CUDA device is visible")
    return torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")


def make_optimizer(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # Every parameter is handed over, frozen ones too: gradual unfreezing flips requires_grad
    # later, and optimizers skip parameters whose grad is None.
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrialConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero over the remaining steps."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def run_trial(cfg: TrialConfig, bundle: DataBundle, report: Report, resume: Path | None = None,
              cpus: float | None = None, progress: bool = False) -> dict:
    torch.set_num_threads(cfg.torch_threads(cpus))
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if cuda and cfg.amp else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.amp and amp_dtype == torch.float16)

    heads = heads_for(bundle, cfg)
    model = create_model(cfg.model_config(), heads).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    train_x = torch.from_numpy(split.train_images)
    train_y = (torch.from_numpy(split.train_superclass), torch.from_numpy(split.train_subclass))
    val_x = torch.from_numpy(split.val_images)
    augment = BatchAugment(cfg.augment_config(), device, channels_last=cuda)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    steps_per_epoch = max(1, len(train_x) // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps_per_epoch))
    posthoc_cfg = PosthocConfig()
    loss_cfg = cfg.loss_config()

    # An attempt is one run of this loop; a restart from a checkpoint (a retry after a failure, a
    # killed worker, `--resume`) is the next one. Every epoch records the attempt that ran it.
    start_epoch, history, attempt = 0, [], 1
    if resume is not None:
        start_epoch, history, attempt = _load_checkpoint(resume, model, optimizer, scheduler, order_gen, aug_gen)
        attempt += 1
        log.info("resuming from epoch %d (attempt %d)", start_epoch, attempt)
    fault = fault_for(cfg.faults, cfg.trial_number)

    metrics: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        poison = fault is not None and fault.strike(epoch, attempt)
        # ---- train one epoch -------------------------------------------------------------
        # Nothing in this loop waits for the device: loss parts and the features the
        # feature-space scores are fitted on stay on it and are read once, after the epoch.
        model.set_epoch(epoch)
        model.train()
        mix = cfg.mixup_alpha > 0
        totals = torch.zeros(1 + len(LOSS_PARTS), device=device)
        kept: list[tuple[torch.Tensor, ...]] = []
        seen_images, t0 = 0, time.perf_counter()
        batches = iterate_batches(train_x, train_y, cfg.batch_size, shuffle=True, generator=order_gen,
                                  device=device, drop_last=True)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=None if progress else True, leave=False)  # None: hide when not a TTY
        for step, (xb, sup, sub) in enumerate(bar):
            x = augment(xb, aug_gen)
            if mix:
                lam = float(np.random.default_rng([cfg.seed, epoch, step]).beta(cfg.mixup_alpha, cfg.mixup_alpha))
                perm = torch.randperm(len(x), generator=order_gen).to(device)
                x = lam * x + (1 - lam) * x[perm]
            with autocast():
                out = model(x)
                loss, parts = hierarchical_loss(out, sup, sub, heads, loss_cfg)
                if mix:
                    loss_b, parts_b = hierarchical_loss(out, sup[perm], sub[perm], heads, loss_cfg)
                    loss, parts = lam * loss + (1 - lam) * loss_b, lam * parts + (1 - lam) * parts_b
                if poison:
                    loss = loss * math.nan
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            totals += torch.cat([loss.detach().float().view(1), parts]) * len(x)
            if not mix:  # feature-space scores are fitted on clean (un-mixed) training features
                kept.append((out.super_features.detach(), out.sub_features.detach(), sup, sub))
            seen_images += len(x)
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        train_loss, *part_means = (totals / max(1, seen_images)).tolist()
        if not math.isfinite(train_loss):
            raise TrialDiverged(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}")
        train_seconds = time.perf_counter() - t0

        # ---- evaluate: one forward pass, then the whole post-hoc grid on its outputs -------
        t1 = time.perf_counter()
        batch, val_loss = evaluate(model, val_x, split.val_superclass, split.val_subclass, heads, cfg,
                                   augment, device, autocast)
        t2 = time.perf_counter()
        scorers = fit_scorers(kept, heads)
        result = posthoc_grid(batch, heads, posthoc_cfg, scorers)
        point = (point_metrics(batch, heads, cfg.novelty_score, cfg.tau_super, cfg.tau_sub, scorers)
                 if scorers or cfg.novelty_score in LOGIT_SCORES else dict.fromkeys(POINT_KEYS, math.nan))
        t3 = time.perf_counter()

        metrics = {
            "epoch": epoch + 1,
            "attempt": attempt,
            "train_loss": train_loss,
            **{f"train_{name}": v for name, v in zip(LOSS_PARTS, part_means)},
            "val_loss": val_loss,
            "lr": scheduler.get_last_lr()[0],
            **result.to_metrics(),
            "recommended_score": result.recommended["score"],
            # Closed-set accuracies, what seed 001 reports.
            **_closed_set(batch, heads),
            # The one (score, tau_super, tau_sub) this trial's config names: what a sweep that
            # samples thresholds with Optuna, instead of sweeping them post hoc, optimises.
            **{f"point_{k}": point[k] for k in POINT_KEYS},
            "point_objective": (point["seen"] + point["unseen"]) / 2,
            "train_images": len(train_x),
            "outlier_images": int((split.train_superclass == heads.n_super).sum()),
            "train_images_per_s": seen_images / train_seconds,
            "epoch_seconds": train_seconds,
            "eval_forward_seconds": t2 - t1,
            "posthoc_seconds": t3 - t2,
        }
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="hiertune-ckpt-") as tmp:
            _save_checkpoint(Path(tmp), epoch + 1, attempt, history, model, optimizer, scheduler, order_gen,
                             aug_gen, result, scorers)
            report(metrics, Path(tmp))
    return metrics


@torch.no_grad()
def forward_all(model, images: torch.Tensor, augment: BatchAugment, device: torch.device, autocast,
                batch_size: int = 256, progress: str | None = None) -> ModelOutput:
    """Logits and features of every image (uint8 NHWC), on the CPU in float32, in eval mode."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"sl": [], "ul": [], "sf": [], "uf": []}
    batches = iterate_batches(images, (), batch_size, shuffle=False, generator=None, device=device)
    for (xb,) in tqdm(batches, total=math.ceil(len(images) / batch_size), desc=progress, unit="batch",
                      disable=None if progress else True, leave=False):
        with autocast():
            out = model(augment(xb, train=False))
        for key, t in zip(parts, (out.super_logits, out.sub_logits, out.super_features, out.sub_features)):
            parts[key].append(t.float().cpu())
    return ModelOutput(*(torch.cat(v) for v in parts.values()))


def evaluate(model, images: torch.Tensor, sup: np.ndarray, sub: np.ndarray, heads: Heads, cfg: TrialConfig,
             augment: BatchAugment, device: torch.device, autocast) -> tuple[EvalBatch, float]:
    """Logits and features of every validation image, and the loss over the seen ones."""
    out = forward_all(model, images, augment, device, autocast)
    sup_t, sub_t = torch.from_numpy(sup), torch.from_numpy(sub)
    seen = (sup_t < heads.n_super) & (sub_t < heads.n_sub)
    val_loss = float("nan")
    if seen.any():
        seen_out = ModelOutput(out.super_logits[seen], out.sub_logits[seen], out.super_features[seen],
                               out.sub_features[seen])
        loss, _ = hierarchical_loss(seen_out, sup_t[seen], sub_t[seen], heads, cfg.loss_config())
        val_loss = loss.item()
    return EvalBatch(out.super_logits, out.sub_logits, out.super_features, out.sub_features, sup_t, sub_t), val_loss


def _closed_set(batch: EvalBatch, heads: Heads) -> dict[str, float]:
    point = point_metrics(batch, heads, "msp", 0.0, 0.0)  # tau 0: nothing is called novel
    return {"closed_seen_super_acc": point["seen_super_acc"], "closed_seen_sub_acc": point["seen_sub_acc"]}


def fit_scorers(kept: list[tuple[torch.Tensor, ...]], heads: Heads) -> dict[str, FeatureScorer] | None:
    """Feature-space novelty scorers from the epoch's training features (None after mixup)."""
    if not kept:
        return None
    sup_f, sub_f, sup, sub = (torch.cat(column).float().cpu() for column in zip(*kept))
    scorers = {}
    for level, feats, labels, n in (("super", sup_f, sup, heads.n_super), ("sub", sub_f, sub, heads.n_sub)):
        bank = FeatureBank(n, feats.shape[1])
        bank.update(feats, labels)
        scorers[level] = bank.fit()
    return scorers


def _save_checkpoint(path: Path, epoch: int, attempt: int, history: list[dict], model, optimizer, scheduler,
                     order_gen: torch.Generator, aug_gen: torch.Generator, result, scorers) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, path / Checkpoint.MODEL)
    torch.save({"epoch": epoch, "attempt": attempt, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "order_rng": order_gen.get_state(),
                "aug_rng": aug_gen.get_state()}, path / Checkpoint.STATE)
    (path / Checkpoint.HISTORY).write_text(json.dumps(history))
    result.save(path / Checkpoint.POSTHOC)
    if scorers:
        save_scorers(scorers, path / Checkpoint.SCORERS)


def _load_checkpoint(path: Path, model, optimizer, scheduler, order_gen: torch.Generator,
                     aug_gen: torch.Generator) -> tuple[int, list[dict], int]:
    """Restore in place; returns (epochs done, history, the attempt that wrote the checkpoint)."""
    loaders = ((Checkpoint.MODEL, lambda p: model.load_state_dict(load_file(p))),
               (Checkpoint.STATE, lambda p: torch.load(p, weights_only=True, map_location="cpu")),
               (Checkpoint.HISTORY, lambda p: json.loads(p.read_text())))
    loaded = {}
    for name, load in loaders:
        try:
            loaded[name] = load(path / name)
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
            raise CheckpointUnreadable(f"{path / name}: unreadable or truncated checkpoint "
                                       f"({str(exc).strip().splitlines()[0][:160]})") from None
    state = loaded[Checkpoint.STATE]
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        order_gen.set_state(state["order_rng"])
        aug_gen.set_state(state["aug_rng"])
        return int(state["epoch"]), loaded[Checkpoint.HISTORY], int(state["attempt"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointUnreadable(f"{path / Checkpoint.STATE}: not a hiertune checkpoint state "
                                   f"({type(exc).__name__}: {exc})") from None
