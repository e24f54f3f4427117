"""Post-hoc evaluation cost per epoch: every score, the whole τ_super × τ_sub grid, every
validation group; and the eval-mode scorer fit that the feature scores need.

    python benchmarks/posthoc.py [--data DIR --outliers DIR] [--family cnn] [--set key=value ...]

Trains one epoch with `run_trial` (which times its own phases), then, from that checkpoint,
times the grid score by score on the same validation outputs. Targets: post-hoc grid ≤ 5% of
the epoch's training time; the scorer fit (an eval-mode forward over `scorer_images` training
images + fitting) is reported as its own fraction, since it grows with the forward pass, not
with the grid. Defaults to ../shared data when present, else the synthetic default.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file

from hiertune.config import TrialConfig
from hiertune.data.augment import BatchAugment
from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.data.splits import GROUPS
from hiertune.models.registry import create_model
from hiertune.novelty.posthoc import PosthocConfig, posthoc_grid
from hiertune.space import parse_assignments
from hiertune.training import checkpoint as ckpt
from hiertune.training.inputs import ImageInputs
from hiertune.training.loop import evaluate, fit_scorers, forward_all, heads_for, run_trial, scorer_rows

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--outliers")
    parser.add_argument("--family", default="cnn")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3, help="timings of the grid alone (best kept)")
    args = parser.parse_args()
    data, outliers = args.data, args.outliers
    if data is None and (SHARED / "nndl2025").is_dir():
        data, outliers = str(SHARED / "nndl2025"), str(SHARED / "outliers" / "tinyimagenet-ood")
    cfg = TrialConfig.from_dict({"family": args.family, "data": data, "outliers": outliers, "epochs": 1,
                                 "outlier_fraction": 0.5, "threads": 2, **parse_assignments(args.set)})
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), default_cache_root(),
                         cfg.shift_config())
    summary = bundle.summary()
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    counts = {g: int((split.val_group == k).sum()) for k, g in enumerate(GROUPS)}
    print(f"data: {summary['data']}  family {cfg.family}  image {cfg.image_size}px  torch threads {cfg.threads}")
    print(f"train {len(split.train_images)} images; validation {len(split.val_images)}: "
          + ", ".join(f"{g} {n}" for g, n in counts.items()))
    print(f"seen_shifted: {summary['shifted_source']}  (bundle with the group built in "
          f"{time.perf_counter() - start:.1f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        kept = Path(tmp) / "ckpt"

        def keep(metrics: dict, checkpoint: Path) -> None:
            shutil.copytree(checkpoint, kept)

        m = run_trial(cfg, bundle, keep)
        heads = heads_for(bundle, cfg)
        model = create_model(cfg.model_config(), heads)
        model.load_state_dict(load_file(kept / ckpt.MODEL))

    epoch = m["epoch_seconds"]
    print(f"\nepoch (train)        {epoch:8.2f} s  ({m['train_images_per_s']:.0f} images/s)")
    print(f"eval forward         {m['eval_forward_seconds']:8.2f} s  ({100 * m['eval_forward_seconds'] / epoch:.1f}% "
          f"of the epoch)")
    print(f"scorer fit           {m['scorer_fit_seconds']:8.2f} s  ({100 * m['scorer_fit_seconds'] / epoch:.1f}% of "
          f"the epoch; eval-mode pass over {min(cfg.scorer_images or 10**9, len(split.train_images))} training "
          f"images + fit)")
    frac = m["posthoc_seconds"] / epoch
    print(f"post-hoc grid        {m['posthoc_seconds']:8.2f} s  ({100 * frac:.2f}% of the epoch; target ≤ 5%: "
          f"{'OK' if frac <= 0.05 else 'ABOVE'})")

    # Score by score on the same outputs: which ones cost.
    device = torch.device("cpu")
    augment = BatchAugment(cfg.augment_config(), device)
    batch, _ = evaluate(model, ImageInputs(torch.from_numpy(split.val_images), augment), split.val_superclass,
                        split.val_subclass, heads, cfg, device, nullcontext, split.val_group)
    rows = scorer_rows(split.train_superclass, split.train_subclass, heads, cfg.scorer_images, cfg.seed)
    out = forward_all(model, ImageInputs(torch.from_numpy(split.train_images), augment).rows(rows), device,
                      nullcontext)
    t = time.perf_counter()
    scorers = fit_scorers(out, torch.from_numpy(split.train_superclass)[rows],
                          torch.from_numpy(split.train_subclass)[rows], heads, model)
    print(f"  of which fitting   {time.perf_counter() - t:8.3f} s (the rest is the forward pass)")
    config = PosthocConfig(shifted_weight=cfg.shifted_weight)
    grid = len(config.tau_super) * len(config.tau_sub)
    print(f"\ngrid alone, best of {args.repeats}: {grid} (τ_super, τ_sub) points × {len(config.scores)} scores × "
          f"{len(GROUPS)} groups")
    total = 0.0
    for name in config.scores:
        one = PosthocConfig(scores=(name,), shifted_weight=cfg.shifted_weight)
        best = min(_timed(lambda: posthoc_grid(batch, heads, one, scorers)) for _ in range(args.repeats))
        total += best
        print(f"  {name:<12} {1000 * best:8.1f} ms")
    whole = min(_timed(lambda: posthoc_grid(batch, heads, config, scorers)) for _ in range(args.repeats))
    print(f"  {'all':<12} {1000 * whole:8.1f} ms  = {100 * whole / epoch:.2f}% of the epoch")

    # Not a quality benchmark (one epoch), but the numbers the grid produces, for a sanity look.
    result = posthoc_grid(batch, heads, config, scorers)
    print(f"\nafter {cfg.epochs} epoch(s): AUROC per score (seen vs novel_sub on the subclass score, seen vs "
          f"novel_super on the superclass score)")
    for s, name in enumerate(result.scores):
        print(f"  {name:<12} {result.group_auroc[s, 0]:.3f}  {result.group_auroc[s, 1]:.3f}")
    best = result.recommended
    print(f"best point ({best['score']}): " + "  ".join(f"{g} {best[f'{g}_acc']:.3f}" for g in GROUPS)
          + f"  accept_shifted {best['accept_shifted']:.3f}")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
