"""Models for loss search and transfer: the surrogate CNN, ResNet9V2, WideResNets, torchvision nets, an
MLP for feature vectors, and a user's ``module:factory``."""

from ._packed import PackedSurrogate
from ._registry import (
    IMAGE_MODELS,
    MODELS,
    ModelError,
    build_model,
    canonical_model,
    check_model,
    is_factory,
    load_checkpoint,
    make_model,
)
from ._small import MLP, ConvGroup, PreActBlock, ResNet9V2, SurrogateNet, WideResNet

__all__ = ["IMAGE_MODELS", "MLP", "MODELS", "ConvGroup", "ModelError", "PackedSurrogate", "PreActBlock", "ResNet9V2",
           "SurrogateNet", "WideResNet", "build_model", "canonical_model", "check_model", "is_factory",
           "load_checkpoint", "make_model"]
