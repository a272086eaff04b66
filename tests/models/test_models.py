import os

import pytest
import torch

from nlfs.models import build_model, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small ops: one thread is as fast, far faster on a busy CPU

LIGHT = ["surrogate", "surrogate-narrow", "resnet9v2", "wrn-16-4", "resnet18"]


@pytest.mark.parametrize("name", LIGHT)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_forward_light(name, shape):
    torch.manual_seed(0)
    m = build_model(name, shape[0], 10, shape[1]).eval()
    with torch.no_grad():
        out = m(torch.randn(3, *shape))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet50", "wrn-28-10", "efficientnet_v2_s"])
def test_forward_heavy_two_images(name):
    if os.environ.get("NLFS_SKIP_HEAVY"):
        pytest.skip("NLFS_SKIP_HEAVY set")
    m = build_model(name, 3, 100, 32).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)


def test_surrogate_narrow_halves_the_channels():
    def channels(name):
        return [mod.out_channels for mod in build_model(name, 1, 10, 28).modules() if isinstance(mod, torch.nn.Conv2d)]

    assert channels("surrogate-narrow") == [c // 2 for c in channels("surrogate")]


def test_resnet9v2_structure():
    m = build_model("resnet9v2", 3, 10, 32)
    convs = [mod.out_channels for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert convs[0] == 8 and max(convs) == 32 and 16 in convs
    assert any(isinstance(mod, torch.nn.SiLU) for mod in m.modules())
    assert any(isinstance(mod, torch.nn.Dropout) and mod.p == 0.5 for mod in m.modules())


def test_wrn_depth_checked():
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-15-2")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg11")


def test_checkpoint_fine_tune(tmp_path):
    src = build_model("resnet9v2", 3, 100, 32)
    path = tmp_path / "ck.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = build_model("resnet9v2", 3, 10, 32, checkpoint=path)
    assert torch.equal(dst.stem.weight, src.stem.weight)
    assert load_checkpoint(build_model("resnet9v2", 3, 10, 32), path) == ["head.bias", "head.weight"]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model("surrogate", checkpoint=tmp_path / "missing.pt")
