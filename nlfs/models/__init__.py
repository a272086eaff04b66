"""Models for loss search and transfer: the surrogate CNN, ResNet9V2, WideResNets, torchvision nets."""

from ._registry import MODELS, build_model, load_checkpoint
from ._small import ConvGroup, PreActBlock, ResNet9V2, SurrogateNet, WideResNet

__all__ = ["MODELS", "ConvGroup", "PreActBlock", "ResNet9V2", "SurrogateNet", "WideResNet", "build_model",
           "load_checkpoint"]
