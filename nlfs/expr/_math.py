"""Math namespaces: how the torch and NumPy backends spell the primitives the ops table uses.

An op's maths is written once against a namespace ``m``; code-emitting backends (Triton, C++)
supply namespaces whose values are source-code strings instead of arrays. ``reference_value`` is an
op's float64 value at numbers (``NumpyMath``), with which the canonical form, the simplifier and
target specialisation fold an op whose arguments are all numbers.
"""

from __future__ import annotations

import functools

import numpy as np

from ._ops import MAXV, OPS


class TorchMath:
    """Primitives on torch tensors (autograd-friendly)."""

    def __init__(self):
        import torch

        self.t = torch

    def where(self, c, a, b):
        t = self.t
        if not isinstance(a, t.Tensor) and not isinstance(b, t.Tensor):
            a = t.full_like(c, a, dtype=t.get_default_dtype()) if c.dtype == t.bool else a
        return t.where(c, a, b)

    def clamp(self, x, lo, hi):
        return self.t.clamp(x, lo, hi)

    def maximum(self, a, b):
        t = self.t
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=a.dtype, device=a.device)
        return t.maximum(a, b)

    @staticmethod
    def sum_classes(x):
        """(N, C) -> each row's sum at every class of the row."""
        return x.sum(dim=-1, keepdim=True).expand_as(x)

    def minimum(self, a, b):
        t = self.t
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=a.dtype, device=a.device)
        return t.minimum(a, b)

    def __getattr__(self, name):
        t = self.t
        table = {
            "abs": t.abs, "sign": t.sign, "exp": t.exp, "log": t.log, "log1p": t.log1p,
            "sqrt": t.sqrt, "sin": t.sin, "cos": t.cos, "tanh": t.tanh, "sinh": t.sinh,
            "asinh": t.asinh, "atan": t.atan, "erf": t.special.erf, "erfc": t.special.erfc,
            "sigmoid": t.sigmoid, "i0": t.special.i0, "i0e": t.special.i0e,
            "i1": t.special.i1, "i1e": t.special.i1e,
        }
        try:
            return table[name]
        except KeyError:
            raise AttributeError(name) from None


class NumpyMath:
    """Primitives on float64 NumPy arrays: the float64 reference of every op."""

    def __init__(self):
        from scipy import special

        self.s = special

    @staticmethod
    def where(c, a, b):
        return np.where(c, a, b)

    @staticmethod
    def clamp(x, lo, hi):
        return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)

    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)

    @staticmethod
    def sum_classes(x):
        return np.broadcast_to(np.sum(x, axis=-1, keepdims=True), np.shape(x))

    def __getattr__(self, name):
        s = self.s
        table = {
            "abs": np.abs, "sign": np.sign, "exp": np.exp, "log": np.log, "log1p": np.log1p,
            "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "sinh": np.sinh,
            "asinh": np.arcsinh, "atan": np.arctan, "erf": s.erf, "erfc": s.erfc,
            "sigmoid": s.expit, "i0": s.i0, "i0e": s.i0e, "i1": s.i1, "i1e": s.i1e,
        }
        try:
            return table[name]
        except KeyError:
            raise AttributeError(name) from None


@functools.cache
def numpy_math() -> NumpyMath:
    """The one ``NumpyMath``, made at first use (it imports SciPy)."""
    return NumpyMath()


def reference_value(op: str, values, clamp_bounded: bool = False) -> float:
    """The float64 reference value of the elementwise op ``op`` at the numbers ``values``, clamped to
    [-MAXV, MAXV] as the backends clamp an op's output: every op that is not ``bounded``, and with
    ``clamp_bounded`` the bounded ones too (they leave the range only for an argument outside it).
    NaN where the op is undefined: the clamp lets it through, the caller decides what it means."""
    spec = OPS[op]
    with np.errstate(all="ignore"):
        v = float(spec.forward(numpy_math(), *[np.float64(x) for x in values]))
    if clamp_bounded or not spec.bounded:
        v = min(max(v, -MAXV), MAXV)  # NaN stays NaN: max/min keep their first argument when unordered
    return v
