"""Small models written here: the airbench-like surrogate CNN, ResNet9V2, the WideResNet family, and an
MLP for feature vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvGroup(nn.Module):
    """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU (airbench's block)."""

    def __init__(self, c_in: int, c_out: int, pool: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = F.gelu(self.bn1(self.pool(self.conv1(x))))
        return F.gelu(self.bn2(self.conv2(x)))


class SurrogateNet(nn.Module):
    """A small fast airbench-like CNN: a stem conv, three conv groups (each halving the resolution
    while it is above 1 pixel), global max pool, a linear head with a fixed logit scale.

    ``widths`` defaults to (16, 32, 64) (about 3.6 M multiply-adds per 28x28 image): cheap enough for
    CPU search; pass wider ``widths`` (airbench uses 64, 256, 256) for GPU runs. Input size is free
    (8x8 digits to 32x32 CIFAR); groups stop pooling once the map would drop below 1 pixel."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 widths: tuple[int, ...] = (16, 32, 64), stem: int = 16, scale: float = 1 / 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem), nn.GELU())
        groups, c, size = [], stem, image_size
        for w in widths:
            pool = size >= 2
            size = size // 2 if pool else size
            groups.append(ConvGroup(c, w, pool))
            c = w
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c, num_classes, bias=False)
        self.scale = scale

    def forward(self, x):
        x = self.groups(self.stem(x))
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * self.scale


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN -> act -> conv (stride) -> BN -> act -> conv, plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, act=nn.SiLU, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = act()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = act()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x):
        o = self.act1(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.drop(self.act2(self.bn2(o))))
        return o + short


class ResNet9V2(nn.Module):
    """The NLFS paper's small pre-activation ResNet: a conv of 8 filters, residual blocks of 16 and 32
    filters (each halving the resolution), swish (SiLU) activations, dropout 0.5 before the head."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 stem: int = 8, widths: tuple[int, ...] = (16, 32), dropout: float = 0.5):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        blocks, c, size = [], stem, image_size
        for w in widths:
            stride = 2 if size >= 2 else 1
            size //= stride
            blocks.append(PreActBlock(c, w, stride))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.act(self.bn(self.blocks(self.stem(x))))
        return self.head(self.drop(x.mean(dim=(2, 3))))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis): 3 stages of (depth-4)/6 pre-activation blocks with widths
    16k, 32k, 64k; ReLU; dropout between the convs of a block."""

    def __init__(self, depth: int = 16, widen: int = 4, in_channels: int = 3, num_classes: int = 10,
                 image_size: int = 32, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers, c, size = [], 16, image_size
        for i, w in enumerate(widths):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0 and size >= 2) else 1
                size //= stride
                layers.append(PreActBlock(c, w, stride, act=lambda: nn.ReLU(inplace=True), dropout=dropout))
                c = w
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class MLP(nn.Module):
    """The default model for feature vectors (any input is flattened): ``hidden`` widths, each a
    Linear -> BatchNorm -> ReLU -> Dropout block, then a linear classifier."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
