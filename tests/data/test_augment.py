import pytest
import torch
import torchvision.transforms.functional as TF

from hiertune.data.augment import AugmentConfig, BatchAugment, adjust_colour_
from hiertune.data.batches import iterate_batches, num_batches
from hiertune.errors import UserError

CPU = torch.device("cpu")
MEAN = torch.tensor(AugmentConfig().mean).view(1, 3, 1, 1)
STD = torch.tensor(AugmentConfig().std).view(1, 3, 1, 1)
NO_GEOMETRY = dict(hflip=0.0, rotation=0.0, scale=(1.0, 1.0), translate=0.0)
NO_COLOUR = dict(brightness=0.0, contrast=0.0, saturation=0.0)


def random_batch(b=4, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=g)


def smooth_batch(b=8, h=64, w=64):
    # Smooth and asymmetric: a sub-pixel move barely changes a pixel, a rotation visibly does.
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([x, y, (x * y) ** 0.5], dim=-1) * 255
    return img.round().to(torch.uint8).expand(b, h, w, 3).contiguous()


def normalised(batch_u8):
    return (batch_u8.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def unnormalise(out):
    return out * STD + MEAN


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_none_is_exact_normalisation():
    x = random_batch()
    out = BatchAugment(AugmentConfig.none(), CPU)(x, seeded(0))
    torch.testing.assert_close(out, normalised(x), atol=1e-6, rtol=0)


def test_eval_mode_skips_augmentation():
    x = random_batch()
    out = BatchAugment(AugmentConfig(), CPU)(x, seeded(0), train=False)
    torch.testing.assert_close(out, normalised(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("height, width", [(64, 64), (32, 48)])
def test_hflip_always_is_width_flip(height, width):
    x = random_batch(h=height, w=width)
    # Unit statistics keep the comparison in [0, 1] pixel units: grid_sample un-normalises its
    # coordinates in float32, so the mirror is exact only to a few 1e-6 of a pixel value, which
    # dividing by ImageNet's std (~0.22) would inflate past 1e-5. A uint8 step is 4e-3.
    unit = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = BatchAugment(AugmentConfig(**{**NO_GEOMETRY, "hflip": 1.0}, **NO_COLOUR, **unit), CPU)(x, seeded(0))
    torch.testing.assert_close(out, torch.flip(x.permute(0, 3, 1, 2) / 255, dims=[3]), atol=1e-5, rtol=0)


def test_small_rotation_keeps_centre_and_moves_corners():
    x = smooth_batch()
    aug = BatchAugment(AugmentConfig(**{**NO_GEOMETRY, "rotation": 10.0}, **NO_COLOUR), CPU)
    out, ref = unnormalise(aug(x, seeded(1))), x.permute(0, 3, 1, 2).float() / 255
    centre = (out - ref)[:, :, 31:33, 31:33].abs().amax()
    assert centre < 0.01
    corners = (out - ref)[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].abs().amax(dim=(1, 2))
    assert (corners > 0.02).float().mean() >= 0.75


def test_parameters_differ_per_sample_and_follow_the_seed():
    x = smooth_batch(b=6)
    aug = BatchAugment(AugmentConfig(), CPU)
    out = aug(x, seeded(3))
    for i in range(len(out)):
        for j in range(i + 1, len(out)):
            assert not torch.allclose(out[i], out[j], atol=1e-3)
    assert torch.equal(out, aug(x, seeded(3)))
    assert not torch.allclose(out, aug(x, seeded(4)), atol=1e-3)


def test_brightness_factor_semantics():
    b = 0.2
    x = torch.full((16, 8, 8, 3), 128, dtype=torch.uint8)
    aug = BatchAugment(AugmentConfig(**NO_GEOMETRY, brightness=b, contrast=0.0, saturation=0.0), CPU)
    ratio = unnormalise(aug(x, seeded(5))) / (128 / 255)
    per_sample = ratio.flatten(1)
    # One factor per sample, shared by every pixel and channel.
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-5, rtol=0)
    factors = per_sample[:, 0]
    assert factors.min() >= 1 - b - 1e-5 and factors.max() <= 1 + b + 1e-5
    assert factors.std() > 0.01


@pytest.mark.parametrize("factors", [(1.15, 0.85, 1.2), (0.8, 1.2, 0.0), (1.0, 0.0, 1.7)])
def test_adjust_colour_matches_torchvision(factors):
    brightness, contrast, saturation = factors
    img = torch.rand(3, 16, 20, generator=seeded(6))
    expected = TF.adjust_saturation(
        TF.adjust_contrast(TF.adjust_brightness(img, brightness), contrast), saturation
    )
    got = adjust_colour_(img[None].clone(), *(torch.tensor([f]) for f in factors))[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_adjust_colour_per_sample_factors():
    imgs = torch.rand(2, 3, 8, 8, generator=seeded(7))
    got = adjust_colour_(imgs.clone(), None, None, torch.tensor([0.0, 1.5]))
    torch.testing.assert_close(got[0], TF.adjust_saturation(imgs[0], 0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], TF.adjust_saturation(imgs[1], 1.5), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_output_dtype_shape_and_layout(channels_last):
    x = random_batch(b=5, h=64, w=64)
    out = BatchAugment(AugmentConfig(), CPU, channels_last=channels_last)(x, seeded(8))
    assert out.dtype == torch.float32 and out.shape == (5, 3, 64, 64)
    assert torch.isfinite(out).all()
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(hflip=1.5), "hflip"),
        (dict(rotation=-1), "rotation"),
        (dict(scale=(1.2, 0.8)), "scale"),
        (dict(scale=(0.0, 1.0)), "scale"),
        (dict(translate=-0.1), "translate"),
        (dict(brightness=-0.2), "brightness"),
        (dict(contrast=float("nan")), "contrast"),
        (dict(saturation="a lot"), "saturation"),
        (dict(std=(0.2, 0.0, 0.2)), "std"),
        (dict(mean=(0.5, 0.5)), "mean"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(UserError, match=rf"augment\.{field}") as info:
        AugmentConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_config_coerces_yaml_spellings():
    assert AugmentConfig(scale=[0.9, 1.1], rotation=10, mean=[0.485, 0.456, 0.406]) == AugmentConfig()


def labelled(n):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous()
    return images, torch.arange(n), torch.arange(n) * 10


def test_iterate_batches_shuffle_covers_every_index_once():
    images, fine, coarse = labelled(23)
    batches = list(iterate_batches(images, (fine, coarse), 5, shuffle=True, generator=seeded(9), device=CPU))
    assert len(batches) == num_batches(23, 5) == 5
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for img, f, c in batches:
        assert img.dtype == torch.uint8 and torch.equal(img[:, 0, 0, 0].long(), f) and torch.equal(c, f * 10)


def test_iterate_batches_sequential_and_drop_last():
    images, fine, _ = labelled(23)
    kept = list(iterate_batches(images, fine, 5, shuffle=False, generator=None, device=CPU))
    assert [len(b[1]) for b in kept] == [5, 5, 5, 5, 3]
    assert torch.cat([b[1] for b in kept]).tolist() == list(range(23))
    dropped = list(iterate_batches(images, fine, 5, shuffle=False, generator=None, device=CPU, drop_last=True))
    assert [len(b[1]) for b in dropped] == [5, 5, 5, 5] and num_batches(23, 5, drop_last=True) == 4


def test_iterate_batches_order_follows_the_seed():
    images, fine, _ = labelled(50)

    def order(seed):
        batches = iterate_batches(images, fine, 8, shuffle=True, generator=seeded(seed), device=CPU)
        return torch.cat([b[1] for b in batches]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
