"""`--resume` continues a sweep as it was started: the same space file and command-line settings,
the same data (checked by digest), the same image cache.

`sweep.json` records them when the sweep starts (hiertune.sweep.state.SweepMeta); a resume rebuilds
the space from them, so `hiertune sweep --name NAME --resume` is the whole command. A flag given
again must say what was recorded: anything else is refused in one line, as is data whose pixels
changed since (new trials would train on other images than the ones they are compared with).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from hiertune import storage
from hiertune.data.bundle import DataBundle
from hiertune.errors import UserError
from hiertune.sweep.space import SearchSpace, load_space
from hiertune.sweep.state import SweepMeta

# --set's spelling of each flag, for the one line that refuses it.
FLAGS = {"data": "--data", "outliers": "--outliers", "shifted_data": "--shifted-data", "budget": "--budget",
         "tune.num_samples": "--num-samples"}
PATH_KEYS = ("data", "outliers", "shifted_data")


def absolute_paths(overrides: dict) -> dict:
    """Local data folders as absolute paths: a resume may run from another folder."""
    out = dict(overrides)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and not storage.is_s3(value) and Path(value).exists():
            out[key] = str(Path(value).resolve())
    return out


def _spelt(key: str, value) -> str:
    """A setting as the command line gives it: `--data DIR`, `--set lr=0.1`."""
    return f"{FLAGS[key]} {value}" if key in FLAGS else f"--set {key}={value}"


def data_inputs(bundle: DataBundle) -> dict:
    """What the sweep's trials train and validate on: sources, sizes, and the pixels' digests."""
    digests = {"labeled": _digest(bundle.data.train.images)}
    if bundle.outliers is not None:
        digests["outliers"] = _digest(bundle.outliers.images)
    if bundle.shifted is not None:
        digests["seen_shifted"] = _digest(bundle.shifted.images)
    return {**bundle.summary(), "digests": digests}


def _digest(images) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def check_same_data(recorded: dict | None, bundle: DataBundle, name: str) -> None:
    if recorded is None:  # a sweep from before the data was recorded
        return
    now = data_inputs(bundle)
    for key in ("data", "outliers", "shifted_source", "labeled", "train", "val", "pseudo_novel_subclasses",
                "outlier_train", "outlier_val", "seen_shifted"):
        if recorded.get(key) != now.get(key):
            raise UserError(f"sweep {name!r} was started on {key} {recorded.get(key)!r}, and this resume would "
                            f"use {now.get(key)!r}; resume it where its data is, or start a new --name")
    for pool, digest in (recorded.get("digests") or {}).items():
        if now["digests"].get(pool) != digest:
            raise UserError(f"sweep {name!r}: its {pool} images changed since it started (sha256 {digest[:12]}... "
                            f"then, {now['digests'].get(pool, 'none')[:12]}... now); start a new --name")


def resumed_space(meta: SweepMeta, name: str, space_arg: str | None, given: dict, cache_dir: str | None
                  ) -> tuple[SearchSpace, dict]:
    """The space the sweep was started with, from its record, and the recorded overrides; a flag
    given now that says otherwise is refused."""
    recorded = meta.overrides or {}
    if space_arg is not None and Path(space_arg).resolve() != Path(meta.space).resolve():
        raise UserError(f"sweep {name!r} was started with {meta.space}, not {space_arg}; --resume continues it "
                        "as started (leave the space out, or start a new --name)")
    for key, value in absolute_paths(given).items():
        if key not in recorded or recorded[key] != value:
            was = _spelt(key, recorded[key]) if key in recorded else f"no {FLAGS.get(key, f'--set {key}')}"
            raise UserError(f"{_spelt(key, value)}: sweep {name!r} was started with {was}; --resume continues it "
                            "as started (leave the flag out, or start a new --name)")
    if cache_dir is not None and meta.cache_dir is not None and Path(cache_dir).resolve() != Path(meta.cache_dir):
        raise UserError(f"--cache-dir {cache_dir}: sweep {name!r} was started with --cache-dir {meta.cache_dir}; "
                        "leave the flag out")
    space = load_space(meta.space)
    return (space.with_overrides(recorded) if recorded else space), recorded
