"""Trial overhead: hiertune's training loop vs a bare PyTorch loop, and post-hoc cost per epoch.

    python benchmarks/train.py [--data DIR --outliers DIR] [--family cnn] [--set key=value ...]

(a) images/s of `run_trial`'s training loop vs a bare loop (same model, seed, batches,
augmentation, CE_super + CE_sub, optimizer); target ratio ≥ 0.95.
(b) the post-hoc evaluation (feature-scorer fit + the whole τ_super × τ_sub × score grid) as a
fraction of the epoch's training time; target ≤ 5%.
Defaults to ../shared data when present, else the synthetic default. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hiertune.cli import run_script
from hiertune.training.config import TrialConfig
from hiertune.data.augment import BatchAugment
from hiertune.data.batches import iterate_batches
from hiertune.data.bundle import load_bundle
from hiertune.data.cache import default_cache_root
from hiertune.models.registry import create_model
from hiertune.sweep.space import parse_assignments
from hiertune.training.loop import heads_for, make_optimizer, run_trial

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def bare_loop(cfg: TrialConfig, bundle) -> float:
    """The same epoch written as plainly as possible: images/s."""
    torch.manual_seed(cfg.seed)
    heads = heads_for(bundle, cfg)
    model = create_model(cfg.model_config(), heads)
    model.set_epoch(0)
    model.train()
    optimizer = make_optimizer(cfg, model)
    split = bundle.for_trial(cfg.outlier_count, cfg.outlier_fraction)
    images = torch.from_numpy(split.train_images)
    sup, sub = torch.from_numpy(split.train_superclass), torch.from_numpy(split.train_subclass)
    augment = BatchAugment(cfg.augment_config(), "cpu")
    gen = torch.Generator().manual_seed(cfg.seed)
    n, start = 0, time.perf_counter()
    for xb, s, u in iterate_batches(images, (sup, sub), cfg.batch_size, shuffle=True, generator=gen,
                                    device="cpu", drop_last=True):
        out = model(augment(xb, gen))
        loss = F.cross_entropy(out.super_logits, s) + F.cross_entropy(out.sub_logits, u)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(xb)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--outliers")
    parser.add_argument("--family", default="cnn")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each loop")
    args = parser.parse_args()
    data, outliers = args.data, args.outliers
    if data is None and (SHARED / "nndl2025").is_dir():
        data, outliers = str(SHARED / "nndl2025"), str(SHARED / "outliers" / "tinyimagenet-ood")
    cfg = TrialConfig.from_dict({"family": args.family, "data": data, "outliers": outliers, "epochs": 1,
                                 "outlier_fraction": 0.5, "kl_alpha": 0.0, "threads": 2,
                                 **parse_assignments(args.set)})
    torch.set_num_threads(cfg.threads)
    bundle = load_bundle(cfg.data, cfg.outliers, cfg.data_size, cfg.split_config(), default_cache_root())
    print(f"data: {bundle.summary()['data']}  family: {cfg.family}  backbone: {cfg.backbone}  "
          f"batch {cfg.batch_size}, torch threads {cfg.threads}")

    bare, trial, fractions = [], [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        bare.append(bare_loop(cfg, bundle))
        with tempfile.TemporaryDirectory():
            m = run_trial(cfg, bundle, lambda metrics, checkpoint: None)
        trial.append(m.train_images_per_s)
        fractions.append(m.posthoc_seconds / m.epoch_seconds)
    print(f"bare loop          {max(bare):8.1f} images/s   (best of {args.repeats}: {', '.join(f'{v:.1f}' for v in bare)})")
    print(f"hiertune trial     {max(trial):8.1f} images/s   (best of {args.repeats}: {', '.join(f'{v:.1f}' for v in trial)})")
    ratio = max(trial) / max(bare)
    print(f"ratio              {ratio:8.3f}   target ≥ 0.95: {'OK' if ratio >= 0.95 else 'BELOW'}")
    print(f"epoch (train)      {m['epoch_seconds']:8.2f} s   eval forward {m['eval_forward_seconds']:.2f} s   "
          f"post-hoc {m['posthoc_seconds']:.2f} s  ({m['front_size']:.0f} front points, "
          f"hypervolume {m['hypervolume']:.3f})")
    frac = min(fractions)
    print(f"post-hoc / epoch   {100 * frac:8.2f} %   target ≤ 5%: {'OK' if frac <= 0.05 else 'ABOVE'}")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
