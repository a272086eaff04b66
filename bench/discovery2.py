"""Discovery campaign 2 (issue #26): two target regimes on Fashion-MNIST, clean labels and 40% symmetric
label noise, each searched, eliminated and tested against the strongest known losses of its regime.

    python -m bench.discovery2 --plan      # the compute plan -> bench/results/discovery2_plan.md

The plan is written before anything runs. Its unit is one target-regime training (surrogate CNN, the
whole training split, CE's plateau length, 1 thread): its cost is the median ``wall_s`` of the target
level in bench/results/target_fidelity_fashion_mnist_trainings.csv (or ``--target-wall-s``). Every
other training is priced relative to it, from committed measurements of one machine and date each: a
screening training (the same CSV's ``s64`` level), ResNet9V2 (bench/results/discovery/heldout: its arch
setting against the full-split one, per image-epoch) and digits (bench/results/target_curve_*.csv). The
stages follow the issue's protocol: a target-regime search per regime; learning rate per loss from a
grid, widened when the choice lands on an edge, on seeds that are not test seeds; every loss, baselines
included, on 10 test seeds (each its own training subset and label noise: ``split_seed = seed``);
held-out settings for at most three finalists; a confirmation on fresh seeds against the strongest
baseline. When the plan exceeds the budget, settings are cut in a fixed order (``CUTS``) until it fits;
the test seeds and the strongest baselines are never cut.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
TRAININGS_CSV = RESULTS / "target_fidelity_fashion_mnist_trainings.csv"
HELDOUT_DIR = RESULTS / "discovery" / "heldout"
CURVES = {"fashion-mnist": RESULTS / "target_curve_fashion_mnist_surrogate.csv",
          "digits": RESULTS / "target_curve_digits_surrogate.csv"}
PLAN_MD = RESULTS / "discovery2_plan.md"
TARGET_LEVEL = "target8"
SCREEN_LEVEL = "s64"
TARGET_EPOCHS = {"fashion-mnist": 8, "digits": 16}  # CE's plateau (nlfs.search.DEFAULT_TARGETS)

REGIMES = {
    "clean": "clean labels, all training images, 8 epochs",
    "noisy": "40% symmetric label noise, all training images, 8 epochs",
}
# The strongest known losses of each regime (never cut) and weaker ones run while the budget allows.
BASELINES = {"clean": ("CE", "LabelSmoothingCE", "Poly1"), "noisy": ("CE", "GCE", "SCE", "NCEandRCE")}
OPTIONAL_BASELINES = {"clean": (), "noisy": ("MAE", "TaylorCE")}
# Held-out settings per regime: (name, what it is, its cost's key in Costs, whether the learning rate is
# chosen again: only where the model or the data change; another noise on the same data and model keeps
# the rate chosen in the regime).
HELDOUT = {
    "clean": (("resnet9v2", "ResNet9V2 instead of the surrogate CNN", "resnet9v2", True),
              ("digits", "sklearn digits, all images, 16 epochs", "digits", True)),
    "noisy": (("noise20", "20% symmetric label noise", "target", False),
              ("pairflip", "40% pair-flip noise (c -> c+1; Fashion-MNIST has no literature class map)", "target",
               False),
              ("resnet9v2", "ResNet9V2 instead of the surrogate CNN", "resnet9v2", True),
              ("digits", "sklearn digits, all images, 16 epochs, 40% symmetric noise", "digits", True)),
}


@dataclasses.dataclass(frozen=True)
class Costs:
    """CPU-seconds of one target training and the cost of other trainings relative to it."""

    target_s: float
    screen: float  # one screening training (the search's rung), in target trainings
    resnet9v2: float
    digits: float
    target: float = 1.0


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    budget_h: float = 25.0
    candidates: int = 200  # screened per search
    leaders: int = 4  # trained in the target by the search, paired with CE
    search_target_seeds: int = 2
    finalists: int = 3  # per regime, after elimination (at most three)
    lr_points: int = 3  # the learning-rate grid, e.g. {0.05, 0.1, 0.2}
    lr_widen: int = 1  # points added per loss on average when the choice lands on an edge
    lr_seeds: int = 1  # learning-rate seeds, disjoint from the test seeds
    eps_points: int = 3  # label smoothing's eps, tuned with the learning rate
    test_seeds: int = 10
    heldout_seeds: int = 10
    confirm_seeds: int = 10
    optional_baselines: bool = True
    heldout: tuple = tuple((r, s[0]) for r, settings in HELDOUT.items() for s in settings)


@dataclasses.dataclass(frozen=True)
class Stage:
    regime: str
    stage: str
    trainings: int
    units: float  # target trainings' worth
    detail: str


def _median_wall(path: Path, **match) -> float:
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if all(str(r.get(k)) == str(v) for k, v in match.items())]
    if not rows:
        raise ValueError(f"{path}: no rows with {match}")
    col = "wall_s" if "wall_s" in rows[0] else "wall_time"
    return statistics.median(float(r[col]) for r in rows if r.get(col) not in (None, ""))


def measured_costs(target_wall_s: float | None = None) -> Costs:
    """Costs from the committed measurements (module docstring); ``target_wall_s`` overrides the
    target training's."""
    target = target_wall_s or _median_wall(TRAININGS_CSV, level=TARGET_LEVEL)
    screen = _median_wall(TRAININGS_CSV, level=SCREEN_LEVEL) / _median_wall(TRAININGS_CSV, level=TARGET_LEVEL)
    # ResNet9V2 against the surrogate per image-epoch, both from the first campaign's held-out runs
    arch = _median_wall(HELDOUT_DIR / "arch.csv") / (8192 * 2)
    full = _median_wall(HELDOUT_DIR / "full.csv") / (55000 * 2)
    digits = (_median_wall(CURVES["digits"], epochs=TARGET_EPOCHS["digits"])
              / _median_wall(CURVES["fashion-mnist"], epochs=TARGET_EPOCHS["fashion-mnist"]))
    return Costs(target_s=target, screen=screen, resnet9v2=arch / full, digits=digits)


def stages(cfg: PlanConfig, costs: Costs) -> list[Stage]:
    """Every stage of both regimes: trainings and their cost in target trainings."""
    out = []
    for regime in REGIMES:
        baselines = BASELINES[regime] + (OPTIONAL_BASELINES[regime] if cfg.optional_baselines else ())
        losses = len(baselines) + cfg.finalists
        screen = cfg.candidates
        out.append(Stage(regime, "search: screening", screen, screen * costs.screen,
                         f"{cfg.candidates} candidates at the screening rung"))
        target = (cfg.leaders + 1) * cfg.search_target_seeds
        out.append(Stage(regime, "search: target", target, float(target),
                         f"{cfg.leaders} leaders and CE x {cfg.search_target_seeds} seeds"))
        grid = cfg.lr_points + cfg.lr_widen
        lr = losses * grid * cfg.lr_seeds
        if "LabelSmoothingCE" in baselines:
            lr += (cfg.eps_points - 1) * grid * cfg.lr_seeds
        out.append(Stage(regime, "learning rate", lr, float(lr),
                         f"{losses} losses x {grid} rates x {cfg.lr_seeds} seed(s)"
                         + (f", label smoothing x {cfg.eps_points} eps" if "LabelSmoothingCE" in baselines else "")))
        test = losses * cfg.test_seeds
        out.append(Stage(regime, "test (elimination, Holm)", test, float(test),
                         f"{losses} losses ({len(baselines)} baselines, {cfg.finalists} finalists) x "
                         f"{cfg.test_seeds} seeds"))
        for name, what, key, new_lr in HELDOUT[regime]:
            if (regime, name) not in cfg.heldout:
                continue
            rates = cfg.lr_points * cfg.lr_seeds if new_lr else 0
            held = (len(BASELINES[regime]) + cfg.finalists) * (cfg.heldout_seeds + rates)
            out.append(Stage(regime, f"held-out: {name}", held, held * getattr(costs, key),
                             f"{what}; {len(BASELINES[regime]) + cfg.finalists} losses x "
                             f"({cfg.heldout_seeds} seeds" + (f" + {rates} rates)" if rates else
                                                              ", the regime's rates)")))
        confirm = 2 * cfg.confirm_seeds
        out.append(Stage(regime, "confirmation", confirm, float(confirm),
                         f"best finalist and the strongest baseline x {cfg.confirm_seeds} fresh seeds"))
    return out


def cpu_hours(stage_list: list[Stage], costs: Costs) -> float:
    return sum(s.units for s in stage_list) * costs.target_s / 3600


# Cuts in order while over budget (the issue: keep the seeds and the strongest baselines, cut settings).
CUTS = (
    ("the weaker noisy-label baselines (MAE, Taylor-CE)", lambda c: dataclasses.replace(c, optional_baselines=False)),
    ("held-out ResNet9V2 in the clean regime", lambda c: _drop(c, ("clean", "resnet9v2"))),
    ("held-out ResNet9V2 in the noisy regime", lambda c: _drop(c, ("noisy", "resnet9v2"))),
    ("search screening: 100 candidates", lambda c: dataclasses.replace(c, candidates=min(c.candidates, 100))),
    ("held-out 20% noise", lambda c: _drop(c, ("noisy", "noise20"))),
    ("held-out pair-flip noise", lambda c: _drop(c, ("noisy", "pairflip"))),
    ("search target stage: 2 leaders", lambda c: dataclasses.replace(c, leaders=min(c.leaders, 2))),
    ("two finalists per regime", lambda c: dataclasses.replace(c, finalists=min(c.finalists, 2))),
    ("one finalist per regime", lambda c: dataclasses.replace(c, finalists=1)),
)


def _drop(cfg: PlanConfig, setting: tuple) -> PlanConfig:
    return dataclasses.replace(cfg, heldout=tuple(s for s in cfg.heldout if s != setting))


def fit(cfg: PlanConfig, costs: Costs) -> tuple[PlanConfig, list[str]]:
    """``cfg`` with cuts from ``CUTS`` applied in order until the plan fits its budget (all of them if
    it never does), and the cuts made."""
    made = []
    for what, cut in CUTS:
        if cpu_hours(stages(cfg, costs), costs) <= cfg.budget_h:
            break
        cut_cfg = cut(cfg)
        if cut_cfg != cfg:
            cfg, made = cut_cfg, [*made, what]
    return cfg, made


def plan_markdown(cfg: PlanConfig, costs: Costs, cuts: list[str], requested: PlanConfig) -> str:
    rows = stages(cfg, costs)
    total = cpu_hours(rows, costs)
    full = cpu_hours(stages(requested, costs), costs)
    per_h = costs.target_s / 3600
    lines = ["# Discovery campaign 2: compute plan", "",
             f"Written by `python -m bench.discovery2 --plan` before any training of the campaign. Budget "
             f"{cfg.budget_h:g} CPU-hours of background work (1 thread per training).", "",
             f"Unit: one target-regime training (surrogate CNN, all training images, 8 epochs, 1 thread): "
             f"{costs.target_s:.0f} CPU-s = {per_h:.3f} CPU-h (median `wall_s` of level {TARGET_LEVEL} in "
             f"`{TRAININGS_CSV.relative_to(ROOT)}`, AMD EPYC, 2 cores shared, 2026-12-06). Relative costs: "
             f"a screening training {costs.screen:.3f}, ResNet9V2 {costs.resnet9v2:.2f} (first campaign's "
             f"held-out runs, per image-epoch), digits {costs.digits:.3f} (target curves).", "",
             f"**Total: {total:.1f} CPU-hours for {sum(s.trainings for s in rows)} trainings "
             f"({'within' if total <= cfg.budget_h else 'OVER'} the budget).** The protocol before cuts "
             f"needed {full:.1f} CPU-hours.", ""]
    lines += ["Cuts made to fit, in order: " + ("; ".join(cuts) if cuts else "none") + ". Kept: "
              f"{cfg.test_seeds} test seeds, {cfg.confirm_seeds} fresh confirmation seeds and every strongest "
              "baseline in every stage.", ""]
    lines += ["| regime | stage | trainings | target-training units | CPU-hours | what |", "|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s.regime} | {s.stage} | {s.trainings} | {s.units:.1f} | {s.units * per_h:.2f} | "
                     f"{s.detail} |")
    lines += ["", "Protocol: the learning rate of every loss (baselines included) comes from the grid "
              f"{{0.05, 0.1, 0.2}}, widened by a point whenever the choice lands on an edge, chosen on "
              f"{cfg.lr_seeds} seed(s) that are not test seeds; every test seed draws its own training subset "
              "and label noise (`split_seed = seed`); Holm over all comparisons; the confirmation is "
              "pre-registered against the strongest baseline of its regime, not CE.", ""]
    for regime, text in REGIMES.items():
        lines.append(f"- {regime}: {text}; baselines {', '.join(BASELINES[regime])}"
                     + (f" (and {', '.join(OPTIONAL_BASELINES[regime])} while affordable)"
                        if OPTIONAL_BASELINES[regime] else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.discovery2", description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", action="store_true", help="write the compute plan (no training)")
    ap.add_argument("--budget", type=float, default=PlanConfig.budget_h, help="CPU-hours (default: %(default)s)")
    ap.add_argument("--target-wall-s", type=float, help="one target training's CPU-seconds (default: measured)")
    ap.add_argument("--out", type=Path, default=PLAN_MD)
    args = ap.parse_args(argv)
    if not args.plan:
        ap.error("nothing to do: pass --plan")
    if args.budget <= 0 or (args.target_wall_s is not None and args.target_wall_s <= 0):
        ap.error("--budget and --target-wall-s must be positive")
    costs = measured_costs(args.target_wall_s)
    requested = PlanConfig(budget_h=args.budget)
    cfg, cuts = fit(requested, costs)
    args.out.write_text(plan_markdown(cfg, costs, cuts, requested))
    print(f"bench.discovery2: plan {cpu_hours(stages(cfg, costs), costs):.1f} of {args.budget:g} CPU-hours "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
