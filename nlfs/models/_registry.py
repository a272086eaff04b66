"""``build_model(name, in_channels, num_classes, image_size)``: every model the trainer knows;
``make_model(model, input_shape, num_classes)``: those, the MLP, or a user's ``module:factory``."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from .._imports import import_reference
from ._small import MLP, ResNet9V2, SurrogateNet, WideResNet

MODELS = ("surrogate", "surrogate-narrow", "resnet9v2", "wrn-16-4", "wrn-28-10", "resnet18", "resnet50",
          "efficientnet_v2_s", "mlp")
IMAGE_MODELS = MODELS[:-1]
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class ModelError(ValueError):
    """A model that cannot be built or does not fit the data; the message names it."""


# other names a built-in model goes by (after _key's normalisation)
_ALIASES = {"preact-resnet": "resnet9v2", "preactresnet": "resnet9v2"}


def _key(name: str) -> str:
    return name.lower().replace("_", "-").strip()


def canonical_model(name: str) -> str:
    """A built-in model's own name for one of its aliases (``preact_resnet`` -> ``resnet9v2``); any other
    name as given."""
    return _ALIASES.get(_key(str(name)), str(name))


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


def _builtin(name: str) -> str | None:
    """The built-in model ``name`` means, as ``build_model`` branches on it (``wrn-D-K`` with its
    numbers), or None for a name it does not know."""
    key = _key(canonical_model(name))
    m = re.fullmatch(r"wrn-?(\d+)-(\d+)", key) or re.fullmatch(r"wide-?resnet-?(\d+)-(\d+)", key)
    if m:
        return f"wrn-{int(m.group(1))}-{int(m.group(2))}"
    if key in ("mlp", "surrogate", "surrogate-narrow"):
        return key
    if key in ("resnet9v2", "resnet9-v2"):
        return "resnet9v2"
    if key in ("resnet18", "resnet-18", "resnet50", "resnet-50"):
        return key.replace("-", "")
    if key in ("efficientnet-v2-s", "efficientnetv2-s", "effnetv2-s"):
        return "efficientnet_v2_s"
    return None


def unknown_model(name: str) -> str:
    """The one line for a model name that is neither built in nor ``module:factory``."""
    text = (f"unknown model {name!r}; choose one of {', '.join(MODELS)}, wrn-D-K, or module:factory (your own: "
            "factory(input_shape, num_classes) returning an nn.Module, in a module importable by name)")
    if str(name).strip().isidentifier():
        import importlib.util

        try:
            importable = importlib.util.find_spec(str(name).strip()) is not None
        except (ImportError, ValueError):
            importable = False
        if importable:
            text += f"; module {name.strip()!r} is importable: name its factory, {name.strip()}:FACTORY"
    return text


def _path_problem(model: str) -> str | None:
    """The one line for a model given as a file path (``/tmp/x/mymodels.py:tiny``), or None."""
    text = str(model).strip()
    module, colon, factory = text.rpartition(":") if ":" in text else (text, "", "")
    if not ("/" in module or os.sep in module or module.startswith("~")):
        return None
    path = Path(module).expanduser()
    folder = str(path.parent) if str(path.parent) not in ("", ".") else "its folder"
    return (f"model {text!r} is a file path; --model (model=) takes module:factory with the module importable "
            f"by name, not a path: {path.stem}:{factory if colon and factory else 'FACTORY'} with {folder} on "
            "PYTHONPATH (or as the working directory)")


def build_model(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                checkpoint: str | Path | None = None, dropout: float | None = None) -> nn.Module:
    """A freshly initialised model (uses torch's global RNG: seed before calling).

    ``name``: ``surrogate``, ``surrogate-narrow``, ``resnet9v2``, ``wrn-D-K`` (e.g. ``wrn-16-4``,
    ``wrn-28-10``), ``resnet18``, ``resnet50``, ``efficientnet_v2_s``. ``checkpoint``: a local state-dict file to
    fine-tune from (tensors whose shape does not match, e.g. a classifier for another class count,
    are skipped)."""
    kind = _builtin(name)
    if kind is None:
        raise ModelError(unknown_model(name))
    if kind == "mlp":
        model = MLP(in_channels * image_size * image_size, num_classes, dropout=0.1 if dropout is None else dropout)
    elif kind == "surrogate":
        model = SurrogateNet(in_channels, num_classes, image_size)
    elif kind == "surrogate-narrow":  # half the channels, about a quarter of the multiply-adds: a cheaper proxy
        model = SurrogateNet(in_channels, num_classes, image_size, widths=(8, 16, 32), stem=8)
    elif kind == "resnet9v2":
        model = ResNet9V2(in_channels, num_classes, image_size,
                          dropout=0.5 if dropout is None else dropout)
    elif kind.startswith("wrn-"):
        depth, width = (int(v) for v in kind.split("-")[1:])
        model = WideResNet(depth, width, in_channels, num_classes, image_size,
                           dropout=0.0 if dropout is None else dropout)
    else:  # resnet18, resnet50, efficientnet_v2_s
        model = _torchvision(kind, in_channels, num_classes, image_size, dropout)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def is_factory(model: str) -> bool:
    """Does ``model`` name a user's ``module:factory``?"""
    return bool(_FACTORY.fullmatch(str(model).strip()))


def make_model(model: str, input_shape: tuple[int, ...], num_classes: int, checkpoint: str | Path | None = None,
               dropout: float | None = None) -> nn.Module:
    """A freshly initialised model for samples of ``input_shape`` ((C, H, W) images or (D,) feature
    vectors): a name from ``MODELS`` (``mlp`` takes any shape; the others need images), or
    ``module:factory``, called as ``factory(input_shape, num_classes)``, which must return an
    ``nn.Module``. Raises :class:`ModelError` naming the model."""
    shape = tuple(int(v) for v in input_shape)
    if is_factory(model):
        built = _call_factory(model, shape, num_classes)
        if checkpoint is not None:
            load_checkpoint(built, checkpoint)
        return built
    problem = _path_problem(model)
    if problem:
        raise ModelError(problem)
    kind = _builtin(model)
    if kind is None:
        raise ModelError(unknown_model(model))
    if kind == "mlp":
        built = MLP(math.prod(shape), num_classes, dropout=0.1 if dropout is None else dropout)
        if checkpoint is not None:
            load_checkpoint(built, checkpoint)
        return built
    if len(shape) != 3:
        raise ModelError(f"model {model!r} needs images (C, H, W); this data is feature vectors {shape}: use "
                         "--model mlp (the default for feature vectors) or module:factory")
    return build_model(model, shape[0], num_classes, shape[1], checkpoint, dropout)


def _call_factory(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    name = spec.strip().partition(":")[2]
    factory = import_reference(spec, f"model {spec}", ModelError)
    try:
        built = factory(input_shape, num_classes)
    except Exception as err:
        raise ModelError(f"model {spec}: {name}({input_shape}, {num_classes}) raised "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(built, nn.Module):
        raise ModelError(f"model {spec}: {name}({input_shape}, {num_classes}) returned a "
                         f"{type(built).__name__}, not a torch.nn.Module")
    return built


def check_model(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, name: str) -> None:
    """Probe ``model`` with a batch of two zero samples (eval mode, no gradients): it must return
    (2, num_classes) logits. Raises :class:`ModelError` naming ``name``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as err:
        raise ModelError(f"model {name}: a batch of shape {(2, *input_shape)} raised "
                         f"{type(err).__name__}: {err}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"model {name}: returned a {type(out).__name__}, expected a logits tensor")
    if tuple(out.shape) != (2, num_classes):
        raise ModelError(f"model {name}: a batch of shape {(2, *input_shape)} gave outputs of shape "
                         f"{tuple(out.shape)}, expected (2, {num_classes}) (one logit per class)")


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
