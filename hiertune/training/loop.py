"""One trial, top to bottom: build, (resume,) train an epoch, evaluate post hoc, report, repeat.

`run_trial` is the only place epochs happen, and `train_epoch` the only place an epoch of training
does, on images or on cached frozen-backbone features alike. It does not know about Ray: it gets a
`report` callable (metrics + a checkpoint directory) and optionally a directory to resume from, so
the same loop serves `hiertune train` in-process and the Ray Tune trainable.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from hiertune.training.config import TrialConfig
from hiertune.data.augment import BatchAugment
from hiertune.data.bundle import DataBundle
from hiertune.data.dataset import load_test_images
from hiertune.data.splits import SHIFTED, SplitData
from hiertune.errors import UserError
from hiertune.models.registry import Heads, ModelOutput, create_model, family
from hiertune.novelty.metrics import leaderboard_metrics
from hiertune.novelty.ood_scores import HeadStats, head_of
from hiertune.novelty.photos import photo_results
from hiertune.novelty.posthoc import EvalBatch, PosthocConfig, PosthocResult, decide, point_metrics, posthoc_grid
from hiertune.novelty.memo import Memo, canonical, memo_get
from hiertune.novelty.records import GridPoint
from hiertune.novelty.registry import NEEDS, needs_of, score, unavailable
from hiertune.novelty.scores import FeatureBank, FeatureScorer, score_levels
from hiertune.progress import log_to_stderr
from hiertune.training.checkpoint import TrainState
from hiertune.training.device import autocast as amp_autocast
from hiertune.training.device import pick_device, precision
from hiertune.training.faults import TrialDiverged, fault_for
from hiertune.training.features import Corruption, FeatureStore, frozen_inputs, image_features
from hiertune.training.inputs import FeatureInputs, ImageInputs
from hiertune.training.inputs import mix as mix_inputs
from hiertune.training.losses import LOSS_PARTS, hierarchical_loss
from hiertune.training.records import EpochMetrics
from hiertune.training.source_nullspace import fit_source_projection

log = logging.getLogger("hiertune")
Report = Callable[[EpochMetrics, Path], None]
# One evaluation memo per process, not per trial: the next trial that reads the same frozen
# features (on a reused Ray actor, or in a loop) finds what depends on them alone already fitted,
# and starts as warm as its later epochs. Entries match by value (Memo.canonical) and a few per
# name are kept, so another split, backbone or a trained backbone's new features just miss.
PROCESS_MEMO = Memo()


def heads_for(bundle: DataBundle, cfg: TrialConfig) -> Heads:
    h = bundle.data.hierarchy
    return Heads(len(h.superclasses), len(h.subclasses), tuple(int(s) for s in h.sub_to_super),
                 novel_logit=cfg.outlier_mode == "class")


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
              cpus: float | None = None, progress: bool = False, features: FeatureStore | None = None,
              rungs: tuple[int, ...] | None = None, last_only: bool = False, posthoc: PosthocConfig | None = None,
              complete: bool = True) -> EpochMetrics | None:
    """The last epoch's metrics (None when the trial had no epoch left to run). `features`: where
    frozen-backbone features are shared or cached (None: this trial's memory).
    Metrics `features_computed` (image pools this trial ran through its frozen backbone) and
    `feature_seconds` say what the cache saved. `rungs`: the epochs (1-based) whose results a
    scheduler reads; they and the last epoch get the full evaluation, the others every score but
    vim (metric `full_evaluation`; None: every epoch is full). `last_only`: evaluate and report the
    last epoch only, for a caller that reads nothing between (a leave-species-out fold). `posthoc`:
    the grid its search space declares (SearchSpace.posthoc_grid; None: every score, τ over [0, 1]).
    `complete`: the last epoch's checkpoint is one a model can be written from (an export's
    retraining, a leave-species-out fold): with the feature scorers and a frozen backbone's
    weights. Every other checkpoint names a frozen backbone by its digest (TrainState.save)."""
    setup = setup_trial(cfg, bundle, cpus)
    device, autocast, scaler, heads, model, state = (setup.device, setup.autocast, setup.scaler, setup.heads,
                                                     setup.model, setup.state)
    if resume is not None:
        state.restore(resume)
        log.info("resuming from epoch %d (attempt %d)", state.epoch, state.attempt)
    fault = fault_for(cfg.faults, cfg.trial_number)
    # After a resume, so cached features come from the weights the trial trains with.
    data = trial_data(cfg, bundle, setup.split, heads, model, setup.augment, features or FeatureStore())

    metrics = None
    memo = PROCESS_MEMO  # feature statistics and feature-only scores, computed again only when features change
    for epoch in range(state.epoch, cfg.epochs):
        poison = fault is not None and fault.strike(epoch, state.attempt)
        train = train_epoch(state, epoch, cfg, heads, data, device, autocast, scaler, poison, progress)
        if last_only and epoch + 1 < cfg.epochs:
            state.epoch = epoch + 1
            continue
        full = rungs is None or epoch + 1 in rungs or epoch + 1 == cfg.epochs
        evaluation = evaluate_epoch(model, cfg, heads, data, device, autocast, memo, full, posthoc)
        metrics = epoch_metrics(epoch, state.attempt, train, evaluation, data)
        state.epoch = epoch + 1
        state.history.append(metrics.flat())
        with tempfile.TemporaryDirectory(prefix="hiertune-ckpt-") as tmp:
            # The feature scorers (a hundred MB with a 1280-wide feature) only with the last epoch,
            # the one an export writes out: every epoch's would cost about as much as training it.
            last = complete and epoch + 1 == cfg.epochs
            state.save(Path(tmp), evaluation.result, evaluation.scorers if last else None, lean=not last)
            report(metrics, Path(tmp))
    return metrics


@dataclass
class TrialSetup:
    """A trial as built before its first epoch: model, optimizer state, its data split."""

    device: torch.device
    autocast: Callable
    scaler: torch.amp.GradScaler
    heads: Heads
    model: torch.nn.Module
    augment: BatchAugment
    state: TrainState
    split: SplitData


def setup_trial(cfg: TrialConfig, bundle: DataBundle, cpus: float | None = None, trains: bool = True) -> TrialSetup:
    torch.set_num_threads(cfg.torch_threads(cpus))
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision(device, cfg.amp) == torch.float16)
    heads = heads_for(bundle, cfg)
    model, augment = build(cfg, heads, device, trains)
    optimizer = make_optimizer(cfg, model)
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    steps_per_epoch = max(1, len(split.train_subclass) // cfg.batch_size)
    state = TrainState(model, optimizer,
                       torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps_per_epoch)),
                       order_gen=torch.Generator().manual_seed(cfg.seed),
                       aug_gen=torch.Generator(device).manual_seed(cfg.seed + 1))
    return TrialSetup(device, amp_autocast(device, cfg.amp), scaler, heads, model, augment, state, split)


def build(cfg: TrialConfig, heads: Heads, device: torch.device, trains: bool = True
          ) -> tuple[torch.nn.Module, BatchAugment]:
    """The model on its device and the batch augmentation, as every trial (and the feature
    precomputation a sweep shares with its trials) builds them: channels-last on CUDA. `trains`:
    whether this model is about to be trained (else it only extracts features, or is timed)."""
    cuda = device.type == "cuda"
    if trains and family(cfg.family).uses_backbone and cfg.pretrained is False:
        log.info("backbone %s: random initialisation, trains from scratch", cfg.backbone)
    model = create_model(cfg.model_config(), heads).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    return model, BatchAugment(cfg.augment_config(), device, channels_last=cuda)


def cached_inputs(cfg: TrialConfig, bundle: DataBundle, model: torch.nn.Module, augment: BatchAugment,
                  store: FeatureStore) -> tuple[FeatureInputs, FeatureInputs] | None:
    """`cfg`'s frozen-backbone features (training, validation), from `store` or computed into it;
    None when the trial has to go through the backbone."""
    device = augment.device
    corrupted = cfg.cached_corruptions()
    corruption = Corruption(corrupted, cfg.corrupt_severity, cfg.cached_views() > 1) if corrupted else None
    return frozen_inputs(model, bundle, cfg.outlier_count, cfg.outlier_fraction, augment, cfg.image_size,
                         cfg.cached_views(), device, amp_autocast(device, cfg.amp), str(precision(device, cfg.amp)),
                         store, corruption, cfg.corrupt_p)


@dataclass
class TrialData:
    """What every epoch reads: training and validation inputs (images, or a frozen backbone's
    cached features) with their labels, and the training rows the feature scorers are fitted on."""

    train: ImageInputs | FeatureInputs
    train_y: tuple[torch.Tensor, torch.Tensor]  # superclass, subclass
    val: ImageInputs | FeatureInputs
    split: SplitData  # validation labels and groups
    fit_rows: torch.Tensor
    fit_inputs: ImageInputs | FeatureInputs  # train's fit_rows, clean, as evaluation reads them
    outlier_images: int
    photos: np.ndarray  # [validation rows] bool: the --shifted-data photos (hiertune.novelty.photos)
    subclass_names: tuple[str, ...]
    features_computed: int  # image pools this trial ran through its frozen backbone; 0: shared or read from disk
    feature_seconds: float


def trial_data(cfg: TrialConfig, bundle: DataBundle, split: SplitData, heads: Heads, model: torch.nn.Module,
               augment: BatchAugment, features: FeatureStore, fit_projection: bool = True) -> TrialData:
    """`fit_projection` False: `source_directions`' basis is not fitted, for a caller that loads
    trained weights (which hold it) after this."""
    # A frozen backbone's outputs are the same every epoch: then the epochs read them, computed once.
    computed_before, t0 = features.computed, time.perf_counter()
    cached = cached_inputs(cfg, bundle, model, augment, features)
    feature_seconds = time.perf_counter() - t0
    photos_train = len(bundle.shifted.train_rows) if bundle.shifted is not None else 0
    outlier_images = int((split.train_superclass == heads.n_super).sum())
    if cfg.source_directions and fit_projection:
        if cached is None:
            raise UserError(f"source_directions {cfg.source_directions} needs cached frozen features "
                            f"(feature_views >= 1): the directions are fitted on them once")
        clean = cached[0].rows(torch.arange(len(cached[0]))).features  # the training rows' clean view
        fit_source_projection(model, clean, len(split.train_subclass) - photos_train - outlier_images, cfg.seed)
    train, val = cached or (ImageInputs(torch.from_numpy(split.train_images), augment, cfg.corrupt_p,
                                        cfg.corrupt_severity),
                            ImageInputs(torch.from_numpy(split.val_images), augment))
    train_y = (torch.from_numpy(split.train_superclass), torch.from_numpy(split.train_subclass))
    fit_rows = scorer_rows(split.train_superclass, split.train_subclass, heads, cfg.scorer_images, cfg.seed)
    photos = np.zeros(len(split.val_group), dtype=bool)
    if bundle.shifted is not None and bundle.shifted.photo is not None:
        photos[split.val_group == SHIFTED] = bundle.shifted.photo[bundle.shifted.val_rows]
    return TrialData(train, train_y, val, split, fit_rows, train.rows(fit_rows),
                     outlier_images=outlier_images,
                     photos=photos, subclass_names=bundle.data.hierarchy.subclasses,
                     features_computed=features.computed - computed_before, feature_seconds=feature_seconds)


@dataclass
class EpochTraining:
    """What one epoch of training measured."""

    loss: float  # mean over the epoch's images
    parts: list[float]  # mean of each of LOSS_PARTS
    lr: float  # after the epoch's last step
    images: int
    seconds: float


def train_epoch(state: TrainState, epoch: int, cfg: TrialConfig, heads: Heads, data: TrialData, device: torch.device,
                autocast, scaler: torch.amp.GradScaler, poison: bool, progress: bool) -> EpochTraining:
    """One pass over the training inputs, images or cached features: the one place an epoch of
    training happens. `poison` (a test's injected fault) makes its loss NaN. Nothing here waits
    for the device: loss parts stay on it and are read once, after the epoch."""
    model, optimizer = state.model, state.optimizer
    model.set_epoch(epoch)
    model.train()
    mix = cfg.mixup_alpha > 0
    loss_cfg = cfg.loss_config()
    totals = torch.zeros(1 + len(LOSS_PARTS), device=device)
    images, t0 = 0, time.perf_counter()
    batches = data.train.batches(data.train_y, cfg.batch_size, device, train=True, order_gen=state.order_gen,
                                 aug_gen=state.aug_gen)
    bar = tqdm(batches, total=len(data.train) // cfg.batch_size, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               unit="batch", disable=None if progress else True, leave=False)  # None: hide when not a TTY
    for step, (x, sup, sub) in enumerate(bar):
        if mix:
            lam = float(np.random.default_rng([cfg.seed, epoch, step]).beta(cfg.mixup_alpha, cfg.mixup_alpha))
            perm = torch.randperm(len(sup), generator=state.order_gen).to(device)
            x = mix_inputs(x, lam, perm)
        with autocast():
            out = data.train.forward(model, x)
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
        state.scheduler.step()
        totals += torch.cat([loss.detach().float().view(1), parts]) * len(sup)
        images += len(sup)
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    mean_loss, *part_means = (totals / max(1, images)).tolist()
    if not math.isfinite(mean_loss):
        raise TrialDiverged(f"non-finite training loss ({mean_loss}) in epoch {epoch + 1}")
    return EpochTraining(mean_loss, part_means, state.scheduler.get_last_lr()[0], images, time.perf_counter() - t0)


@dataclass
class Evaluation:
    """One evaluation of the model: the post-hoc grid and the feature scorers (what the checkpoint
    keeps), the metrics of the config's own (score, tau_super, tau_sub) point and of the closed
    set, and how long each stage took."""

    val_loss: float
    result: PosthocResult
    scorers: dict[str, FeatureScorer]
    point: GridPoint
    closed: tuple[float, float]  # closed-set seen accuracy, superclass and subclass
    photos: dict[str, float]  # the recommended point on the --shifted-data photos, overall and per species
    forward_seconds: float
    fit_seconds: float
    posthoc_seconds: float
    full: bool  # every score fitted (vim included)


def evaluate_epoch(model: torch.nn.Module, cfg: TrialConfig, heads: Heads, data: TrialData, device: torch.device,
                   autocast, memo: Memo | None = None, full: bool = True, posthoc: PosthocConfig | None = None
                   ) -> Evaluation:
    """One forward pass over the validation inputs, the feature scorers its scores need fitted,
    then the whole post-hoc grid (`posthoc`, run_trial) on the outputs. `memo` carries what
    depends on features alone from the trial's earlier epochs; `full` False leaves vim out (its
    fit is an eigendecomposition)."""
    grid = replace(posthoc or PosthocConfig(), shifted_weight=cfg.shifted_weight)
    # An epoch between rungs leaves vim out only where another score is left to evaluate.
    full = full or all("principal_subspace" in score(name).needs for name in grid.scores)
    t0 = time.perf_counter()
    batch, val_loss = evaluate(model, data.val, data.split.val_superclass, data.split.val_subclass, heads, cfg,
                               device, autocast, data.split.val_group)
    t1 = time.perf_counter()
    # Feature scorers see clean training images in eval mode, as validation images are seen:
    # not the epoch's augmented (or mixed) train-mode features.
    fit_out = forward_all(model, data.fit_inputs, device, autocast)
    scorers = fit_scorers(fit_out, data.train_y[0][data.fit_rows], data.train_y[1][data.fit_rows], heads, model,
                          memo, vim=full, needs=needs_of((*grid.scores, cfg.novelty_score)))
    t2 = time.perf_counter()
    result = posthoc_grid(batch, heads, grid, scorers, memo)
    if unavailable(cfg.novelty_score, scorers) is not None:
        point = GridPoint.unmeasured(cfg.novelty_score, cfg.tau_super, cfg.tau_sub)
    else:  # on the grid unless Optuna sampled the thresholds
        point = result.find(cfg.novelty_score, cfg.tau_super, cfg.tau_sub) or point_metrics(
            batch, heads, cfg.novelty_score, cfg.tau_super, cfg.tau_sub, scorers, shifted_weight=cfg.shifted_weight,
            memo=memo)
    photos = photo_results(batch, heads, result.recommended, scorers, data.photos, data.subclass_names)
    t3 = time.perf_counter()
    return Evaluation(val_loss, result, scorers, point, _closed_set(batch, heads), photos, t1 - t0, t2 - t1, t3 - t2,
                      full)


def epoch_metrics(epoch: int, attempt: int, train: EpochTraining, evaluation: Evaluation, data: TrialData
                  ) -> EpochMetrics:
    """What one epoch reports (to Ray Tune, MLflow, the checkpoint's history)."""
    result = evaluation.result
    return EpochMetrics(
        epoch=epoch + 1, attempt=attempt, train_loss=train.loss, train_parts=dict(zip(LOSS_PARTS, train.parts)),
        val_loss=evaluation.val_loss, lr_now=train.lr, recommended=result.recommended,
        hypervolume=result.hypervolume, front=tuple((p.seen, p.unseen) for p in result.front),
        by_score=dict(result.by_score), closed_seen_super_acc=evaluation.closed[0],
        closed_seen_sub_acc=evaluation.closed[1], photos=evaluation.photos,
        point=evaluation.point, train_images=len(data.train), outlier_images=data.outlier_images,
        train_images_per_s=train.images / train.seconds, epoch_seconds=train.seconds,
        eval_forward_seconds=evaluation.forward_seconds, scorer_fit_seconds=evaluation.fit_seconds,
        full_evaluation=evaluation.full, posthoc_seconds=evaluation.posthoc_seconds,
        features_computed=data.features_computed, feature_seconds=data.feature_seconds)


def precompute_features(cfg: TrialConfig, bundle: DataBundle, store: FeatureStore, cpus: float | None = None
                        ) -> FeatureStore:
    """The frozen features of `cfg`'s backbone for every image pool, into `store`, returned. A
    sweep runs this once before its trials (as a Ray task with a trial's device and the CPUs of a
    node, which extraction splits its images across); model and preprocessing are built as
    run_trial builds them, and the key checks it: a trial that would differ just misses the
    shared set."""
    log_to_stderr()  # the progress lines, from a Ray worker too
    torch.set_num_threads(cfg.torch_threads(cpus))
    torch.manual_seed(cfg.seed)
    model, augment = build(cfg, heads_for(bundle, cfg), pick_device(cfg.device), trains=False)
    cached_inputs(cfg, bundle, model, augment, store)
    if store.cache_root is not None and bundle.data.test_names:
        # export-best predicts the test set through the same frozen backbone: its features go to
        # the disk cache with the pools', where the export reads them (kept out of `store`, which
        # travels to every trial).
        test = load_test_images(bundle.data.root, bundle.data.test_names, cfg.data_size, store.cache_root)[0]
        device = augment.device
        image_features(model, test, augment, cfg.image_size, 1, device, amp_autocast(device, cfg.amp),
                       str(precision(device, cfg.amp)), store, "test_images", keep=False)
    return store


@torch.no_grad()
def forward_all(model, inputs: ImageInputs | FeatureInputs, device: torch.device, autocast,
                batch_size: int | None = None, progress: str | None = None) -> ModelOutput:
    """Logits and features of every input (images, or cached features), on the CPU in float32,
    in eval mode; in batches of `batch_size` (default: what the inputs hold comfortably)."""
    model.eval()
    batch_size = batch_size or inputs.EVAL_BATCH
    parts: dict[str, list[torch.Tensor]] = {"sl": [], "ul": [], "sf": [], "uf": []}
    batches = inputs.batches((), batch_size, device, train=False)
    for (x,) in tqdm(batches, total=math.ceil(len(inputs) / batch_size), desc=progress, unit="batch",
                     disable=None if progress else True, leave=False):
        with autocast():
            out = inputs.forward(model, x)
        for key, t in zip(parts, (out.super_logits, out.sub_logits, out.super_features, out.sub_features)):
            parts[key].append(parts["sf"][-1] if key == "uf" and t is out.super_features else t.float().cpu())
    sl, ul, sf = (torch.cat(parts[key]) for key in ("sl", "ul", "sf"))
    # Both levels reading one feature (dualhead) get one tensor, which evaluation then sees once.
    shared = all(u is f for u, f in zip(parts["uf"], parts["sf"]))
    return ModelOutput(sl, ul, sf, sf if shared else torch.cat(parts["uf"]))


def evaluate(model, inputs: ImageInputs | FeatureInputs, sup: np.ndarray, sub: np.ndarray, heads: Heads,
             cfg: TrialConfig, device: torch.device, autocast,
             group: np.ndarray | None = None) -> tuple[EvalBatch, float]:
    """Logits and features of every validation image, and the loss over the in-source seen ones."""
    out = forward_all(model, inputs, device, autocast)
    sup_t, sub_t = torch.from_numpy(sup), torch.from_numpy(sub)
    group_t = None if group is None else torch.from_numpy(group)
    seen = (sup_t < heads.n_super) & (sub_t < heads.n_sub)
    if group_t is not None:
        seen &= group_t != SHIFTED
    val_loss = float("nan")
    if seen.any():
        seen_out = ModelOutput(out.super_logits[seen], out.sub_logits[seen], out.super_features[seen],
                               out.sub_features[seen])
        loss, _ = hierarchical_loss(seen_out, sup_t[seen], sub_t[seen], heads, cfg.loss_config())
        val_loss = loss.item()
    return (EvalBatch(out.super_logits, out.sub_logits, out.super_features, out.sub_features, sup_t, sub_t, group_t),
            val_loss)


def _closed_set(batch: EvalBatch, heads: Heads) -> tuple[float, float]:
    # msp at threshold 0: nothing is called novel; in-source images, as the seed measured them.
    pred_super, pred_sub = decide(score_levels(batch, heads, "msp"), heads, 0.0, 0.0)
    insource = batch.groups(heads) != SHIFTED
    point = leaderboard_metrics(pred_super.numpy()[insource], pred_sub.numpy()[insource],
                                batch.super_target.numpy()[insource], batch.sub_target.numpy()[insource],
                                heads.n_super, heads.n_sub)
    return point["seen_super_acc"], point["seen_sub_acc"]


def scorer_rows(sup: np.ndarray, sub: np.ndarray, heads: Heads, cap: int, seed: int) -> torch.Tensor:
    """The training images of seen classes the feature scorers are fitted on: all of them, or a
    seeded subset of `cap` (0: no cap), the same every epoch."""
    rows = np.flatnonzero((sup < heads.n_super) & (sub < heads.n_sub))
    if cap and len(rows) > cap:
        rows = np.sort(np.random.default_rng([seed, 11]).choice(rows, cap, replace=False))
    return torch.from_numpy(rows)


def fit_scorers(out: ModelOutput, sup: torch.Tensor, sub: torch.Tensor, heads: Heads, model: torch.nn.Module,
                memo: Memo | None = None, vim: bool = True, needs: frozenset[str] = frozenset(NEEDS)
                ) -> dict[str, FeatureScorer]:
    """Feature-space novelty scorers of both levels from eval-mode training features, with what
    the scores to compute `needs` (hiertune.novelty.registry): nothing for logits alone; the
    head-based scores' statistics need the level's classifier head (`super_head` / `sub_head`).
    Through `memo` only what depends on the head is fitted again while the features stay the
    same; `vim` False leaves vim's principal subspace unfitted."""
    if needs <= {"logits"}:
        return {}
    vim = vim and "principal_subspace" in needs
    scorers = {}
    for level, feats, labels, n in (("super", out.super_features, sup, heads.n_super),
                                    ("sub", out.sub_features, sub, heads.n_sub)):
        feats = canonical(memo, "fit_features", feats.float().cpu())
        labels = canonical(memo, "fit_labels", labels.cpu())

        def fit_bank() -> FeatureScorer:  # memo_get calls it at once, with this level's feats and labels
            bank = FeatureBank(n, feats.shape[1])
            bank.update(feats, labels)
            return bank.fit()

        bank = memo_get(memo, f"bank{n}", (feats, labels), fit_bank)  # noqa: B023
        module = getattr(model, f"{level}_head", None) if "head" in needs else None
        head = head_of(module, n) if module is not None else None
        seen = memo_get(memo, f"seen_rows{n}", (feats, labels), lambda: feats[labels < n])  # noqa: B023
        stats = HeadStats.fit(seen, head, vim=vim, memo=memo) if head is not None else None
        scorers[level] = replace(bank, head=stats)
    return scorers
