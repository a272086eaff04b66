"""``build_model(name, in_channels, num_classes, image_size)``: every model the trainer knows."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ._small import ResNet9V2, SurrogateNet, WideResNet

MODELS = ("surrogate", "resnet9v2", "wrn-16-4", "wrn-28-10", "resnet18", "resnet50", "efficientnet_v2_s")


def _key(name: str) -> str:
    return name.lower().replace("_", "-").strip()


def _torchvision(name: str, in_channels: int, num_classes: int, image_size: int, dropout: float | None):
    """torchvision ResNet-18/50 and EfficientNetV2-S with ``weights=None`` (never downloads), the
    first conv adapted to the channel count and, for small images (< 64 px), to stride 1 (ResNets
    also lose the stem max-pool: the usual CIFAR adaptation)."""
    import torchvision.models as tvm

    small = image_size < 64
    if name in ("resnet18", "resnet50"):
        model = getattr(tvm, name)(weights=None, num_classes=num_classes)
        if small or in_channels != 3:
            stride = 1 if small else 2
            k = 3 if small else 7
            model.conv1 = nn.Conv2d(in_channels, 64, k, stride=stride, padding=k // 2, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        if small:
            model.maxpool = nn.Identity()
        return model
    kw = {} if dropout is None else {"dropout": dropout}
    model = tvm.efficientnet_v2_s(weights=None, num_classes=num_classes, **kw)
    old = model.features[0][0]
    if small or in_channels != 3:
        model.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, stride=1 if small else 2,
                                         padding=1, bias=False)
        nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model


def build_model(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                checkpoint: str | Path | None = None, dropout: float | None = None) -> nn.Module:
    """A freshly initialised model (uses torch's global RNG: seed before calling).

    ``name``: ``surrogate``, ``resnet9v2``, ``wrn-D-K`` (e.g. ``wrn-16-4``, ``wrn-28-10``),
    ``resnet18``, ``resnet50``, ``efficientnet_v2_s``. ``checkpoint``: a local state-dict file to
    fine-tune from (tensors whose shape does not match, e.g. a classifier for another class count,
    are skipped)."""
    key = _key(name)
    m = re.fullmatch(r"wrn-?(\d+)-(\d+)", key) or re.fullmatch(r"wide-?resnet-?(\d+)-(\d+)", key)
    if key == "surrogate":
        model = SurrogateNet(in_channels, num_classes, image_size)
    elif key in ("resnet9v2", "resnet9-v2"):
        model = ResNet9V2(in_channels, num_classes, image_size,
                          dropout=0.5 if dropout is None else dropout)
    elif m:
        model = WideResNet(int(m.group(1)), int(m.group(2)), in_channels, num_classes, image_size,
                           dropout=0.0 if dropout is None else dropout)
    elif key in ("resnet18", "resnet-18", "resnet50", "resnet-50"):
        model = _torchvision(key.replace("-", ""), in_channels, num_classes, image_size, dropout)
    elif key in ("efficientnet-v2-s", "efficientnetv2-s", "effnetv2-s"):
        model = _torchvision("efficientnet_v2_s", in_channels, num_classes, image_size, dropout)
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} (or wrn-D-K)")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> list[str]:
    """Load matching tensors from a local checkpoint (a state dict, or a dict with ``state_dict`` /
    ``model``); returns the names skipped. Raises FileNotFoundError naming the path."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for k in ("state_dict", "model"):
            if k in state and isinstance(state[k], dict):
                state = state[k]
                break
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(set(own) - set(keep))
