import logging
import re

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from hiertune.errors import UserError
from hiertune.models.backbone import backbone_stages, check_backbone
from hiertune.models.registry import Heads, ModelConfig, create_model, list_families
from hiertune.training.losses import LossConfig, hierarchical_loss

SUB_TO_SUPER = (0, 0, 0, 1, 1, 2, 2, 2)
FAMILIES = ("cnn", "cosine", "dualhead", "layover", "twomodel")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # On a small machine shared with other jobs, a second intra-op thread makes every op wait
    # for a busy core: these tiny models ran 10-20x slower with two threads than with one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def heads(novel_logit: bool = True) -> Heads:
    return Heads(3, len(SUB_TO_SUPER), SUB_TO_SUPER, novel_logit)


def build(family: str = "dualhead", novel_logit: bool = True, **fields) -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig.of(family, **{"outlier_mode": "class" if novel_logit else "oe", **fields})
    return create_model(config, heads(novel_logit))


def images(n: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def backbone_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.startswith("backbones.")}


def trainable_backbone(model: nn.Module) -> set[str]:
    return {n for n, p in backbone_params(model).items() if p.requires_grad}


def batchnorms(model: nn.Module, prefix: str = "") -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and n.startswith(prefix)}


def test_all_families_registered():
    assert tuple(list_families()) == FAMILIES


@pytest.mark.parametrize("novel_logit", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_output_shapes(family, novel_logit):
    model = build(family, novel_logit).eval()
    with torch.no_grad():
        out = model(images(4))
    h = heads(novel_logit)
    assert out.super_logits.shape == (4, h.super_outputs)
    assert out.sub_logits.shape == (4, h.sub_outputs)
    assert out.super_features.ndim == out.sub_features.ndim == 2
    assert len(out.super_features) == len(out.sub_features) == 4
    assert model.heads == h


# Steps, learning rate and the measured final/initial loss ratio on this batch. The layover
# backbone is frozen and random here, so its pooled features are tiny (|f| ~ 0.06) and only a
# large step size moves its small modules quickly, as in the paper's linear-probe-like setup.
LEARNING = {"cnn": (15, 1e-3),  # measured 0.018
            "cosine": (15, 1e-3),  # measured 0.001
            "dualhead": (15, 1e-3),  # measured 0.008
            "layover": (30, 3e-2),  # measured 0.21
            "twomodel": (15, 1e-3)}  # measured 0.003


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_learns_a_fixed_batch(family):
    steps, lr = LEARNING[family]
    model = build(family).train()
    x = images(8)
    super_t = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    sub_t = torch.tensor([0, 3, 5, 8, 1, 4, 6, 8])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = hierarchical_loss(model(x), super_t, sub_t, model.heads, LossConfig(kl_alpha=0.1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


RESNET_STAGES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def under(names, *prefixes) -> set[str]:
    return {n for n in names if n.removeprefix("backbones.0.").startswith(prefixes)}


def test_finetune_strategies_choose_the_trainable_parameters():
    names = set(backbone_params(build(finetune="full")))
    assert trainable_backbone(build(finetune="full")) == names
    assert trainable_backbone(build(finetune="linear")) == set()
    partial = build(finetune="partial", unfreeze_depth=2)
    assert trainable_backbone(partial) == under(names, "layer3.", "layer4.")
    assert trainable_backbone(build(finetune="partial", unfreeze_depth=5)) == names
    model = build(finetune="bn")
    norm_params = {f"{name}.{p}" for name, bn in batchnorms(model, "backbones.").items()
                   for p, _ in bn.named_parameters()}
    assert trainable_backbone(model) == norm_params and len(norm_params) == 2 * 20


def test_gradual_unfreezes_one_stage_every_few_epochs():
    model = build(finetune="gradual", unfreeze_depth=1, gradual_every=2)
    names = set(backbone_params(model))
    expected = {0: ("layer4.",), 1: ("layer4.",), 2: ("layer3.", "layer4."),
                4: ("layer2.", "layer3.", "layer4."), 7: ("layer1.", "layer2.", "layer3.", "layer4."),
                8: RESNET_STAGES, 30: RESNET_STAGES}
    for epoch, prefixes in expected.items():
        model.set_epoch(epoch)
        assert trainable_backbone(model) == under(names, *prefixes), epoch
    model.set_epoch(2)  # idempotent: only the epoch counts, not the history
    assert trainable_backbone(model) == under(names, "layer3.", "layer4.")


def train_steps(model: nn.Module, steps: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # every parameter, as train.py does
    zeros = torch.zeros(8, dtype=torch.long)
    for _ in range(steps):
        loss, _ = hierarchical_loss(model(images()), zeros, zeros, model.heads, LossConfig())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("finetune", ["linear", "partial", "bn", "gradual"])
def test_training_changes_only_trainable_parameters(finetune):
    model = build(finetune=finetune, unfreeze_depth=1).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # Two steps: timm zero-initialises each residual block's last BatchNorm, so the first step
    # has no gradient for the layers inside the block.
    train_steps(model, 2)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
    assert {"super_head.1.weight", "sub_head.1.weight"} <= changed


@pytest.mark.parametrize("backbone, n_stages, first, middle, last", [
    ("resnet18", 5, "conv1", ("layer3.0.downsample.1", 3), "layer4.1.bn2"),
    ("efficientnet_b0", 5, "conv_stem", ("blocks.3.0.conv_pw", 3), "bn2"),
    ("convnext_atto", 4, "stem.0", ("stages.2.blocks.0.conv_dw", 2), "head.norm"),
])
def test_stages_cover_the_backbone_in_order(backbone, n_stages, first, middle, last):
    model = timm.create_model(backbone, num_classes=0)
    stages = backbone_stages(model)
    names = {m: n for n, m in model.named_modules()}
    stage_names = [[names[m] for m in stage] for stage in stages]
    holders = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    assert len(stages) == n_stages
    assert sorted(n for stage in stage_names for n in stage if n in holders) == sorted(holders)
    assert first in stage_names[0]  # the stem joins the first stage
    assert middle[0] in stage_names[middle[1]]
    assert last in stage_names[-1]  # final norms join the last stage


def test_frozen_batchnorm_keeps_running_stats():
    model = build(finetune="partial", unfreeze_depth=1).train()
    frozen, trained = batchnorms(model, "backbones.0.layer1"), batchnorms(model, "backbones.0.layer4")
    stats = {n: m.running_mean.clone() for n, m in {**frozen, **trained}.items()}
    train_steps(model, 1)
    assert all(not m.training and torch.equal(m.running_mean, stats[n]) for n, m in frozen.items())
    assert all(m.training and not torch.equal(m.running_mean, stats[n]) for n, m in trained.items())
    assert model.super_head.training


def test_gradual_unfreezing_puts_batchnorm_back_in_train_mode():
    model = build(finetune="gradual", unfreeze_depth=1).train()
    layer3 = batchnorms(model, "backbones.0.layer3").values()
    assert not any(m.training for m in layer3)
    model.set_epoch(1)
    assert all(m.training for m in layer3)
    model.eval()
    assert not any(m.training for m in model.modules())


def test_layover_trains_only_its_side_branch_and_heads(caplog):
    with caplog.at_level(logging.INFO, logger="hiertune"):
        model = build("layover", finetune="full", layover_stage=1).train()
    assert "finetune=full is ignored" in caplog.text
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"summary", "gate", "super_head", "sub_head"}
    assert not any(m.training for m in model.backbones[0].modules())
    assert model.summary[0].in_features == 64  # resnet18's stage 1 (layer1) has 64 channels


def test_cnn_trains_everything_and_ignores_the_schedule():
    model = build("cnn", cnn_width=8, finetune="linear")
    model.set_epoch(3)
    assert all(p.requires_grad for p in model.parameters())
    assert model.features[0].out_channels == 8


def test_random_init_logs_training_from_scratch_and_only_training(caplog):
    from hiertune.training.config import TrialConfig
    from hiertune.training import loop

    with caplog.at_level(logging.INFO, logger="hiertune"):
        build()  # as an exported model is built before its weights load: nothing said
        assert not [r for r in caplog.records if "from scratch" in r.getMessage()]
        loop.build(TrialConfig(backbone="resnet18", pretrained=False), heads(True), torch.device("cpu"))
    assert [r.getMessage() for r in caplog.records if "from scratch" in r.getMessage()] == [
        "backbone resnet18: random initialisation, trains from scratch"]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_from_local_file(tmp_path, suffix):
    torch.manual_seed(123)
    saved = timm.create_model("resnet18").state_dict()  # with its 1000-class fc, as a hub file has
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(saved, path)
    else:
        save_file(saved, str(path))
    model = build("twomodel", pretrained=str(path))
    for backbone in model.backbones:
        loaded = backbone.state_dict()
        assert set(loaded) == set(saved) - {"fc.weight", "fc.bias"}
        assert all(torch.equal(loaded[k], saved[k]) for k in loaded)


def test_pretrained_file_missing(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(UserError, match=re.escape(f"not found: {path}")):
        build(pretrained=str(path))


def _renamed(sd):
    return {f"encoder.{k}": v for k, v in sd.items()}


def _reshaped(sd):
    return {**sd, "conv1.weight": torch.zeros(64, 3, 3, 3)}


@pytest.mark.parametrize("corrupt", [_renamed, _reshaped, None])
def test_pretrained_file_that_does_not_fit(tmp_path, corrupt):
    path = tmp_path / "weights.pth"
    if corrupt is None:
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save(corrupt(timm.create_model("resnet18").state_dict()), path)
    with pytest.raises(UserError, match="does not fit backbone 'resnet18'") as err:
        build(pretrained=str(path))
    assert "\n" not in str(err.value)


def test_pretrained_true_offline_is_one_user_error(monkeypatch, tmp_path):
    # huggingface_hub reads these at import; patching its constants keeps every request off the
    # network and an existing local cache out of the way.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="pretrained=True: cannot get timm's weights for 'resnet18'") as err:
        build(pretrained=True)
    assert "\n" not in str(err.value)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UserError, match=r"^unknown backbone 'resnet81' \(did you mean 'resnet18'\?\)$"):
        build(backbone="resnet81")
    with pytest.raises(UserError, match=r"^unknown family 'dualhaed' \(did you mean 'dualhead'\?\)$"):
        build("dualhaed")
    check_backbone("convnext_atto")


@pytest.mark.parametrize("family, fields, field", [
    ("dualhead", dict(finetune="partly"), "finetune"),
    ("cnn", dict(outlier_mode="uniform"), "outlier_mode"),
    ("layover", dict(finetune="fulll"), "finetune"),
    ("dualhead", dict(finetune="partial", unfreeze_depth=6), "unfreeze_depth"),
    ("twomodel", dict(finetune="gradual", gradual_every=0), "gradual_every"),
    ("dualhead", dict(dropout=1.5), "dropout"),
    ("layover", dict(layover_stage=5), "layover_stage"),
    ("cosine", dict(cosine_scale=0.0), "cosine_scale"),
])
def test_bad_fields_are_one_line_user_errors(family, fields, field):
    with pytest.raises(UserError, match=f"^(unknown )?{field} ") as err:
        build(family, **fields)
    assert "\n" not in str(err.value)
