"""A frozen backbone's features, computed once and reused by every epoch and every trial.

A trial whose backbone never trains (finetune linear; layover) would run the same backbone
forward pass on the same images every epoch, and every such trial of a sweep would repeat it.
Instead the backbone's outputs that the heads read (`model.frozen_features`) are computed once per
image pool (the labeled images, the outliers, validation's seen_shifted images) and cached on disk under the cache root, keyed by
a sha256 over everything they depend on: what the frozen part computes (family, layover stage),
the digest of its weights, the input pipeline (the augmentation config's evaluation view: mean,
std, and whatever else the config gains, such as an input size; all of it with augmented
views), the image size, the number of views and their seed, the pixels' digest and the numeric
precision. The pools are then joined into one array per feature, whose rows a trial's split
indexes in the order `assemble` lays images out, and only the heads train
(hiertune.training.inputs.FeatureInputs). Training corruptions (corrupt_p) read corrupted views
of the training pools, cached under keys of their own.

In a sweep the driver computes the base configuration's features and their joined layout before
trials start, and the layout travels with the data bundle through Ray's object store
(`FeatureStore.for_trials`), where trials read it in place; a trial whose key
differs (another backbone, seed or input size) reads or fills the disk cache on its node. Export
and predict read the same cache for the images they run a frozen backbone on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hiertune.data.augment import AugmentConfig, BatchAugment
from hiertune.data.bundle import DataBundle
from hiertune.data.corrupt import corrupt_batch
from hiertune.data.splits import take_rows
from hiertune.fsutil import atomic_file
from hiertune.progress import Progress
from hiertune.training.feature_check import DIGEST_KEY, content_digest, problem
from hiertune.training.inputs import FeatureInputs, ImageInputs

log = logging.getLogger("hiertune")

FEATURE_VERSION = "1"
VIEW_SEED = 0  # augmented views do not depend on the trial's seed, so trials share them
Pools = dict[str, np.ndarray]  # pool name ("labeled", "outliers", "shifted") -> uint8 images
# Pools that only validation reads: their clean view is all a trial uses, so only it is computed.
EVAL_POOLS = ("shifted",)


def bundle_pools(bundle: DataBundle) -> Pools:
    pools = {"labeled": bundle.data.train.images}
    if bundle.outliers is not None:
        pools["outliers"] = bundle.outliers.images
    if bundle.shifted is not None:
        pools["shifted"] = bundle.shifted.images
    return pools


def images_digest(images: np.ndarray) -> str:
    h = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


FROZEN_PART = "backbones."  # the state_dict prefix of what a frozen backbone freezes


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the frozen part's tensors (names, dtypes, shapes and values), BatchNorm
    statistics included: it identifies random, hub and local weights alike."""
    h = hashlib.sha256()
    for name, t in model.backbones.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def view_settings(config: AugmentConfig, views: int) -> dict:
    """The augmentation settings the views depend on: with one (clean) view only those that
    augmentation-off shares with the default, i.e. normalisation and any input geometry."""
    settings = asdict(config)
    if views == 1:
        off, on = asdict(AugmentConfig.none()), asdict(AugmentConfig())
        settings = {k: v for k, v in settings.items() if off[k] == on[k]}
    return settings


def feature_key(model: torch.nn.Module, weights: str, augment: AugmentConfig, image_size: int, views: int,
                images: str, precision: str) -> str:
    parts = {"version": FEATURE_VERSION, "model": model.frozen_spec(), "weights": weights,
             "view": view_settings(augment, views), "image_size": image_size, "views": views,
             "view_seed": VIEW_SEED, "images": images, "precision": precision}
    if views > 1:  # augmented views drawn per DRAW_BLOCK (block_generator), not from one stream
        parts["draws"] = f"block{DRAW_BLOCK}"
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()


DRAW_BLOCK = 256  # images per random draw of the views: the unit the workers split and the seeds follow


def block_generator(device: torch.device, block: int, corrupted: bool = False) -> torch.Generator:
    """The generator of one DRAW_BLOCK's view draws: seeded by VIEW_SEED and the block's index
    (and apart for corrupted views), so the views do not depend on how blocks are split across
    workers or batched."""
    seed = int(np.random.SeedSequence([VIEW_SEED, block, *([1] if corrupted else [])]).generate_state(1)[0])
    return torch.Generator(device).manual_seed(seed)


@torch.no_grad()
def extract(model: torch.nn.Module, images: np.ndarray, augment: BatchAugment, views: int, device: torch.device,
            autocast: Callable, workers: int | None = None, label: str = "images", threads: int = 1,
            corruption: Corruption | None = None) -> dict[str, np.ndarray]:
    """`model.frozen_features` of every image: name -> [N, views, ...] float32 on the CPU.

    View 0 is preprocessed as evaluation does (`augment(..., train=False)`, the call the
    validation pass and predict make), so normalisation and input size follow the trial's
    `BatchAugment`; views 1.. through its training augmentation, drawn per DRAW_BLOCK of images
    (block_generator). With a `corruption` every view is a corrupted one, each image given one
    of the training corruptions (corrupt_batch) before the preprocessing, augmented or not as
    the corruption says. On the CPU the blocks are split across `workers` threads (default: torch's
    thread count), each running the backbone on `threads` torch threads (1: data parallelism
    scales better than torch's own intra-op threads on the small convolutions of mobile backbones). On a GPU one
    thread sends batches of as many blocks as its free memory holds."""
    model.eval()
    n = len(images)
    blocks = [(b, slice(i, min(i + DRAW_BLOCK, n))) for b, i in enumerate(range(0, n, DRAW_BLOCK))]
    progress = Progress(f"features of {label}", n)

    def run(batch: list[tuple[int, slice]]) -> dict[str, torch.Tensor]:
        # Each block draws from its own generator, so a batch of several blocks gives what the
        # blocks one at a time would.
        gens = [block_generator(device, b, corruption is not None) for b, _ in batch]
        # A copy: the pool may be a read-only array from Ray's object store.
        xbs = [torch.tensor(images[s], device=device) for _, s in batch]
        per_view = []
        for k in range(views):
            if corruption is None:
                x = torch.cat([augment(xb, gen, train=k > 0) for xb, gen in zip(xbs, gens)])
            else:
                x = torch.cat([augment(corrupt_batch(xb, 1.0, corruption.severity, gen), gen,
                                       train=corruption.augmented) for xb, gen in zip(xbs, gens)])
            with autocast():
                per_view.append(model.frozen_features(x))
        out = {name: torch.stack([v[name].float() for v in per_view], dim=1).cpu() for name in per_view[0]}
        progress.add(sum(map(len, xbs)))
        return out

    if device.type == "cuda":
        # As many blocks per batch as the free memory holds, sized by the first block's peak.
        torch.cuda.reset_peak_memory_stats(device)
        before, (free, _) = torch.cuda.memory_allocated(device), torch.cuda.mem_get_info(device)
        parts = [run(blocks[:1])]
        size = max(1, int(0.6 * free // max(1, torch.cuda.max_memory_allocated(device) - before)))
        parts += [run(blocks[i:i + size]) for i in range(1, len(blocks), size)]
    else:
        workers = max(1, min(workers or torch.get_num_threads(), len(blocks)))
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            # torch's thread count is per OS thread under OpenMP: each worker sets its own.
            with ThreadPoolExecutor(workers, thread_name_prefix="hiertune-extract",
                                    initializer=torch.set_num_threads, initargs=(threads,)) as pool:
                parts = list(pool.map(lambda block: run([block]), blocks))
        finally:
            torch.set_num_threads(before)
    progress.close()
    return {name: torch.cat([p[name] for p in parts]).numpy() for name in parts[0]}


@dataclass
class FeatureStore:
    """Where a trial gets frozen features. `sets` (key -> name -> [N, views, ...]) holds the
    pools' features read or computed here; other keys are read from, or computed into,
    `cache_root`/features (None: computed, kept in memory for this process only). `layouts` holds
    pools joined for trials to index (`frozen_inputs`): what the sweep's driver laid out reaches
    its trials with the bundle through Ray's object store (`for_trials`). `digests` memoises the
    image pools' sha256 (the driver's travel too)."""

    cache_root: Path | None = None
    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    layouts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    computed: int = 0  # image pools this store ran through the backbone (tests and logs read it)

    def for_trials(self) -> FeatureStore:
        """What trials read: the joined layouts and the digests, not the pools they were joined
        from (which would double what Ray's object store holds and copies)."""
        return FeatureStore(self.cache_root, layouts=self.layouts, digests=self.digests)

    def digest(self, pool: str, images: np.ndarray) -> str:
        if pool not in self.digests:
            self.digests[pool] = images_digest(images)
        return self.digests[pool]

    def path(self, key: str) -> Path | None:
        return self.cache_root / "features" / f"{key}.safetensors" if self.cache_root is not None else None

    def get(self, key: str, n: int, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The features under `key` for `n` images: shared, on disk, or computed (and saved)."""
        if key in self.sets:
            return self.sets[key]
        path = self.path(key)
        found = _read(path, key, n) if path is not None and path.exists() else None
        if found is None:
            found = self._compute(key, compute)
        self.sets[key] = found
        return found

    def fill(self, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> None:
        """Computes the features under `key` into the disk cache unless a file is there, keeping
        nothing here: for another process to read (an export's test set). A damaged file is its
        reader's to replace (`get`)."""
        path = self.path(key)
        if path is not None and not path.exists():
            self._compute(key, compute)

    def _compute(self, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        found = compute()
        self.computed += 1
        if (path := self.path(key)) is not None:
            with atomic_file(path) as tmp:
                save_file({name: torch.from_numpy(a) for name, a in found.items()}, tmp,
                          metadata={"key": key, DIGEST_KEY: content_digest(found)})
        return found


def _read(path: Path, key: str, n: int) -> dict[str, np.ndarray] | None:
    """A cache file's arrays, or None (with one warning line) when it is damaged or foreign:
    it is only a cache, so the fix is to compute it again, which overwrites it."""
    try:
        with safe_open(str(path), framework="np") as f:
            if (f.metadata() or {}).get("key") != key:
                raise ValueError("written for another key")
            arrays = {name: f.get_tensor(name) for name in f.keys()}
            metadata = f.metadata()
        if not arrays or any(a.ndim < 2 or a.shape[0] != n or a.dtype != np.float32 for a in arrays.values()):
            raise ValueError(f"not [{n}, views, ...] float32 arrays")
        if reason := problem(arrays, metadata):
            raise ValueError(reason)
        return arrays
    except (OSError, ValueError, SafetensorError) as exc:
        log.warning("feature cache %s unusable (%s); computing it again", path, " ".join(str(exc).split())[:160])
        return None


@dataclass(frozen=True)
class Corruption:
    """Corrupted views of the training pools: `views` per image at `severity`, through the
    training augmentation when the trial's own views are augmented."""

    views: int
    severity: float
    augmented: bool


def pool_keys(model: torch.nn.Module, pools: Pools, augment: BatchAugment, image_size: int, views: int,
              precision: str, store: FeatureStore, corruption: Corruption | None = None
              ) -> dict[str, tuple[str, str | None]]:
    """Each pool's cache key, and with a `corruption` the key of a training pool's corrupted views."""
    weights = weights_digest(model)
    keys = {}
    for pool, images in pools.items():
        n_views = 1 if pool in EVAL_POOLS else views
        clean = feature_key(model, weights, augment.config, image_size, n_views, store.digest(pool, images), precision)
        keys[pool] = (clean, corruption_key(clean, corruption)
                      if corruption is not None and pool not in EVAL_POOLS else None)
    return keys


def pool_features(model: torch.nn.Module, pools: Pools, augment: BatchAugment, image_size: int, views: int,
                  device: torch.device, autocast: Callable, precision: str, store: FeatureStore,
                  corruption: Corruption | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Each pool's frozen features (pool -> name -> [N, views, ...]), through `store`; with a
    `corruption`, the training pools' corrupted views follow their own views on axis 1, cached
    under keys of their own (the clean pools' keys stay as they are)."""
    keys = pool_keys(model, pools, augment, image_size, views, precision, store, corruption)
    out = {}
    for pool, images in pools.items():
        (clean, bad), n_views = keys[pool], 1 if pool in EVAL_POOLS else views
        out[pool] = store.get(clean, len(images), lambda: extract(
            model, images, augment, n_views, device, autocast, label=f"{pool} ({len(images)} images)"))
        if bad is not None:
            extra = store.get(bad, len(images), lambda: extract(
                model, images, augment, corruption.views, device, autocast, corruption=corruption,
                label=f"{pool}, corrupted ({len(images)} images)"))
            out[pool] = {name: np.concatenate([a, extra[name]], axis=1) for name, a in out[pool].items()}
    return out


def image_features(model: torch.nn.Module, images: np.ndarray, augment: BatchAugment, image_size: int, views: int,
                   device: torch.device, autocast: Callable, precision: str, store: FeatureStore, label: str,
                   keep: bool = True) -> dict[str, np.ndarray] | None:
    """The frozen features of `images` (name -> [N, views, ...]) through `store`: the images
    export and predict run a model with a frozen backbone on. `keep` False: only into the disk
    cache, for another process (returns None)."""
    key = feature_key(model, weights_digest(model), augment.config, image_size, views, images_digest(images),
                      precision)
    compute = lambda: extract(model, images, augment, views, device, autocast,  # noqa: E731
                              label=f"{label} ({len(images)} images)")
    if not keep:
        store.fill(key, compute)
        return None
    return store.get(key, len(images), compute)


def predict_inputs(model: torch.nn.Module, images: np.ndarray, augment: BatchAugment, image_size: int,
                   device: torch.device, autocast: Callable, precision: str, store: FeatureStore | None,
                   label: str) -> FeatureInputs | ImageInputs:
    """What `model` reads to predict `images` (evaluation's view): with a frozen backbone and a
    `store`, their features, read from and kept in its cache (a test set or a test-time view runs
    through the backbone once); otherwise the images themselves."""
    if store is not None and getattr(model, "backbone_frozen", False):
        feats = image_features(model, images, augment, image_size, 1, device, autocast, precision, store, label)
        return FeatureInputs({name: torch.from_numpy(a) for name, a in feats.items()}, device)
    return ImageInputs(torch.from_numpy(np.ascontiguousarray(images)), augment)


def corruption_key(views_key: str, corruption: Corruption) -> str:
    """The key of corrupted views: those of the pool's own views (model, weights, pipeline,
    augmentation, data, precision) and what the corruption adds."""
    parts = {"views": views_key, "corruption": asdict(corruption), "draws": f"block{DRAW_BLOCK}"}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def joined_pools(feats: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every pool's rows in one array per feature name ([labeled + shifted + outliers, views,
    ...]), which a trial's training and validation rows index without copying: the shifted pool's
    one clean view is repeated over the training views, so the photos that train read it as every
    view."""
    order = [pool for pool in ("labeled", "shifted", "outliers") if pool in feats]
    views = feats["labeled"][next(iter(feats["labeled"]))].shape[1]
    return {name: np.concatenate([np.broadcast_to(feats[pool][name][:, :1], (len(feats[pool][name]), views,
                                                                          *feats[pool][name].shape[2:]))
                                  if pool in EVAL_POOLS else feats[pool][name] for pool in order])
            for name in feats["labeled"]}


def frozen_inputs(model: torch.nn.Module, bundle: DataBundle, count: int | None, fraction: float | None,
                  augment: BatchAugment, image_size: int, views: int, device: torch.device, autocast: Callable,
                  precision: str, store: FeatureStore, corruption: Corruption | None = None,
                  corrupt_p: float = 0.0) -> tuple[FeatureInputs, FeatureInputs] | None:
    """A trial's training and validation inputs as cached features, or None when it has to go
    through the backbone: the backbone trains (some epoch), or views is 0. With a `corruption`,
    training draws a corrupted view for a share `corrupt_p` of images each epoch.

    Both index one joined array of every pool (`joined_pools`), kept in `store.layouts` under a
    key of the pools' keys: a sweep's driver lays it out once and its trials read it from Ray's
    object store as it is (a trial that copied its rows out spent up to seconds there)."""
    if views == 0 or not getattr(model, "backbone_frozen", False):
        return None
    pools = bundle_pools(bundle)
    keys = pool_keys(model, pools, augment, image_size, views, precision, store, corruption)
    layout = hashlib.sha256(json.dumps(["joined", keys], sort_keys=True).encode()).hexdigest()
    if layout not in store.layouts:
        store.layouts[layout] = joined_pools(pool_features(model, pools, augment, image_size, views, device,
                                                           autocast, precision, store, corruption))
    with warnings.catch_warnings():  # read-only when read from Ray's object store: nothing writes features
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        joined = {name: torch.from_numpy(a).to(device) for name, a in store.layouts[layout].items()}
    # The rows take_rows would copy out, as indices into the joined pools (its order is the layout's).
    labeled = np.arange(len(pools["labeled"]))
    shifted = len(labeled) + np.arange(len(pools.get("shifted", ())))
    outliers = len(labeled) + len(shifted) + np.arange(len(pools["outliers"])) if "outliers" in pools else None
    train_rows, val_rows = take_rows(labeled, outliers, bundle.trial_splits(count, fraction),
                                     shifted[bundle.shifted.val_rows] if bundle.shifted is not None else None,
                                     shifted[bundle.shifted.train_rows] if bundle.shifted is not None else None)
    corrupted = corruption.views if corruption is not None else 0
    return (FeatureInputs(joined, device, corrupted, corrupt_p, torch.from_numpy(train_rows)),
            FeatureInputs(joined, device, corrupted, index=torch.from_numpy(val_rows)))
