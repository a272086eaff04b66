"""Regenerate the Chebyshev coefficients of the modified Bessel functions in ``special.py``.

Run ``python kernels/fit_special.py`` and paste its output between the ``BEGIN GENERATED`` /
``END GENERATED`` markers of ``special.py``. Each series is a least-squares Chebyshev fit in float64
on 4000 Chebyshev nodes, evaluated by Clenshaw's recurrence (unrolled); the float64 fit error printed
with each is far below fp32 rounding, so the fp32 error is set by the evaluation (see special.py).

* ``exp(-x) I0(x)`` and ``exp(-x) I1(x) / x`` on [0, 8], in ``t = x/4 - 1``;
* ``sqrt(x) exp(-x) I0(x)`` and ``sqrt(x) exp(-x) I1(x)`` on [8, inf), in ``t = 16/x - 1``.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev as cheb
from scipy import special

DEG_SMALL = 18
DEG_LARGE = 7


def _xl(t):
    return 8.0 / np.maximum((t + 1.0) / 2.0, 1e-12)


SERIES = {
    "_I0E_SMALL": (lambda t: special.i0e(4 * (t + 1)), DEG_SMALL),
    "_I1E_OVER_X_SMALL": (lambda t: special.i1e(np.maximum(4 * (t + 1), 1e-300))
                          / np.maximum(4 * (t + 1), 1e-300), DEG_SMALL),
    "_I0E_LARGE": (lambda t: np.sqrt(_xl(t)) * special.i0e(_xl(t)), DEG_LARGE),
    "_I1E_LARGE": (lambda t: np.sqrt(_xl(t)) * special.i1e(_xl(t)), DEG_LARGE),
}


def fit(f, deg, n=4000):
    k = np.arange(n)
    t = np.cos(np.pi * (k + 0.5) / n)
    c = cheb.chebfit(t, f(t), deg)
    tt = np.linspace(-1, 1, 200001)
    err = float(np.max(np.abs(cheb.chebval(tt, c) - f(tt)) / np.abs(f(tt))))
    return c, err


def clenshaw_source(name: str, coeffs) -> str:
    """A @triton.jit function evaluating sum c_k T_k(t) by Clenshaw's recurrence, unrolled."""
    n = len(coeffs) - 1
    lines = ["@triton.jit", f"def {name.lower()}(t):", "    t2 = 2.0 * t",
             f"    b1 = t * 0.0 + {coeffs[n]!r}", "    b2 = t * 0.0"]
    for k in range(n - 1, 0, -1):
        lines.append(f"    b0 = t2 * b1 - b2 + {coeffs[k]!r}")
        lines.append("    b2 = b1")
        lines.append("    b1 = b0")
    lines.append(f"    return t * b1 - b2 + {coeffs[0]!r}")
    return "\n".join(lines)


def main():
    out = []
    for name, (f, deg) in SERIES.items():
        c, err = fit(f, deg)
        out.append(f"# {name}: degree {deg}, float64 fit max relative error {err:.2e}")
        out.append(clenshaw_source(name, [float(v) for v in c]))
        out.append("")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
