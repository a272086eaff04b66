"""Special functions for the generated Triton kernels, built from core ``tl`` ops only.

The same code runs compiled on a GPU and under ``TRITON_INTERPRET=1`` on CPU (which has no
libdevice / ``tl.extra`` maths). Every function takes and returns fp32 tensors and is branch-free:
each range's formula is evaluated on an argument clamped into that range and ``tl.where`` picks.

Accuracy (measured by ``tests/backends/test_triton_special.py`` against float64 scipy/torch on CPU;
"rel" is relative to the true value over x in [-30, 30] and +-[1e-30, 1e10], where it is a normal fp32):

=========  ==============================================================  ==================
function   method                                                          max error (fp32)
=========  ==============================================================  ==================
tanh       Cephes tanhf polynomial |x| < 0.625, else 1 - 2/(exp(2|x|)+1)   rel 3e-7
sigmoid    1/(1+e), e/(1+e) with e = exp(-|x|)                             rel 3e-7
log1p      log(u) * x/(u-1), u = fl(1+x) (Goldberg)                         rel 3e-7 (x>-.999)
sinh       Cephes sinhf polynomial |x| < 1, else (exp(x) - exp(-x))/2      rel 4e-7 (|x|<=88)
asinh      Cephes asinhf polynomial |x| < 0.5, else log(|x| + sqrt(x^2+1)) rel 3e-7
atan       Cephes atanf: reduction by tan(pi/8), tan(3pi/8) + polynomial   rel 3e-7
erf        Maclaurin series (11 terms) |x| < 1, else 1 - erfc(|x|)          rel 3e-7
erfc       |x| < .5: 1 - series; else Numerical Recipes' Chebyshev fit      rel 4e-7+1.5e-7x^2
           erfcc (rel 1.2e-7 exactly) t*exp(poly - x^2), 2 - that for x<0   (x^2 rounded in fp32)
i0e, i1e   Chebyshev series (fit_special.py) on [0, 8] and in 16/x - 1     rel 6e-7, 2e-6
           on [8, inf), Clenshaw evaluation
i0, i1     exp(|x|) * i0e(x), exp(|x|) * i1e(x)                            rel 1e-6, 2e-6 +6e-8|x|
=========  ==============================================================  ==================

The exact numbers per function are asserted in the tests; on a GPU ``tl.exp``/``tl.log`` are the
hardware approximations (a few ulp, and exp's argument is scaled by log2(e) in fp32), which adds
about |x| * 6e-8 relative error wherever exp of a large argument is taken.
"""

import triton
import triton.language as tl


@triton.jit
def nlfs_sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0))


@triton.jit
def nlfs_log1p(x):
    # Goldberg: for u = fl(1 + x), log(u) * x / (u - 1) is accurate; written as a first-order
    # correction so that it stays division-safe when u == 1 (then log1p(x) = x).
    u = 1.0 + x
    um1 = u - 1.0
    safe = tl.where(um1 == 0.0, 1.0, um1)
    return tl.where(um1 == 0.0, x, tl.log(u) * (x / safe))


@triton.jit
def nlfs_sigmoid(x):
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0.0, r, e * r)


@triton.jit
def nlfs_tanh(x):
    a = tl.abs(x)
    # |x| < 0.625: Cephes tanhf minimax polynomial (float64 error 4e-9)
    s = tl.minimum(a, 0.625)
    z = s * s
    small = ((((-5.70498872745E-3 * z + 2.06390887954E-2) * z - 5.37397155531E-2) * z
              + 1.33314422036E-1) * z - 3.33332819422E-1) * z * s + s
    # otherwise 1 - 2/(exp(2|x|) + 1); tanh(x) == 1 in fp32 beyond |x| = 9.1
    b = tl.minimum(tl.maximum(a, 0.625), 20.0)
    big = 1.0 - 2.0 / (tl.exp(2.0 * b) + 1.0)
    r = tl.where(a < 0.625, small, big)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def nlfs_sinh(x):
    a = tl.abs(x)
    s = tl.minimum(a, 1.0)
    z = s * s
    small = ((2.03721912945E-4 * z + 8.33028376239E-3) * z + 1.66667160211E-1) * z * s + s
    b = tl.minimum(tl.maximum(a, 1.0), 89.0)
    big = 0.5 * (tl.exp(b) - tl.exp(-b))
    r = tl.where(a < 1.0, small, big)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def nlfs_asinh(x):
    a = tl.abs(x)
    s = tl.minimum(a, 0.5)
    z = s * s
    small = (((2.0122003309E-2 * z - 4.2699340972E-2) * z + 7.4847586088E-2) * z
             - 1.6666288134E-1) * z * s + s
    # 0.5 <= |x| < 4096: log(|x| + sqrt(x^2 + 1)); beyond: log(|x|) + ln 2 (error x^-2/4)
    m = tl.minimum(tl.maximum(a, 0.5), 4096.0)
    mid = tl.log(m + tl.sqrt(m * m + 1.0))
    big = tl.log(tl.maximum(a, 4096.0)) + 0.6931471805599453
    r = tl.where(a < 0.5, small, tl.where(a < 4096.0, mid, big))
    return tl.where(x < 0.0, -r, r)


@triton.jit
def nlfs_atan(x):
    a = tl.abs(x)
    # Cephes atanf range reduction
    hi = a > 2.414213562373095
    mid = a > 0.41421356237309503
    aa = tl.maximum(a, 0.41421356237309503)
    xr = tl.where(hi, -1.0 / aa, tl.where(mid, (a - 1.0) / (a + 1.0), a))
    y0 = tl.where(hi, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
    z = xr * xr
    r = y0 + ((((8.05374449538e-2 * z - 1.38776856032E-1) * z + 1.99777106478E-1) * z
               - 3.33329491539E-1) * z * xr + xr)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def _erfc_pos(z):
    # Numerical Recipes erfcc (Chebyshev fit, fractional error < 1.2e-7), z >= 0
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    zc = tl.minimum(z, 20.0)  # erfc(20) = 5e-176: 0 in fp32 either way; keeps z*z finite
    return t * tl.exp(poly - zc * zc)


@triton.jit
def _erf_series(s):
    # |s| <= 1: Maclaurin series 2/sqrt(pi) * sum (-1)^n s^(2n+1) / (n! (2n+1)), n <= 10
    # (alternating; the tail is below 2e-8)
    z = s * s
    return s * (1.1283791670955126 + z * (-0.37612638903183754 + z * (0.11283791670955126 + z * (
        -0.026866170645131252 + z * (0.005223977625442188 + z * (-0.0008548327023450852 + z * (
            0.00012055332981789664 + z * (-1.4925650358406251e-05 + z * (
                1.6462114365889247e-06 + z * (-1.6365844691234924e-07 + z * 1.4807192815879218e-08))))))))))


@triton.jit
def nlfs_erf(x):
    a = tl.abs(x)
    series = _erf_series(tl.minimum(a, 1.0))
    big = 1.0 - _erfc_pos(tl.maximum(a, 1.0))
    r = tl.where(a < 1.0, series, big)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def nlfs_erfc(x):
    # |x| < 0.5: 1 - erf(x) from the series (erf < 0.53 there: no cancellation)
    a = tl.abs(x)
    small = 1.0 - _erf_series(tl.minimum(tl.maximum(x, -0.5), 0.5))
    r = _erfc_pos(tl.maximum(a, 0.5))
    big = tl.where(x < 0.0, 2.0 - r, r)
    return tl.where(a < 0.5, small, big)


# ---- BEGIN GENERATED by kernels/fit_special.py ----
# _I0E_SMALL: degree 18, float64 fit max relative error 3.05e-09
@triton.jit
def _i0e_small(t):
    t2 = 2.0 * t
    b1 = t * 0.0 + 2.659823654552137e-09
    b2 = t * 0.0
    b0 = t2 * b1 - b2 + -1.3000250037546985e-08
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 6.046995020748881e-08
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -2.670793853269506e-07
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 1.1173875391381084e-06
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -4.416738358470459e-06
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 1.644844807066396e-05
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -5.754195010080031e-05
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.0001885028850959301
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.0005763755745386632
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.0016394756169412455
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.0043243099950505326
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.010546460394595055
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.02373741480589948
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.049305284239670684
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.09490109704804764
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.17162090152220877
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.3046826723431984
    b2 = b1
    b1 = b0
    return t * b1 - b2 + 0.33839763720473803


# _I1E_OVER_X_SMALL: degree 18, float64 fit max relative error 3.38e-09
@triton.jit
def _i1e_over_x_small(t):
    t2 = 2.0 * t
    b1 = t * 0.0 + 3.6255898948370264e-10
    b2 = t * 0.0
    b0 = t2 * b1 - b2 + -1.8872497215235795e-09
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 9.38153743417984e-09
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -4.445059125071979e-08
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 2.0032947538698857e-07
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -8.568720264614973e-07
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 3.4702513080912674e-06
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -1.3273163656021458e-05
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 4.781565107550686e-05
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.00016176081582593645
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.0005122859561685103
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.0015135724506313009
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.004156422944312879
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.010564084894626208
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.0247264490306265
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.05294598120809501
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.10264365868984705
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.1764165183578342
    b2 = b1
    b1 = b0
    return t * b1 - b2 + 0.1262935932218168


# _I0E_LARGE: degree 7, float64 fit max relative error 9.96e-11
@triton.jit
def _i0e_large(t):
    t2 = 2.0 * t
    b1 = t * 0.0 + 4.940602369189358e-10
    b2 = t * 0.0
    b0 = t2 * b1 - b2 + 3.396232023829853e-09
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 2.2666689902266666e-08
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 2.0489185894458078e-07
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 2.8913705208322465e-06
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 6.889758346916614e-05
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + 0.0033691164782556917
    b2 = b1
    b1 = b0
    return t * b1 - b2 + 0.4022452055070544


# _I1E_LARGE: degree 7, float64 fit max relative error 1.17e-10
@triton.jit
def _i1e_large(t):
    t2 = 2.0 * t
    b1 = t * 0.0 + -5.589743453852199e-10
    b2 = t * 0.0
    b0 = t2 * b1 - b2 + -3.835380385100789e-09
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -2.6314688466114003e-08
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -2.5122362378476635e-07
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -3.882564808875521e-06
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.00011058893876262266
    b2 = b1
    b1 = b0
    b0 = t2 * b1 - b2 + -0.009761097491361465
    b2 = b1
    b1 = b0
    return t * b1 - b2 + 0.3892881175091401


# ---- END GENERATED ----


@triton.jit
def nlfs_i0e(x):
    a = tl.abs(x)
    s = tl.minimum(a, 8.0)
    small = _i0e_small(s * 0.25 - 1.0)
    b = tl.maximum(a, 8.0)
    big = _i0e_large(16.0 / b - 1.0) / tl.sqrt(b)
    return tl.where(a <= 8.0, small, big)


@triton.jit
def nlfs_i1e(x):
    a = tl.abs(x)
    s = tl.minimum(a, 8.0)
    small = s * _i1e_over_x_small(s * 0.25 - 1.0)
    b = tl.maximum(a, 8.0)
    big = _i1e_large(16.0 / b - 1.0) / tl.sqrt(b)
    r = tl.where(a <= 8.0, small, big)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def nlfs_i0(x):
    # exp overflows fp32 beyond |x| = 88.7 (I0 does too); the ops table clamps |x| <= ln(1e10)
    return tl.exp(tl.minimum(tl.abs(x), 88.0)) * nlfs_i0e(x)


@triton.jit
def nlfs_i1(x):
    return tl.exp(tl.minimum(tl.abs(x), 88.0)) * nlfs_i1e(x)
