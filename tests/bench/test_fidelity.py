"""bench/fidelity.py's analysis: levels, seeds and rank correlations recomputed from training rows."""

import pytest

from bench import fidelity


def _rows(n=8):
    rows = []
    for i in range(n):
        for variant in fidelity.VARIANTS:
            for level, spec in fidelity.LEVELS.items():
                first = 1 if level == "s64x3" else 0
                for seed in range(first, spec["seeds"]):
                    # cheap levels rank the losses as the final does, except s16, which reverses them
                    acc = (n - i if level == "s16" else i) / n + 0.001 * seed
                    rows.append(dict(loss_id=i, variant=variant, level=level, seed=seed, acc=acc, diverged=0,
                                     grad_scale=1.0, wall_s=1.0, reason=""))
    return rows


def test_correlations_and_report(tmp_path):
    rows = _rows()
    scores = fidelity.level_scores(rows)
    assert scores[(0, "none")]["s64x3"] == pytest.approx((0 + 0.001 + 0.002) / 3)  # s64's seed 0 joins it
    assert fidelity.correlations(scores, "none", "s64")["spearman"] == pytest.approx(1.0)
    assert fidelity.correlations(scores, "none", "s16")["spearman"] == pytest.approx(-1.0)
    partial = [r for r in rows if not (r["level"] == "final" and r["seed"] == 2 and r["loss_id"] == 0)]
    assert "final" not in fidelity.level_scores(partial)[(0, "none")]  # a final counts once all seeds are in
    losses = [dict(id=i, group="catalogue" if i < 4 else "near-ce", name=str(i), expression="CE") for i in range(8)]
    fidelity.report(losses, rows, "digits", "python -m bench.fidelity", tmp_path)
    md = (tmp_path / "fidelity_digits.md").read_text()
    assert "| s64 | 64 x 1 |" in md and "1.000 [" in md and "-1.000 [" in md
    assert (tmp_path / "fidelity_digits.csv").read_text().count("\n") == 1 + 16
