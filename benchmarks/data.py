"""Data-layer figures: cold decode, warm cache load, and augmentation vs the step it feeds.

    python benchmarks/data.py [--data DIR] [--batch-size 128] [--threads 2]

Uses ../shared/data/nndl2025 when present, else the synthetic default. Prints figures and
the ratio the foundation issue asks for: augmentation batches/s ÷ resnet18 training steps/s at
64×64 must be ≥ 10, so the trainer never waits for data.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hiertune.cli import run_script
from hiertune.data.augment import AugmentConfig, BatchAugment
from hiertune.data.batches import iterate_batches
from hiertune.data.dataset import load_competition
from hiertune.data.sources import synthetic_default

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nndl2025"

WARM_IN_FRESH_PROCESS = """
import sys, time
from pathlib import Path
from hiertune.data.dataset import load_competition
t = time.perf_counter()
d = load_competition(Path(sys.argv[1]), 64, Path(sys.argv[2]), with_test=False)
assert d.caches["train"].status == "warm"
print(time.perf_counter() - t, d.caches["train"].seconds)
"""


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="competition-format directory (default: ../shared or synthetic)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed resnet18 steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        root = Path(args.data) if args.data else SHARED if SHARED.is_dir() else synthetic_default(Path(tmp))
        print(f"data: {root}  (torch threads: {args.threads})")

        cold = load_competition(root, 64, cache, with_test=False)
        n = len(cold.train.names)
        c = cold.caches["train"]
        print(f"cold decode       {c.seconds:7.3f} s   {n / c.seconds:8.0f} images/s   ({n} train images)")
        warm_runs = timed(lambda: load_competition(root, 64, cache, with_test=False), 5)
        print(f"warm load         {statistics.median(warm_runs):7.3f} s   median of 5, in-process, "
              "CSV validation included")
        fresh = subprocess.run([sys.executable, "-c", WARM_IN_FRESH_PROCESS, str(root), str(cache)],
                               capture_output=True, text=True, check=True).stdout.split()
        print(f"warm load (fresh) {float(fresh[0]):7.3f} s   new process, after imports; "
              f"cache read {float(fresh[1]):.3f} s")

        images = torch.from_numpy(cold.train.images)
        labels = torch.from_numpy(cold.train.subclass)
        augment = BatchAugment(AugmentConfig(), "cpu")
        gen = torch.Generator().manual_seed(0)

        def one_epoch_of_batches() -> int:
            count = 0
            for x, _ in iterate_batches(images, labels, args.batch_size, shuffle=True, generator=gen,
                                        device="cpu", drop_last=True):
                augment(x, gen)
                count += 1
            return count

        one_epoch_of_batches()  # warm-up
        t = time.perf_counter()
        batches = one_epoch_of_batches()
        aug_rate = batches / (time.perf_counter() - t)
        print(f"augment pipeline  {aug_rate:7.1f} batches/s   ({args.batch_size} images/batch: index, "
              "flip+rotate+zoom+shift, colour jitter, normalise)")

        import timm

        model = timm.create_model("resnet18", pretrained=False, num_classes=88)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = augment(images[: args.batch_size], gen)
        y = labels[: args.batch_size]

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        timed(step, 2)
        step_time = statistics.median(timed(step, args.steps))
        print(f"resnet18 step     {step_time:7.3f} s   median of {args.steps} (fwd+bwd+SGD, "
              f"batch {args.batch_size}, 64x64)")
        ratio = aug_rate * step_time
        print(f"ratio             {ratio:7.1f} x   augmentation batches/s ÷ training steps/s "
              f"(target ≥ 10): {'OK' if ratio >= 10 else 'TOO SLOW'}")


if __name__ == "__main__":
    run_script(main, Path(__file__).name)
