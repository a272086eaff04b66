// Scalar helpers for the generated op code (ops_generated.h): sign, sigmoid, max/min and the
// modified Bessel functions I0, I0e, I1, I1e in double precision (float overloads widen and narrow).
//
// Bessel functions: Cephes Math Library 2.8 (Stephen L. Moshier, BSD licence), the same Chebyshev
// expansions PyTorch (aten/src/ATen/native/Math.h), NumPy and SciPy use:
//   |x| <= 8: exp(-|x|) I_n(x) = chbevl(|x|/2 - 2, A)        (times |x| for n = 1)
//   |x| >  8: exp(-|x|) I_n(x) = chbevl(32/|x| - 2, B) / sqrt(|x|)   (asymptotic branch)
// Documented error bounds (Cephes, IEEE double, x in [0, 30], 30000 points), relative:
//   i0  peak 5.8e-16 (rms 1.4e-16)    i0e peak 5.4e-16 (rms 1.2e-16)
//   i1  peak 1.9e-15 (rms 2.1e-16)    i1e peak 2.0e-15 (rms 2.0e-16)
// tests/backends/test_cpp.py checks all four against scipy.special to 1e-14 relative over
// [-700, 700] (i0/i1) and [-1e300, 1e300] (i0e/i1e). The scaled forms are finite for every finite x
// (the asymptotic branch never calls exp); i0/i1 overflow only past |x| ~ 713, and every op that
// uses them clamps its input to +-ln(1e10) first.
#pragma once
#include <cmath>

// With NLFS_LIBMVEC (setup.py: x86-64 glibc), declare the libm functions the generated loops call
// as having SIMD clones, so GCC vectorises those loops through glibc's libmvec (_ZGVdN4v_exp...),
// as <math.h> itself does under -ffast-math; -fno-math-errno (setup.py) is what lets it. libmvec's
// documented accuracy is <= 4 ulp. Which lanes a loop runs in SIMD depends only on the position in
// the 64-byte-aligned chunk buffers, so results stay identical for every thread count.
#if defined(NLFS_LIBMVEC) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NLFS_SIMD_DECL __attribute__((__simd__("notinbranch")))
extern "C" {
NLFS_SIMD_DECL double exp(double) noexcept;
NLFS_SIMD_DECL double log(double) noexcept;
NLFS_SIMD_DECL double log1p(double) noexcept;
NLFS_SIMD_DECL double expm1(double) noexcept;
NLFS_SIMD_DECL double sin(double) noexcept;
NLFS_SIMD_DECL double cos(double) noexcept;
NLFS_SIMD_DECL double tanh(double) noexcept;
NLFS_SIMD_DECL double sinh(double) noexcept;
NLFS_SIMD_DECL double asinh(double) noexcept;
NLFS_SIMD_DECL double atan(double) noexcept;
NLFS_SIMD_DECL double erf(double) noexcept;
NLFS_SIMD_DECL double erfc(double) noexcept;
// float clones (_ZGVdN8v_expf, _ZGVeN16v_expf...): the float32 compute path (glibc >= 2.35 for
// all but expf/logf/sinf/cosf, which are 2.22).
NLFS_SIMD_DECL float expf(float) noexcept;
NLFS_SIMD_DECL float logf(float) noexcept;
NLFS_SIMD_DECL float log1pf(float) noexcept;
NLFS_SIMD_DECL float expm1f(float) noexcept;
NLFS_SIMD_DECL float sinf(float) noexcept;
NLFS_SIMD_DECL float cosf(float) noexcept;
NLFS_SIMD_DECL float tanhf(float) noexcept;
NLFS_SIMD_DECL float sinhf(float) noexcept;
NLFS_SIMD_DECL float asinhf(float) noexcept;
NLFS_SIMD_DECL float atanf(float) noexcept;
NLFS_SIMD_DECL float erff(float) noexcept;
NLFS_SIMD_DECL float erfcf(float) noexcept;
}
#endif

// The special functions are forced inline: inside the large generated op switch GCC's inlining
// budget runs out, and a call in a loop keeps the loop from vectorising.
#if defined(__GNUC__)
#define NLFS_INLINE inline __attribute__((always_inline))
#else
#define NLFS_INLINE inline
#endif

namespace nlfs_gen {

// Templates on the compute type (double, or float for the float32 path).
template <typename U>
inline U nl_sign(U x) { return x > U(0) ? U(1) : (x < U(0) ? U(-1) : U(0)); }
template <typename U>
inline U nl_sigmoid(U x) { return U(1) / (U(1) + std::exp(-x)); }
template <typename U>
inline U nl_max(U a, U b) { return a > b ? a : (a < b ? b : a); }
template <typename U>
inline U nl_min(U a, U b) { return a < b ? a : (a > b ? b : a); }

namespace cephes {

// Clenshaw recurrence of a Chebyshev series with N coefficients, unrolled so that a loop over
// elements calling it vectorises (same operations in the same order as Cephes' chbevl).
template <int N>
NLFS_INLINE double chbevl(double x, const double (&array)[N]) {
  double b0 = array[0], b1 = 0.0, b2 = 0.0;
#pragma GCC unroll 32
  for (int i = 1; i < N; ++i) {
    b2 = b1;
    b1 = b0;
    b0 = x * b1 - b2 + array[i];
  }
  return 0.5 * (b0 - b2);
}

// exp(-x) I0(x) on [0, 8]; lim(x->0) = 1.
static const double I0_A[30] = {
    -4.41534164647933937950E-18, 3.33079451882223809783E-17, -2.43127984654795469359E-16,
    1.71539128555513303061E-15,  -1.16853328779934516808E-14, 7.67618549860493561688E-14,
    -4.85644678311192946090E-13, 2.95505266312963983461E-12, -1.72682629144155570723E-11,
    9.67580903537323691224E-11,  -5.18979560163526290666E-10, 2.65982372468238665035E-9,
    -1.30002500998624804212E-8,  6.04699502254191894932E-8,  -2.67079385394061173391E-7,
    1.11738753912010371815E-6,   -4.41673835845875056359E-6, 1.64484480707288970893E-5,
    -5.75419501008210370398E-5,  1.88502885095841655729E-4,  -5.76375574538582365885E-4,
    1.63947561694133579842E-3,   -4.32430999505057594430E-3, 1.05464603945949983183E-2,
    -2.37374148058994688156E-2,  4.93052842396707084878E-2,  -9.49010970480476444210E-2,
    1.71620901522208775349E-1,   -3.04682672343198398683E-1, 6.76795274409476084995E-1};

// exp(-x) sqrt(x) I0(x) on [8, inf] in 32/x - 2; lim(x->inf) = 1/sqrt(2 pi).
static const double I0_B[25] = {
    -7.23318048787475395456E-18, -4.83050448594418207126E-18, 4.46562142029675999901E-17,
    3.46122286769746109310E-17,  -2.82762398051658348494E-16, -3.42548561967721913462E-16,
    1.77256013305652638360E-15,  3.81168066935262242075E-15,  -9.55484669882830764870E-15,
    -4.15056934728722208663E-14, 1.54008621752140982691E-14,  3.85277838274214270114E-13,
    7.18012445138366623367E-13,  -1.79417853150680611778E-12, -1.32158118404477131188E-11,
    -3.14991652796324136454E-11, 1.18891471078464383424E-11,  4.94060238822496958910E-10,
    3.39623202570838634515E-9,   2.26666899049817806459E-8,   2.04891858946906374183E-7,
    2.89137052083475648297E-6,   6.88975834691682398426E-5,   3.36911647825569408990E-3,
    8.04490411014108831608E-1};

// exp(-x) I1(x) / x on [0, 8]; lim(x->0) = 1/2.
static const double I1_A[29] = {
    2.77791411276104639959E-18,  -2.11142121435816608115E-17, 1.55363195773620046921E-16,
    -1.10559694773538630805E-15, 7.60068429473540693410E-15,  -5.04218550472791168711E-14,
    3.22379336594557470981E-13,  -1.98397439776494371520E-12, 1.17361862988909016308E-11,
    -6.66348972350202774223E-11, 3.62559028155211703701E-10,  -1.88724975172282928790E-9,
    9.38153738649577178388E-9,   -4.44505912879632808065E-8,  2.00329475355213526229E-7,
    -8.56872026469545474066E-7,  3.47025130813767847674E-6,   -1.32731636560394358279E-5,
    4.78156510755005422638E-5,   -1.61760815825896745588E-4,  5.12285956168575772895E-4,
    -1.51357245063125314899E-3,  4.15642294431288815669E-3,   -1.05640848946261981558E-2,
    2.47264490306265168283E-2,   -5.29459812080949914269E-2,  1.02643658689847095384E-1,
    -1.76416518357834055153E-1,  2.52587186443633654823E-1};

// exp(-x) sqrt(x) I1(x) on [8, inf] in 32/x - 2; lim(x->inf) = 1/sqrt(2 pi).
static const double I1_B[25] = {
    7.51729631084210481353E-18,  4.41434832307170791151E-18,  -4.65030536848935832153E-17,
    -3.20952592199342395980E-17, 2.96262899764595013876E-16,  3.30820231092092828324E-16,
    -1.88035477551078244854E-15, -3.81440307243700780478E-15, 1.04202769841288027642E-14,
    4.27244001671195135429E-14,  -2.10154184277266431302E-14, -4.08355111109219731823E-13,
    -7.19855177624590851209E-13, 2.03562854414708950722E-12,  1.41258074366137813316E-11,
    3.25260358301548823856E-11,  -1.89749581235054123450E-11, -5.58974346219658380687E-10,
    -3.83538038596423702205E-9,  -2.63146884688951950684E-8,  -2.51223623787020892529E-7,
    -3.88256480887769039346E-6,  -1.10588938762623716291E-4,  -9.76109749136146840777E-3,
    7.78576235018280120474E-1};

}  // namespace cephes

// Branch-free (both expansions are evaluated and one is selected) so that the element loops
// vectorise; the same operations in the same order as the branching Cephes code (in a vectorised
// loop, exp is libmvec's). `big` keeps the asymptotic expansion's argument finite on the lanes that
// do not use it.
NLFS_INLINE double nl_i0e(double x) {
  const double ax = std::fabs(x);
  const bool small = ax <= 8.0;
  const double big = small ? 8.0 : ax;
  const double ra = cephes::chbevl(ax / 2.0 - 2.0, cephes::I0_A);
  const double rb = cephes::chbevl(32.0 / big - 2.0, cephes::I0_B) / std::sqrt(big);
  return small ? ra : rb;
}

NLFS_INLINE double nl_i0(double x) {
  const double ax = std::fabs(x);
  const bool small = ax <= 8.0;
  const double big = small ? 8.0 : ax;
  const double e = std::exp(ax);
  const double ra = e * cephes::chbevl(ax / 2.0 - 2.0, cephes::I0_A);
  const double rb = e * cephes::chbevl(32.0 / big - 2.0, cephes::I0_B) / std::sqrt(big);
  return small ? ra : rb;
}

NLFS_INLINE double nl_i1e(double x) {
  const double ax = std::fabs(x);
  const bool small = ax <= 8.0;
  const double big = small ? 8.0 : ax;
  const double ra = cephes::chbevl(ax / 2.0 - 2.0, cephes::I1_A) * ax;
  const double rb = cephes::chbevl(32.0 / big - 2.0, cephes::I1_B) / std::sqrt(big);
  const double r = small ? ra : rb;
  return x < 0.0 ? -r : r;
}

NLFS_INLINE double nl_i1(double x) {
  const double ax = std::fabs(x);
  const bool small = ax <= 8.0;
  const double big = small ? 8.0 : ax;
  const double e = std::exp(ax);
  const double ra = e * ax * cephes::chbevl(ax / 2.0 - 2.0, cephes::I1_A);
  const double rb = e * cephes::chbevl(32.0 / big - 2.0, cephes::I1_B) / std::sqrt(big);
  const double r = small ? ra : rb;
  return x < 0.0 ? -r : r;
}

// The float32 path evaluates the Cephes expansions in double and rounds the result once.
NLFS_INLINE float nl_i0(float x) { return static_cast<float>(nl_i0(static_cast<double>(x))); }
NLFS_INLINE float nl_i0e(float x) { return static_cast<float>(nl_i0e(static_cast<double>(x))); }
NLFS_INLINE float nl_i1(float x) { return static_cast<float>(nl_i1(static_cast<double>(x))); }
NLFS_INLINE float nl_i1e(float x) { return static_cast<float>(nl_i1e(static_cast<double>(x))); }

}  // namespace nlfs_gen
