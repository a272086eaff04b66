"""bench/discovery2.py --plan: the campaign's trainings and CPU-hours per stage, cut to the budget."""

import csv
import statistics

from bench import discovery2 as d2

COSTS = d2.Costs(target_s=3600.0, screen=0.5, resnet9v2=2.0, digits=0.1)  # 1 unit = 1 CPU-hour
SMALL = d2.PlanConfig(candidates=10, leaders=1, search_target_seeds=2, finalists=1, lr_points=3, lr_widen=1,
                      lr_seeds=1, eps_points=3, test_seeds=10, heldout_seeds=5, confirm_seeds=4,
                      optional_baselines=False, heldout=(("noisy", "noise20"), ("clean", "resnet9v2")))


def test_plan_arithmetic_by_hand():
    rows = {(s.regime, s.stage): (s.trainings, s.units) for s in d2.stages(SMALL, COSTS)}
    assert rows == {
        ("clean", "search: screening"): (10, 5.0),
        ("clean", "search: target"): (4, 4.0),  # (1 leader + CE) x 2 seeds
        ("clean", "learning rate"): (24, 24.0),  # 4 losses x 4 rates, + label smoothing's 2 other eps x 4
        ("clean", "test (elimination, Holm)"): (40, 40.0),
        ("clean", "held-out: resnet9v2"): (32, 64.0),  # 4 losses x (5 seeds + 3 rates), twice the cost
        ("clean", "confirmation"): (8, 8.0),
        ("noisy", "search: screening"): (10, 5.0),
        ("noisy", "search: target"): (4, 4.0),
        ("noisy", "learning rate"): (20, 20.0),  # 5 losses x 4 rates
        ("noisy", "test (elimination, Holm)"): (50, 50.0),
        ("noisy", "held-out: noise20"): (25, 25.0),  # 5 losses x 5 seeds, the regime's rates
        ("noisy", "confirmation"): (8, 8.0),
    }
    assert d2.cpu_hours(d2.stages(SMALL, COSTS), COSTS) == 257.0


def test_fit_cuts_settings_in_order_and_keeps_seeds_and_baselines():
    roomy = d2.PlanConfig(budget_h=1e6)
    assert d2.fit(roomy, COSTS) == (roomy, [])
    tight = d2.PlanConfig(budget_h=300.0)
    cfg, cuts = d2.fit(tight, COSTS)
    assert d2.cpu_hours(d2.stages(cfg, COSTS), COSTS) <= 300.0 < d2.cpu_hours(d2.stages(tight, COSTS), COSTS)
    order = [what for what, _ in d2.CUTS]
    assert cuts == order[:len(cuts)] and cuts
    assert cfg.test_seeds == tight.test_seeds and cfg.confirm_seeds == tight.confirm_seeds
    tests = {s.regime: s.detail for s in d2.stages(cfg, COSTS) if s.stage.startswith("test")}
    for regime, baselines in d2.BASELINES.items():
        assert f"({len(baselines)} baselines" in tests[regime]


def test_measured_costs_read_the_committed_target_trainings(tmp_path):
    with d2.TRAININGS_CSV.open(newline="") as fh:
        walls = [float(r["wall_s"]) for r in csv.DictReader(fh) if r["level"] == "target8"]
    costs = d2.measured_costs()
    assert costs.target_s == statistics.median(walls)
    assert 0 < costs.screen < 1 and 0 < costs.digits < 1 and costs.resnet9v2 > 0
    assert d2.measured_costs(100.0).target_s == 100.0
    out = tmp_path / "plan.md"
    assert d2.main(["--plan", "--budget", "25", "--out", str(out)]) == 0
    text = out.read_text()
    cfg, _ = d2.fit(d2.PlanConfig(budget_h=25.0), costs)
    total = d2.cpu_hours(d2.stages(cfg, costs), costs)
    assert f"**Total: {total:.1f} CPU-hours" in text and "| noisy | test (elimination, Holm) |" in text
