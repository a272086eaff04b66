"""Paired statistics for comparing losses over seeds: mean ± std, the paired t-test and the Wilcoxon
signed-rank test, with the small-sample and degenerate cases (n < 2, identical differences, all
differences zero) answered with NaN or an exact value instead of a scipy warning."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairedTest", "chance_best_paired", "expected_max_normal", "format_mean_std", "format_p", "format_pp",
           "holm", "mean", "mean_std", "paired_test", "paired_by_key", "paired_differences", "seed_noise",
           "strongest_on",
           "WILCOXON_EXACT_MAX_N", "WILCOXON_MIN_N"]

WILCOXON_MIN_N = 5  # below this the two-sided exact Wilcoxon p-value cannot go under 0.0625 anyway
WILCOXON_EXACT_MAX_N = 50  # above this the Wilcoxon p-value uses the normal approximation


def mean(values: Iterable[float], empty=math.nan):
    """The arithmetic mean summed left to right (``sum``, not ``math.fsum``: the committed tables were
    computed so, and the two can differ in the last digit); ``empty`` for no values."""
    xs = list(values)
    return sum(xs) / len(xs) if xs else empty


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1). NaN mean for no values, NaN std for one."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    m = math.fsum(xs) / n
    if n < 2:
        return m, math.nan
    var = math.fsum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var)


def format_mean_std(mean: float, std: float, digits: int = 2, scale: float = 1.0, sign: bool = False) -> str:
    """``"89.53 ± 0.21"`` (``scale=100`` turns fractions into percent; ``sign`` prefixes + to the mean).
    A NaN std (one value) prints the mean alone; a NaN mean prints ``"–"``."""
    if mean is None or not math.isfinite(mean):
        return "–"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = fmt.format(mean * scale)
    if std is None or not math.isfinite(std):
        return text
    return f"{text} ± {std * scale:.{digits}f}"


def format_p(p: float | None) -> str:
    """p-value for a table: 3 significant digits, ``<0.001`` below that, ``–`` for NaN/None."""
    if p is None or not math.isfinite(p):
        return "–"
    if p < 1e-3:
        return "<0.001"
    return f"{p:.3f}"


def format_pp(diff: float | None, ci: Sequence[float] | None = None, unit: str = " pp") -> str:
    """A difference (a fraction) in signed percentage points, with its interval when there is one:
    ``"+0.44 pp [+0.10, +0.78]"`` (``unit=""`` leaves the unit to the caller: ``"+0.44 [+0.10, +0.78]"``).
    None or a non-finite difference prints ``"-"``."""
    if diff is None or not math.isfinite(diff):
        return "-"
    text = f"{diff * 100:+.2f}{unit}"
    if ci:
        text += f" [{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"
    return text


@dataclass(frozen=True)
class PairedTest:
    """``a - b`` over ``n`` pairs: mean and std of the differences, the paired t-test (t, p) and the
    Wilcoxon signed-rank test (statistic, p; NaN when n < ``WILCOXON_MIN_N``). Two-sided."""

    n: int
    mean_diff: float
    std_diff: float
    t: float
    p_t: float
    w: float
    p_w: float
    wins: int  # pairs with a > b
    losses: int  # pairs with a < b
    ties: int
    ci_low: float = math.nan  # 95% t-interval of the mean difference
    ci_high: float = math.nan
    d_z: float = math.nan  # effect size: mean difference / std of the differences (Cohen's d_z)
    d_z_low: float = math.nan  # its approximate 95% interval (normal approximation)
    d_z_high: float = math.nan


def paired_test(a: Iterable[float], b: Iterable[float], wilcoxon_min_n: int = WILCOXON_MIN_N) -> PairedTest:
    """Paired comparison of equal-length sequences ``a`` and ``b`` (pair i = seed i).

    - n < 2: t and p are NaN (no variance estimate).
    - all differences zero: t = 0, p = 1 for both tests (nothing differs).
    - identical nonzero differences: the t statistic is infinite; t = ±inf, p = 0 (the sample has no
      spread, so any constant shift is "significant": read it with care).
    - Wilcoxon (scipy's ``wilcoxon``, ``zero_method="wilcox"``: zero differences are dropped): the
      exact null distribution when the differences are nonzero with distinct absolute values and
      there are at most ``WILCOXON_EXACT_MAX_N`` of them; otherwise (ties, zeros, or more pairs) the
      normal approximation with the tie correction and no continuity correction, as scipy computes it.
    """
    a = [float(x) for x in a]
    b = [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    d = [x - y for x, y in zip(a, b, strict=True)]
    m, s = mean_std(d)
    wins = sum(x > 0 for x in d)
    losses = sum(x < 0 for x in d)
    ties = n - wins - losses
    nan = math.nan
    t = p_t = w = p_w = nan
    if n >= 2:
        if all(x == 0 for x in d):
            t, p_t = 0.0, 1.0
        elif s == 0 or (math.isfinite(s) and s <= 1e-12 * max(1.0, abs(m))):
            t, p_t = math.copysign(math.inf, m), 0.0
        else:
            from scipy import stats

            res = stats.ttest_rel(a, b)
            t, p_t = float(res.statistic), float(res.pvalue)
    if n >= max(2, wilcoxon_min_n):
        if wins + losses == 0:
            w, p_w = 0.0, 1.0
        else:
            from scipy import stats

            nonzero = [abs(x) for x in d if x != 0]
            ties_or_zeros = len(nonzero) < n or len(set(nonzero)) < len(nonzero)
            # named rather than scipy's "auto", which picks a permutation test for ties under 14
            # pairs in recent versions and did not in older ones
            method = "asymptotic" if ties_or_zeros or n > WILCOXON_EXACT_MAX_N else "exact"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sample size too small for normal approximation"
                res = stats.wilcoxon(a, b, zero_method="wilcox", correction=False, method=method)
            w, p_w = float(res.statistic), float(res.pvalue)
    ci_lo = ci_hi = d_z = d_lo = d_hi = nan
    if n >= 2 and math.isfinite(s) and s > 0:
        from scipy import stats

        half = float(stats.t.ppf(0.975, n - 1)) * s / math.sqrt(n)
        ci_lo, ci_hi = m - half, m + half
        d_z = m / s
        se = math.sqrt(1.0 / n + d_z * d_z / (2.0 * n))
        d_lo, d_hi = d_z - 1.959964 * se, d_z + 1.959964 * se
    return PairedTest(n, m, s, t, p_t, w, p_w, wins, losses, ties, ci_lo, ci_hi, d_z, d_lo, d_hi)


def strongest_on(seeds: Iterable, scores: Mapping[str, Mapping]) -> str | None:
    """Of ``scores`` (``{name: {seed: score}}``), the one with the highest mean score over ``seeds`` among
    those that hold every one of them (a tie: the first given); None where none does. A contender is
    compared with the strongest on its own seeds: a mean over other seeds would favour a baseline by the
    seeds it happened to finish."""
    seeds = set(seeds)
    best, best_mean = None, -math.inf
    for name, by_seed in scores.items():
        if seeds and seeds <= set(by_seed):
            m = mean(by_seed[k] for k in seeds)
            if m > best_mean:
                best, best_mean = name, m
    return best


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, kept monotone, capped at 1), in input order; a
    NaN p-value stays NaN and does not count as a test."""
    ps = [float(p) for p in pvalues]
    valid = sorted((p, i) for i, p in enumerate(ps) if math.isfinite(p))
    m = len(valid)
    out = [math.nan] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired_differences(a: Mapping, b: Mapping) -> list[float]:
    """``a[k] - b[k]`` over the keys (e.g. seeds) present in both mappings, in sorted key order."""
    return [float(a[k]) - float(b[k]) for k in sorted(set(a) & set(b))]


def paired_by_key(a: Mapping, b: Mapping, wilcoxon_min_n: int = WILCOXON_MIN_N) -> PairedTest:
    """``paired_test`` over the keys (e.g. seeds) present in both mappings, in sorted key order."""
    keys = sorted(set(a) & set(b))
    return paired_test([a[k] for k in keys], [b[k] for k in keys], wilcoxon_min_n)


def seed_noise(differences: Iterable[Sequence[float]]) -> tuple[float, int]:
    """(sd, n): how far one seed moves a paired difference when nothing about the loss changes: the
    median, over ``n`` candidates, of the sample standard deviation across seeds of each one's paired
    differences to the baseline (candidates with under two seeds left out; NaN and 0 for none)."""
    sds = [statistics.stdev(d) for d in map(list, differences) if len(d) > 1]
    return (statistics.median(sds), len(sds)) if sds else (math.nan, 0)


def expected_max_normal(n: int, sd: float = 1.0) -> float:
    """E[max] of ``n`` independent N(0, sd^2) draws (NaN for n < 1): the best score a search reports
    among ``n`` candidates whose true difference to the baseline is zero, when each score carries
    noise of standard deviation ``sd`` (the winner's curse)."""
    if n < 1:
        return math.nan
    from scipy import integrate, stats

    def integrand(x):
        return x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)

    return sd * integrate.quad(integrand, -12.0, 12.0)[0]


def chance_best_paired(n: int, seed_sd: float, seeds: int) -> tuple[float, float]:
    """(low, high): the expected best of ``n`` candidates' mean paired difference over ``seeds`` seeds
    when none truly differs from the baseline and one seed's paired difference has sd ``seed_sd``.
    Every candidate is paired with the same baseline trainings, whose noise is shared and cannot make
    one candidate beat another: ``low`` takes candidates as noisy as the baseline (half a paired
    difference's variance shared), ``high`` none of it shared (an upper bound)."""
    mean_sd = seed_sd / math.sqrt(seeds)
    return expected_max_normal(n, mean_sd / math.sqrt(2)), expected_max_normal(n, mean_sd)
