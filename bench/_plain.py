"""The catalogue losses written by hand in plain PyTorch, as a user would write them without nlfs:
``log_softmax`` for log(p), ``one_hot`` for the target, no protected operators or clamps. The
baseline the kernel benchmarks compare against (eager and under ``torch.compile``), beside nlfs's
own torch backend (the protected interpreter, slower than this).

Each ``PLAIN[name](logits, target)`` takes class-index targets and returns the mean loss, with the
catalogue's default constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _parts(z, t):
    return F.one_hot(t, z.shape[1]).to(z.dtype), torch.softmax(z, 1), torch.log_softmax(z, 1)


def ce(z, t):
    y, _, logp = _parts(z, t)
    return (-y * logp).sum(1).mean()


def label_smoothing_ce(z, t, a=0.1):
    y, _, logp = _parts(z, t)
    return (-((1 - a) * y + a / z.shape[1]) * logp).sum(1).mean()


def focal(z, t, gamma=2.0):
    y, p, logp = _parts(z, t)
    return (-y * (1 - p) ** gamma * logp).sum(1).mean()


def poly1(z, t, epsilon=2.0):
    y, p, logp = _parts(z, t)
    return (-y * logp + epsilon * y * (1 - p)).sum(1).mean()


def baikal(z, t):
    y, p, _ = _parts(z, t)
    return (-(torch.log(p + 1e-7) - y / (p + 1e-7))).sum(1).mean()


def ngl(z, t, alpha=2.4092):
    y, p, _ = _parts(z, t)
    return (torch.exp(alpha - p - p * y) - torch.cos(torch.cos(torch.sin(p)))).mean()


def sce(z, t, a=0.1, b=1.0):
    y, p, logp = _parts(z, t)
    return (a * (-y * logp) + b * (-p * torch.log(y.clamp(1e-4, 1.0)))).sum(1).mean()


def taylor_glo(z, t, t0=0.0, t1=0.0, t2=0.0, t3=0.0, t4=0.0, t5=-1.0, t6=0.0, t7=0.0):
    y, p, _ = _parts(z, t)
    dy, dp = y - t1, p - t0
    f = (t2 * dy + t3 / 2 * dy ** 2 + t4 / 6 * dy ** 3 + t5 * dp * dy + t6 / 2 * dp * dy ** 2
         + t7 / 2 * dp ** 2 * dy)
    return f.sum(1).mean()


PLAIN = {"CE": ce, "LabelSmoothingCE": label_smoothing_ce, "Focal": focal, "Poly1": poly1, "Baikal": baikal,
         "NGL": ngl, "SCE": sce, "TaylorGLO": taylor_glo}
