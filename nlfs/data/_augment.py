"""Augmentations as batched tensor ops on the training device.

``make_augment(name, ...)`` returns a callable ``(x_uint8 [B,C,H,W], y [B]) -> (x_float, target)``:
``x_float`` is normalised; ``target`` is ``y`` (class indices) or, for Mixup/CutMix, (B, K) class
probabilities. Every technique other than ``none`` sits on top of the flip + random-crop baseline.

Per-sample randomness (flips, crop offsets, Cutout centres, Mixup partners) comes from a
``torch.Generator`` on the device; per-batch scalars (Mixup/CutMix lambda, CutMix box) from a seeded
NumPy generator. RandAugment / AutoAugment use ``torchvision.transforms.v2``, which draws one op
choice per call from torch's global RNG: the batch is split into ``groups`` chunks so different
images get different ops (the trainer seeds the global RNG, so runs stay reproducible).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTS = ("none", "flipcrop", "cutout", "mixup", "cutmix", "randaugment", "autoaugment")
PROB_TARGETS = frozenset({"mixup", "cutmix"})


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,H,W) -> float32 on the 0..1 scale, per-channel standardised (``mean``/``std``
    (1,C,1,1)); a user's float images are standardised on their own scale, feature vectors (B, D)
    per feature (``mean``/``std`` (1, D))."""
    if x.dtype == torch.uint8:
        return (x.float() * (1.0 / 255.0) - mean) / std
    return (x.float() - mean) / std


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``pad`` then crop back to (H, W) at a random offset per image (one gather)."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B,H,1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B,1,W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    return xp[bidx, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B,H,W,C) -> (B,C,H,W)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero (the mean, after normalising) a size x size square at a random centre per image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=gen)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=gen)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    lo = size // 2
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def one_hot(y: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(y, k).float()


def mixup(x, y, k: int, alpha: float, gen: torch.Generator, rng: np.random.Generator):
    lam = float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], device=x.device, generator=gen)
    t = one_hot(y, k)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def cutmix(x, y, k: int, alpha: float, gen: torch.Generator, rng: np.random.Generator):
    """Paste a box from a shuffled partner; target mixed by the box's actual area."""
    b, _, h, w = x.shape
    lam = float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    perm = torch.randperm(b, device=x.device, generator=gen)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    t = one_hot(y, k)
    return out, lam * t + (1 - lam) * t[perm]


class Augment:
    """A configured augmentation pipeline; see the module docstring."""

    def __init__(self, name: str, mean, std, num_classes: int, image_size: int,
                 device: str | torch.device = "cpu", seed: int = 0, *, crop_pad: int | None = None,
                 cutout_size: int | None = None, mixup_alpha: float = 1.0, cutmix_alpha: float = 1.0,
                 ra_num_ops: int = 2, ra_magnitude: int = 9, groups: int = 16, features: bool = False):
        name = name.lower().replace("-", "").replace("_", "")
        if name in ("", "off", "false"):
            name = "none"
        if name not in AUGMENTS:
            raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTS)}")
        if features and name != "none":
            raise ValueError(f"augmentation {name!r} needs images; feature vectors take augment none")
        self.name = name
        self.device = torch.device(device)
        shape = (1, -1) if features else (1, -1, 1, 1)  # per feature, or per channel
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(shape)
        self.num_classes = num_classes
        self.crop_pad = max(1, image_size // 8) if crop_pad is None else crop_pad
        self.cutout_size = max(1, image_size // 2) if cutout_size is None else cutout_size
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.groups = max(1, groups)
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self.rng = np.random.default_rng(int(seed))
        self.policy = None
        if name in ("randaugment", "autoaugment"):
            from torchvision.transforms import v2

            if name == "randaugment":
                self.policy = v2.RandAugment(num_ops=ra_num_ops, magnitude=ra_magnitude)
            else:
                self.policy = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)

    @property
    def prob_targets(self) -> bool:
        return self.name in PROB_TARGETS

    def _policy(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.tensor_split(min(self.groups, x.shape[0]))
        return torch.cat([self.policy(c) for c in chunks])

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        if self.policy is not None:
            x = self._policy(x)
        x = normalize(x, self.mean, self.std)
        if self.name == "none":
            return x, y
        x = random_crop(random_flip(x, self.gen), self.crop_pad, self.gen)
        if self.name == "cutout":
            x = cutout(x, self.cutout_size, self.gen)
        elif self.name == "mixup":
            return mixup(x, y, self.num_classes, self.mixup_alpha, self.gen, self.rng)
        elif self.name == "cutmix":
            return cutmix(x, y, self.num_classes, self.cutmix_alpha, self.gen, self.rng)
        return x, y

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-time transform: normalise only."""
        return normalize(x, self.mean, self.std)


def make_augment(name: str, mean, std, num_classes: int, image_size: int, device="cpu", seed: int = 0,
                 **params) -> Augment:
    return Augment(name, mean, std, num_classes, image_size, device, seed, **params)
