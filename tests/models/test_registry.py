"""The family registry: what every family declares (a contract over each one), what registering
checks, and the one answer to "is the backbone frozen"."""

from dataclasses import FrozenInstanceError, dataclass, fields, is_dataclass

import pytest
import torch
from torch import nn

from hiertune.errors import UserError
from hiertune.models import registry
from hiertune.models.registry import (FINETUNE_STRATEGIES, Heads, ModelConfig, NoSettings, create_model, family,
                                      family_settings, list_families, register_family)
from hiertune.training.config import TrialConfig

HEADS = Heads(2, 4, (0, 0, 1, 1), novel_logit=True)
SMALL = dict(backbone="resnet10t", cnn_width=4, layover_hidden=8)  # small enough to build every family fast


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list_families())
class TestEveryFamily:
    def test_settings_are_a_frozen_dataclass_of_trial_settings_with_defaults(self, name):
        settings = family(name).settings
        assert is_dataclass(settings) and settings.__dataclass_params__.frozen
        instance = settings()  # every field has its default
        if fields(settings):
            with pytest.raises(FrozenInstanceError):
                setattr(instance, fields(settings)[0].name, 0)
        trial = {f.name: f.default for f in fields(TrialConfig)}
        for f in fields(settings):  # TrialConfig carries each of them, with the family's default
            assert trial[f.name] == f.default

    def test_its_own_settings_are_used_and_no_other_familys(self, name):
        used = TrialConfig(family=name).used_settings()
        own = {f.name for f in fields(family(name).settings)}
        others = {f.name for s in family_settings() for f in fields(s)} - own
        assert own <= used.keys() and not others & used.keys()
        assert ("backbone" in used) == family(name).uses_backbone
        assert ("kl_alpha" in used) == family(name).kl_loss

    def test_input_pipeline_is_a_normalisation(self, name):
        pipeline = family(name).input_pipeline(ModelConfig.of(name, backbone="resnet10t"))
        assert len(pipeline["mean"]) == len(pipeline["std"]) == 3 and all(s > 0 for s in pipeline["std"])
        augment = TrialConfig(family=name, backbone="resnet10t", image_size=48).augment_config()
        assert (augment.mean, augment.std, augment.size) == (tuple(pipeline["mean"]), tuple(pipeline["std"]), 48)

    def test_builds_a_model_whose_traits_hold(self, name):
        torch.manual_seed(0)
        cfg = TrialConfig(family=name, finetune="full", **SMALL)
        model = create_model(cfg.model_config(), HEADS).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, 32, 32))
        assert out.super_logits.shape == (2, 3) and out.sub_logits.shape == (2, 5)
        spec = family(name)
        assert getattr(model, "backbone_frozen", False) == cfg.model_config().backbone_frozen == spec.always_frozen
        assert hasattr(model, "backbones") == spec.uses_backbone
        # The KL term reaches the loss only where the family declares it.
        assert (cfg.loss_config().kl_alpha > 0) == spec.kl_loss

    def test_a_bad_own_setting_is_one_line_before_training(self, name):
        """Refused by TrialConfig (the family's Settings), or, for what needs the backbone (layover's
        stage against its stage count), when the model is built: never a traceback in training."""
        for f in fields(family(name).settings):
            with pytest.raises(UserError, match=f"^{f.name} ") as err:
                create_model(TrialConfig(family=name, **{**SMALL, f.name: -10**9}).model_config(), HEADS)
            assert "\n" not in str(err.value)


@pytest.mark.parametrize("finetune, depth", [(f, 0) for f in FINETUNE_STRATEGIES] + [("partial", 1)])
@pytest.mark.parametrize("name", list_families())
def test_backbone_frozen_is_one_answer(name, finetune, depth):
    """The config's answer (what the sweep's shared features and its cost estimate read) is the
    built model's, and it holds: no backbone parameter can train."""
    cfg = TrialConfig(family=name, finetune=finetune, unfreeze_depth=depth, **SMALL).model_config()
    model = create_model(cfg, HEADS)
    assert getattr(model, "backbone_frozen", False) == cfg.backbone_frozen
    if cfg.backbone_frozen:
        for epoch in range(3):
            model.set_epoch(epoch)
            assert not any(p.requires_grad for p in model.backbones.parameters())
    expected = family(name).uses_backbone and (
        family(name).always_frozen or finetune == "linear" or (finetune == "partial" and depth == 0))
    assert cfg.backbone_frozen == expected


def test_unknown_family_is_one_line_with_the_closest():
    with pytest.raises(UserError, match=r"^unknown family 'dualhaed' \(did you mean 'dualhead'\?\)$"):
        family("dualhaed")
    with pytest.raises(UserError, match="^unknown family"):
        TrialConfig(family="nope")


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))


class _Plain(nn.Module):
    @classmethod
    def input_pipeline(cls, config):
        return {"mean": (0.5,) * 3, "std": (0.5,) * 3}


def test_registering_checks_what_a_family_declares(scratch_registry):
    with pytest.raises(ValueError, match="registered twice"):
        register_family("cnn")(_Plain)

    @dataclass  # not frozen
    class Loose:
        width: int = 1

    with pytest.raises(TypeError, match="frozen dataclass"):
        register_family("loose")(type("Loose", (_Plain,), {"Settings": Loose}))

    @dataclass(frozen=True)
    class NoDefault:
        width: int

    with pytest.raises(TypeError, match="'width' needs a default"):
        register_family("nodefault")(type("NoDefault", (_Plain,), {"Settings": NoDefault}))

    @dataclass(frozen=True)
    class Clash:
        cnn_width: int = 3

    with pytest.raises(TypeError, match="'cnn_width' is already family 'cnn'"):
        register_family("clash")(type("Clash", (_Plain,), {"Settings": Clash}))

    with pytest.raises(TypeError, match="input_pipeline"):
        register_family("nopipeline")(nn.Module)


def test_a_registered_family_is_listed_with_its_declared_traits(scratch_registry):
    register_family("plain")(type("Plain", (_Plain,), {"uses_backbone": False}))
    spec = family("plain")
    assert "plain" in list_families() and spec.settings is NoSettings
    assert (spec.uses_backbone, spec.always_frozen, spec.kl_loss) == (False, False, False)
    assert not ModelConfig.of("plain", finetune="linear").backbone_frozen  # no backbone to freeze


def test_model_config_checks_its_settings_type():
    with pytest.raises(TypeError, match="CNNSettings"):
        ModelConfig("cnn", settings=NoSettings())
