import pytest
import torch

from nlfs.data import AUGMENTS, load_dataset, make_augment, random_crop

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small ops: one thread is as fast, far faster on a busy CPU


@pytest.mark.parametrize("name", AUGMENTS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_shapes_and_targets(name, shape):
    c, h, w = shape
    x = torch.randint(0, 256, (24, c, h, w), dtype=torch.uint8)
    y = torch.randint(0, 10, (24,))
    aug = make_augment(name, [0.5] * c, [0.25] * c, 10, h, seed=0)
    out, t = aug(x, y)
    assert out.shape == (24, c, h, w) and out.dtype == torch.float32 and torch.isfinite(out).all()
    if name in ("mixup", "cutmix"):
        assert aug.prob_targets and t.shape == (24, 10) and t.dtype == torch.float32
        assert torch.allclose(t.sum(1), torch.ones(24)) and (t >= 0).all()
    else:
        assert not aug.prob_targets and torch.equal(t, y)


def test_none_is_normalise_only():
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    aug = make_augment("none", [0.5], [0.25], 10, 8)
    out, _ = aug(x, torch.zeros(4, dtype=torch.int64))
    assert torch.allclose(out, (x.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_seeded_and_varies_per_image():
    ds = load_dataset("digits")
    x, y = ds.train_x[:64], ds.train_y[:64]
    a = make_augment("cutout", ds.mean, ds.std, 10, 8, seed=1)(x, y)[0]
    b = make_augment("cutout", ds.mean, ds.std, 10, 8, seed=1)(x, y)[0]
    c = make_augment("cutout", ds.mean, ds.std, 10, 8, seed=2)(x, y)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_is_a_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(50, 1, 1, 1)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert any(torch.equal(out[i], x[0]) for i in range(50)) and not all(torch.equal(o, x[0]) for o in out)


def test_cutmix_mixes_by_area():
    x = torch.zeros(8, 1, 8, 8, dtype=torch.uint8)
    x[4:] = 255
    y = torch.tensor([0] * 4 + [1] * 4)
    aug = make_augment("cutmix", [0.0], [1.0], 2, 8, seed=0, crop_pad=0)
    for _ in range(5):
        out, t = aug(x, y)
        # the share of the image that changed matches the target weight of the partner
        assert torch.allclose(t.sum(1), torch.ones(8))


def test_unknown_augment():
    with pytest.raises(ValueError, match="unknown augmentation"):
        make_augment("shear", [0.5], [0.5], 10, 8)
