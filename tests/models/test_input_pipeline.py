"""The backbone's own input pipeline: normalisation from timm's pretrained_cfg, the input size
reached on the device, and an exported model that predicts exactly as evaluation did."""

import json
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from hiertune.training.config import TrialConfig
from hiertune.data.augment import AugmentConfig, BatchAugment
from hiertune.data.dataset import write_mapping
from hiertune.errors import UserError
from hiertune.models.registry import Heads, create_model
from hiertune.export.predictor import CONFIG, MODEL, SUB_MAP, SUPER_MAP, THRESHOLDS, ExportedModel, write_config
from hiertune.training.features import FeatureStore
from hiertune.training.loop import forward_all
from hiertune.training.inputs import ImageInputs

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HEADS = Heads(2, 4, (0, 0, 1, 1), novel_logit=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family, backbone, pretrained, mean, std, interpolation", [
    ("dualhead", "tf_efficientnet_lite0", True, (0.5,) * 3, (0.5,) * 3, "bicubic"),
    ("twomodel", "tf_efficientnet_lite2", False, (0.5,) * 3, (0.5,) * 3, "bicubic"),
    ("dualhead", "resnet50", True, *IMAGENET, "bicubic"),
    ("cosine", "resnet18", False, *IMAGENET, "bicubic"),
    ("cnn", "tf_efficientnet_lite0", False, (0.5,) * 3, (0.5,) * 3, "bilinear"),  # the cnn keeps its own
])
def test_normalisation_follows_the_backbone(family, backbone, pretrained, mean, std, interpolation):
    cfg = TrialConfig(family=family, backbone=backbone, pretrained=pretrained, image_size=128)
    for aug in (cfg.augment_config(), TrialConfig(**{**cfg.to_dict(), "augment": False}).augment_config()):
        assert aug.mean == pytest.approx(mean) and aug.std == pytest.approx(std)
        assert (aug.interpolation, aug.size) == (interpolation, 128)


@pytest.mark.parametrize("train", [True, False])
def test_image_size_is_reached_on_the_device(train):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    up = BatchAugment(AugmentConfig(size=128, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3), "cpu")
    out = up(x, torch.Generator().manual_seed(0), train=train)
    assert out.shape == (3, 3, 128, 128)
    if not train:  # evaluation: exactly the resize, then the backbone's normalisation
        pixels = x.permute(0, 3, 1, 2).float() / 255
        expected = F.interpolate(pixels, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
        assert torch.allclose(out, (expected - 0.5) / 0.5, atol=1e-5)
    same = BatchAugment(AugmentConfig.none(size=64), "cpu")(x, train=False)
    assert torch.allclose(same, BatchAugment(AugmentConfig.none(), "cpu")(x, train=False))
    down = BatchAugment(AugmentConfig.none(size=32), "cpu")(x, train=False)
    assert down.shape == (3, 3, 32, 32)


def test_bad_pipeline_is_one_line():
    with pytest.raises(UserError, match="augment.interpolation must be one of bilinear, bicubic, got 'lanczos'"):
        AugmentConfig(interpolation="lanczos")
    with pytest.raises(UserError, match="augment.size must be an integer >= 0"):
        AugmentConfig(size=-1)


def export_dir(root, cfg: TrialConfig):
    """A model directory as export writes it, from an untrained model."""
    torch.manual_seed(0)
    model = create_model(cfg.model_config(), HEADS).eval()
    root.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / MODEL))
    write_config(root, cfg, HEADS)
    (root / THRESHOLDS).write_text(json.dumps({"score": "msp", "thr_super": 0.5, "thr_sub": 0.5}))
    write_mapping(root / SUPER_MAP, ["a", "b"])
    write_mapping(root / SUB_MAP, ["a1", "a2", "b1", "b2"])
    return model


@pytest.mark.parametrize("family, backbone", [("dualhead", "tf_efficientnet_lite0"), ("cnn", "resnet18")])
def test_predict_applies_what_evaluation_applied(tmp_path, family, backbone):
    cfg = TrialConfig(family=family, backbone=backbone, image_size=96, cnn_width=8, device="cpu")
    model = export_dir(tmp_path / "m", cfg)
    images = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    evaluated = forward_all(model, ImageInputs(torch.from_numpy(images), BatchAugment(cfg.augment_config(), "cpu")),
                            torch.device("cpu"), nullcontext)
    exported = ExportedModel.load(tmp_path / "m", device="cpu")
    assert exported.augment.config.pipeline() == cfg.augment_config().pipeline()
    assert json.loads((tmp_path / "m" / CONFIG).read_text())["input"]["size"] == 96
    _, p_super, p_sub = exported.level_scores(images)
    assert np.allclose(p_super, evaluated.super_logits.softmax(1).numpy(), atol=1e-6)
    assert np.allclose(p_sub, evaluated.sub_logits.softmax(1).numpy(), atol=1e-6)
    # The predictor reads the pipeline from the directory, not from this timm: a model trained
    # at another size predicts at that size (the trial's size says the same, or it is refused).
    raw = json.loads((tmp_path / "m" / CONFIG).read_text())
    raw["input"]["size"] = 64
    (tmp_path / "m" / CONFIG).write_text(json.dumps(raw))
    with pytest.raises(UserError, match="input.size 64 does not match trial.image_size 96"):
        ExportedModel.load(tmp_path / "m", device="cpu")
    raw["trial"]["image_size"] = 64
    (tmp_path / "m" / CONFIG).write_text(json.dumps(raw))
    _, p_super_64, _ = ExportedModel.load(tmp_path / "m", device="cpu").level_scores(images)
    assert not np.allclose(p_super_64, p_super, atol=1e-6)


def test_exported_config_without_a_pipeline_is_one_line(tmp_path):
    cfg = TrialConfig(family="cnn", cnn_width=8, device="cpu")
    export_dir(tmp_path / "m", cfg)
    raw = json.loads((tmp_path / "m" / CONFIG).read_text())
    raw["input"]["interpolation"] = "lanczos"
    (tmp_path / "m" / CONFIG).write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"config.json: no usable input pipeline .*lanczos") as err:
        ExportedModel.load(tmp_path / "m", device="cpu")
    assert "\n" not in str(err.value)


def test_a_frozen_backbone_predicts_through_the_feature_cache(tmp_path):
    """export and predict read (and fill) the disk cache of the frozen backbone's features: the
    same predictions as through the images, and a second run does not compute them again."""
    cfg = TrialConfig(family="dualhead", backbone="resnet10t", finetune="linear", image_size=48, device="cpu")
    export_dir(tmp_path / "m", cfg)
    images = np.random.default_rng(2).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    through_images = ExportedModel.load(tmp_path / "m", device="cpu").level_scores(images)
    first = FeatureStore(tmp_path / "cache")
    cached = ExportedModel.load(tmp_path / "m", device="cpu", features=first).level_scores(images)
    again = FeatureStore(tmp_path / "cache")
    reread = ExportedModel.load(tmp_path / "m", device="cpu", features=again).level_scores(images)
    assert first.computed == 1 and again.computed == 0
    for got in (cached, reread):
        np.testing.assert_allclose(got[1], through_images[1], atol=1e-6)
        np.testing.assert_allclose(got[2], through_images[2], atol=1e-6)
        torch.testing.assert_close(got[0].sub_score, through_images[0].sub_score, atol=1e-6, rtol=1e-5)
