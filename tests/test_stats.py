import math

import pytest

from nlfs.stats import (
    expected_max_normal,
    format_mean_std,
    format_p,
    format_pp,
    mean_std,
    paired_by_key,
    paired_differences,
    paired_test,
)

# Student's sleep data (Cushny & Peebles 1905), the textbook paired example: R's
# t.test(extra ~ group, data = sleep, paired = TRUE) gives t = -4.0621, df = 9, p = 0.002833,
# mean difference -1.58.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_mean_std_sample_sd():
    m, s = mean_std([1, 2, 3, 4])
    assert m == 2.5
    assert s == pytest.approx(math.sqrt(5 / 3))  # ddof = 1
    m, s = mean_std([0.7])
    assert m == 0.7 and math.isnan(s)
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)


def test_paired_t_textbook_sleep():
    r = paired_test(SLEEP_1, SLEEP_2)
    assert r.n == 10
    assert r.mean_diff == pytest.approx(-1.58)
    # by hand: t = mean(d) / (sd(d) / sqrt(n))
    d = [a - b for a, b in zip(SLEEP_1, SLEEP_2, strict=True)]
    sd = math.sqrt(sum((x + 1.58) ** 2 for x in d) / 9)
    assert r.std_diff == pytest.approx(sd)
    assert r.t == pytest.approx(-1.58 / (sd / math.sqrt(10)))
    assert r.t == pytest.approx(-4.0621, abs=1e-4)
    assert r.p_t == pytest.approx(0.002833, abs=1e-6)
    assert (r.wins, r.losses, r.ties) == (0, 9, 1)
    assert r.w == 0.0 and 0 < r.p_w < 0.02  # every nonzero difference is negative


def test_wilcoxon_exact_small_sample():
    # six pairs, all differences positive and distinct: exact two-sided p = 2 / 2**6
    a = [1.1, 2.2, 3.3, 4.4, 5.5, 6.6]
    b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    r = paired_test(a, b)
    assert r.w == 0.0
    assert r.p_w == pytest.approx(2 / 64)
    assert r.wins == 6


def test_wilcoxon_only_from_five_pairs():
    r = paired_test([1.0, 2.0, 3.5, 4.0], [0.5, 2.1, 3.0, 3.8])
    assert math.isfinite(r.p_t) and math.isnan(r.p_w) and math.isnan(r.w)


def test_degenerate_cases():
    r = paired_test([0.9], [0.8])  # n < 2
    assert r.n == 1 and math.isnan(r.t) and math.isnan(r.p_t) and math.isnan(r.p_w)
    assert r.mean_diff == pytest.approx(0.1) and math.isnan(r.std_diff)
    r = paired_test([0.5] * 5, [0.5] * 5)  # nothing differs
    assert (r.t, r.p_t, r.p_w, r.ties) == (0.0, 1.0, 1.0, 5)
    r = paired_test([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0])  # constant shift
    assert r.t == math.inf and r.p_t == 0.0
    r = paired_test([], [])
    assert r.n == 0 and math.isnan(r.mean_diff)
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])


def test_paired_by_key_uses_common_keys():
    r = paired_by_key({0: 0.9, 1: 0.8, 2: 0.7}, {1: 0.7, 2: 0.8, 3: 0.1})
    assert r.n == 2 and r.mean_diff == pytest.approx(0.0)
    assert paired_differences({2: 0.7, 0: 0.9, 1: 0.8}, {1: 0.7, 2: 0.8, 3: 0.1}) == pytest.approx([0.1, -0.1])


def test_formatting():
    assert format_mean_std(0.89531, 0.00212, 2, 100) == "89.53 ± 0.21"
    assert format_mean_std(0.0125, 0.004, 2, 100, sign=True) == "+1.25 ± 0.40"
    assert format_mean_std(-0.0125, 0.004, 2, 100, sign=True) == "-1.25 ± 0.40"
    assert format_mean_std(0.9, math.nan, 1, 100) == "90.0"
    assert format_mean_std(math.nan, math.nan) == "–"
    assert format_p(0.002833) == "0.003" and format_p(1e-5) == "<0.001"
    assert format_p(math.nan) == "–" and format_p(None) == "–"


def test_percentage_points_as_the_search_report_writes_them():
    """format_pp writes what nlfs.search's report wrote (its ``pp``) for every finite difference, with None
    and a non-finite difference as "-"; ``unit=""`` leaves the unit to the caller."""
    for diff, ci, text in [(0.0044, None, "+0.44 pp"), (-0.01234, [-0.02, -0.004], "-1.23 pp [-2.00, -0.40]"),
                           (0.0, [0.0, 0.0], "+0.00 pp [+0.00, +0.00]"), (1e-9, [], "+0.00 pp"),
                           (-0.5, None, "-50.00 pp"), (0.00005, [-0.00005, 0.00015], "+0.01 pp [-0.01, +0.01]"),
                           (None, None, "-"), (None, [0.1, 0.2], "-")]:
        assert format_pp(diff, ci) == text
    assert format_pp(0.0044, [0.001, 0.0078]) == "+0.44 pp [+0.10, +0.78]"
    assert format_pp(-0.0123, [-0.02, -0.0046], unit="") == "-1.23 [-2.00, -0.46]"
    assert format_pp(math.nan) == format_pp(math.inf, [0.1, 0.2]) == format_pp(None, unit="") == "-"


def test_holm_matches_the_step_down_procedure():
    from nlfs.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, kept monotone: 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, float("nan"), 0.005]) == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02],
                                                                             nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def test_confidence_interval_and_effect_size():
    from scipy import stats

    a, b = [1, 2, 3, 4, 5], [1.1, 1.8, 2.7, 3.9, 4.6]
    t = paired_test(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval()
    assert (t.ci_low, t.ci_high) == pytest.approx((ci.low, ci.high))
    assert t.d_z == pytest.approx(t.mean_diff / t.std_diff)
    assert t.d_z_low < t.d_z < t.d_z_high
    assert math.isnan(paired_test([1.0], [0.5]).ci_low)


def test_expected_max_normal_matches_simulation_and_known_values():
    import numpy as np

    assert expected_max_normal(1, 0.5) == 0.0
    assert math.isclose(expected_max_normal(2), 1 / math.sqrt(math.pi), rel_tol=1e-9)  # closed form
    sim = np.random.default_rng(0).normal(0, 0.5, (100_000, 41)).max(axis=1).mean()
    assert math.isclose(expected_max_normal(41, 0.5), sim, rel_tol=0.01)
    assert expected_max_normal(68) > expected_max_normal(41) > expected_max_normal(2)
    assert math.isnan(expected_max_normal(0))


def _normal_approx_p(d):
    """Two-sided Wilcoxon p by the textbook normal approximation: zeros dropped, average ranks, the
    variance reduced by sum(t^3 - t) / 48 over tie groups, no continuity correction."""
    nz = [x for x in d if x != 0]
    n = len(nz)
    absd = sorted(abs(x) for x in nz)
    rank = {}
    i = 0
    while i < n:
        j = i
        while j < n and absd[j] == absd[i]:
            j += 1
        rank[absd[i]] = (i + 1 + j) / 2  # average of ranks i+1 .. j
        i = j
    w_plus = sum(rank[abs(x)] for x in nz if x > 0)
    groups = {v: absd.count(v) for v in set(absd)}
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in groups.values()) / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def _exact_p(d):
    """Two-sided exact Wilcoxon p by enumerating the 2**n sign patterns (distinct nonzero |d|)."""
    import itertools

    absd = sorted(abs(x) for x in d)
    ranks = {v: i + 1 for i, v in enumerate(absd)}
    w_plus = sum(ranks[abs(x)] for x in d if x > 0)
    n = len(d)
    sums = [sum(r for r, s in zip(range(1, n + 1), signs, strict=True) if s)
            for signs in itertools.product((0, 1), repeat=n)]
    low = sum(s <= w_plus for s in sums) / len(sums)
    high = sum(s >= w_plus for s in sums) / len(sums)
    return min(1.0, 2 * min(low, high))


def test_wilcoxon_ties_use_the_normal_approximation_with_tie_correction():
    from scipy import stats

    # eleven pairs, the absolute differences tie (2 four times, 7 twice) and two are zero: scipy's "auto"
    # gives a permutation p of 0.0195 here, the documented normal approximation 0.0167
    b = [0.0] * 11
    a = [2.0, 2.0, 7.0, 0.0, -2.0, 2.0, 6.0, 7.0, 0.0, 4.0, 5.0]
    r = paired_test(a, b)
    expected = stats.wilcoxon(a, b, zero_method="wilcox", correction=False, method="asymptotic").pvalue
    assert r.p_w == pytest.approx(expected, rel=1e-12)
    assert r.p_w == pytest.approx(_normal_approx_p(a), rel=1e-9)
    assert r.p_w == pytest.approx(0.016730, abs=1e-6)
    assert r.w == 2.5  # the -2 ties with the three 2s: ranks 1-4 shared, 2.5 each
    assert (r.wins, r.losses, r.ties) == (8, 1, 2)


@pytest.mark.parametrize("d", [
    [0.3, 0.3, -0.1, 0.5, 0.3, 0.8, 0.9],  # ties, no zeros
    [1.0, 0.0, 2.0, 3.0, -4.0, 5.0, 6.0],  # one zero, distinct otherwise
    [0.0, 0.0, 1.5, -1.5, 2.5, 3.5, 4.5, 2.5],  # zeros and ties, a tie across signs
    [1.0, 1.0, 1.0, 1.0, 1.0, -1.0],  # all tied
])
def test_wilcoxon_with_ties_or_zeros_matches_scipys_normal_approximation(d):
    from scipy import stats

    a = [10.0 + x for x in d]
    b = [10.0] * len(d)
    diffs = [x - y for x, y in zip(a, b, strict=True)]  # what paired_test sees, rounding included
    r = paired_test(a, b)
    expected = stats.wilcoxon(diffs, zero_method="wilcox", correction=False, method="asymptotic")
    assert r.p_w == pytest.approx(expected.pvalue, rel=1e-12)
    assert r.w == pytest.approx(expected.statistic)
    assert r.p_w == pytest.approx(_normal_approx_p(diffs), rel=1e-9)


@pytest.mark.parametrize("d", [
    [0.5, -0.2, 0.9, 1.3, -0.7],
    [0.11, 0.27, -0.05, 0.33, 0.41, -0.19, 0.52, 0.6],
    [-1.0, -2.5, 3.0, -4.0, -5.5, -6.0, 7.5, -8.0, -9.25],
])
def test_wilcoxon_without_ties_or_zeros_is_exact(d):
    from scipy import stats

    r = paired_test(d, [0.0] * len(d))
    assert r.p_w == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    assert r.p_w == pytest.approx(_exact_p(d), rel=1e-12)


def test_seed_noise_is_the_median_of_each_candidates_spread_over_seeds():
    import statistics

    from nlfs.stats import seed_noise

    diffs = [[0.01, 0.03, 0.02], [0.0, 0.0], [-0.02, 0.02], [0.5]]  # the last has one seed: left out
    sd, n = seed_noise(diffs)
    assert n == 3 and sd == statistics.median([statistics.stdev(d) for d in diffs[:3]]) == 0.01
    assert seed_noise(iter([])) == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_mean_sums_as_the_committed_tables_did():
    from nlfs.stats import mean

    xs = [0.1] * 10
    assert mean(xs) == sum(xs) / 10 != math.fsum(xs) / 10  # the last digit the tables were written with
    assert math.isnan(mean([])) and mean([], empty=None) is None


def test_the_strongest_is_chosen_on_the_given_seeds_among_those_that_hold_them():
    from nlfs.stats import strongest_on

    scores = {"CE": {0: 0.5, 1: 0.5, 2: 0.5}, "LS": {0: 0.3, 1: 0.6, 2: 0.6}, "part": {1: 0.9}}
    assert strongest_on([0, 1, 2], scores) == "CE"  # LS's mean over all three is below CE's
    assert strongest_on([1, 2], scores) == "LS"  # on these seeds it is above; "part" lacks seed 2
    assert strongest_on([1], scores) == "part"
    assert strongest_on([3], scores) is None and strongest_on([], scores) is None
    assert strongest_on([0], {"CE": {0: 0.5}, "LS": {0: 0.5}}) == "CE"  # a tie: the first given
