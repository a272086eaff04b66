"""Discovery campaign 2 (issue #26): two target regimes on Fashion-MNIST, clean labels and 40% symmetric
label noise, each searched and tested against the strongest known losses of its regime.

    python -m bench.discovery2 --plan              # the compute plan -> bench/results/discovery2_plan.md
    python -m bench.discovery2 rates               # the baselines' learning rates in the target (warm starts)
    python -m bench.discovery2 baselines           # every baseline's learning rate and its 10 test seeds
    python -m bench.discovery2 search              # one nlfs.evolve search per regime, in its target
    python -m bench.discovery2 finalists           # each search's finalists -> bench/results/discovery2/
    python -m bench.discovery2 test                # the finalists' learning rate and 10 test seeds
    python -m bench.discovery2 heldout             # every loss in the held-out settings (noise, digits)
    python -m bench.discovery2 preregister         # the confirmation's file, written before it runs
    python -m bench.discovery2 confirm             # the pre-registered comparison on fresh seeds
    python -m bench.discovery2 report              # bench/results/discovery2_{clean,noisy}.md

``bash bench/discovery2.sh STAGE`` runs a stage in the background order and commits what it wrote;
``--regime clean|noisy`` limits a stage to one regime. Every training outside the searches is one row
of bench/results/discovery2_trainings.csv, appended as it finishes; a stage run again trains only the
rows it lacks (a killed run loses the trainings in flight). The report reads only committed files.

The plan is written before anything runs. Its unit is one target-regime training (surrogate CNN, the
whole training split, CE's plateau length, 1 thread): its cost is the CPU time of one CE training in
bench/results/target_proxies_fashion_mnist_costs.json (or ``--target-cpu-s``). Every other training is
priced relative to it, from committed measurements of one machine and date each: a candidate through the
frozen rungs (``RUNGS``: the CPU time of a CE training at each, the later ones paid by the promoted
share), ResNet9V2 (bench/results/discovery/heldout: its arch setting against the full-split one, per
image-epoch) and digits (bench/results/target_curve_*.csv). Every training, the searches' included, is
on CE's gradient scale and scored by its final model. The
stages follow the issue's protocol: a target-regime search per regime; learning rate per loss from a
grid, widened when the choice lands on an edge, on seeds that are not test seeds; every loss, baselines
included, on 10 test seeds (each its own training subset and label noise: ``split_seed = seed``);
held-out settings for at most three finalists; a confirmation on fresh seeds against the strongest
baseline. The rate is chosen on the final model's validation accuracy (the model tested); a failed training
scores chance accuracy in every comparison; Holm counts the whole family the plan fixes (finalists x
baselines x settings), a comparison not yet run as p = 1, and a verdict before all are done says it is
interim. When the plan exceeds the budget, settings are cut in a fixed order (``CUTS``) until it fits;
the test seeds and the strongest baselines are never cut. The driver runs the plan as cut when it was
written (``CAMPAIGN``): later cost measurements move its CPU-hours, not what runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlfs._io import atomic_write, csv_cell, write_table  # noqa: E402 - after the path above
from nlfs.transfer import grid_choice, on_edge  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TRAININGS_CSV = RESULTS / "target_fidelity_fashion_mnist_trainings.csv"
HELDOUT_DIR = RESULTS / "discovery" / "heldout"
CURVES = {"fashion-mnist": RESULTS / "target_curve_fashion_mnist_surrogate.csv",
          "digits": RESULTS / "target_curve_digits_surrogate.csv"}
PLAN_MD = RESULTS / "discovery2_plan.md"
PROXY_COSTS = RESULTS / "target_proxies_fashion_mnist_costs.json"
LEVEL_COSTS = RESULTS / "fidelity_fashion_mnist_costs.json"
TARGET_LEVEL = "target8"
# The campaign's regime, frozen when it was planned: the library's defaults may move, what a campaign
# trains (and its trainings' keys) must not. The target: CE's plateau on the whole split
# (bench/results/target_curve_*.md); the rungs: nlfs.evolve's default Fashion-MNIST rungs as the target
# study chose them (bench/results/target_fidelity_fashion_mnist.md), screened with eta 3.
TARGETS = {"fashion-mnist": {"train_size": "all", "epochs": 8}, "digits": {"train_size": "all", "epochs": 16}}
RUNGS = ({"train_size": 4096, "epochs": 1, "val_size": 1000, "seeds": 1, "level": "s32"},
         {"train_size": 4096, "epochs": 2, "val_size": 2000, "seeds": 1, "level": "s64"},
         {"train_size": "all", "epochs": 1, "val_size": 5000, "seeds": 1, "level": "e1"})  # level: its cost's name
ETA = 3
TARGET_EPOCHS = {name: spec["epochs"] for name, spec in TARGETS.items()}

REGIMES = {
    "clean": f"clean labels, all training images, {TARGET_EPOCHS['fashion-mnist']} epochs",
    "noisy": f"40% symmetric label noise, all training images, {TARGET_EPOCHS['fashion-mnist']} epochs",
}
# The strongest known losses of each regime (never cut) and weaker ones run while the budget allows.
BASELINES = {"clean": ("CE", "LabelSmoothingCE", "Poly1"), "noisy": ("CE", "GCE", "SCE", "NCEandRCE")}
OPTIONAL_BASELINES = {"clean": (), "noisy": ("MAE", "TaylorCE")}
# Baselines whose authors publish more than one setting of their constants: each setting gets its own
# learning-rate choice and the better one on the learning-rate seeds is the baseline (as label smoothing's
# eps is tuned), so no baseline is held to a value chosen for another dataset. The settings of
# HanxunH/Active-Passive-Losses configs/{cifar10,mnist}/sym/{sce,nce+rce}.yaml (Wang et al. 2019; Ma et
# al. 2020); GCE keeps q = 0.7, the one value its paper recommends for every dataset.
PUBLISHED_CONSTANTS = {
    "SCE": (("CIFAR-10", {"a": 0.1, "b": 1.0}), ("MNIST", {"a": 0.01, "b": 1.0})),
    "NCEandRCE": (("CIFAR-10", {"a": 1.0, "b": 1.0}), ("MNIST", {"a": 1.0, "b": 10.0})),
}
# Held-out settings per regime: (name, what it is, its cost's key in Costs, whether the learning rate is
# chosen again: only where the model or the data change; another noise on the same data and model keeps
# the rate chosen in the regime).
HELDOUT = {
    "clean": (("resnet9v2", "ResNet9V2 instead of the surrogate CNN", "resnet9v2", True),
              ("digits", f"sklearn digits, all images, {TARGET_EPOCHS['digits']} epochs", "digits", True)),
    "noisy": (("noise20", "20% symmetric label noise", "target", False),
              ("pairflip", "40% pair-flip noise (c -> c+1; Fashion-MNIST has no literature class map)", "target",
               False),
              ("resnet9v2", "ResNet9V2 instead of the surrogate CNN", "resnet9v2", True),
              ("digits", f"sklearn digits, all images, {TARGET_EPOCHS['digits']} epochs, 40% symmetric noise", "digits",
               True),
              # another noise on another dataset: the noise setting and the dataset change together
              ("digits-noise20", f"sklearn digits, all images, {TARGET_EPOCHS['digits']} epochs, 20% symmetric noise",
               "digits", True),
              ("digits-asym40", f"sklearn digits, all images, {TARGET_EPOCHS['digits']} epochs, 40% asymmetric noise "
               "(the literature's MNIST class pairs 2->7, 3->8, 5<->6, 7->1: about 20% of all labels flip)",
               "digits", True)),
}


# Held-out settings added to the plan after its cuts, because they cost almost nothing: never cut.
ADDED = (("noisy", "digits-noise20"), ("noisy", "digits-asym40"))


@dataclasses.dataclass(frozen=True)
class Costs:
    """CPU-seconds of one target training and the cost of other trainings relative to it."""

    target_s: float
    screen: float  # one candidate through the rungs (each promotes its top 1/ETA), in target trainings
    resnet9v2: float
    digits: float
    race: float = 0.0  # one more seed at the last rung (racing), in target trainings
    target: float = 1.0
    target_source: str = ""  # where target_s comes from, in words (empty: the measured CPU time)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    budget_h: float = 25.0
    candidates: int = 200  # screened per search
    leaders: int = 4  # trained in the target by the search, paired with CE
    race_seeds: int = 3  # seeds a leader (and CE) may reach at the last rung (nlfs.evolve's quick preset)
    search_target_seeds: int = 2
    finalists: int = 3  # per regime: the novel leaders the search's target checked, best first (at most three)
    lr_points: int = 3  # the learning-rate grid, e.g. {0.05, 0.1, 0.2}
    lr_widen: int = 1  # points added per loss on average when the choice lands on an edge
    lr_seeds: int = 1  # learning-rate seeds, disjoint from the test seeds
    eps_points: int = 3  # label smoothing's eps, tuned with the learning rate
    eps_widen: int = 1  # eps values added on average when the choice lands on an edge
    test_seeds: int = 10
    heldout_seeds: int = 10
    confirm_seeds: int = 10
    optional_baselines: bool = True
    heldout: tuple = tuple((r, s[0]) for r, settings in HELDOUT.items() for s in settings if (r, s[0]) not in ADDED)


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


def rung_cpu_s() -> list[float]:
    """Seconds of one CE training at each of ``RUNGS`` (its ``level``), 1 thread: CPU time for the trained
    proxies (``PROXY_COSTS``), wall time on an idle machine for the fidelity study's levels
    (``LEVEL_COSTS``: one thread alone, so about its CPU time)."""
    measured = {**json.loads(LEVEL_COSTS.read_text()), **json.loads(PROXY_COSTS.read_text())["cpu_s"]}
    return [float(measured[r["level"]]) for r in RUNGS]


def measured_costs(target_cpu_s: float | None = None) -> Costs:
    """Costs from the committed measurements (module docstring); ``target_cpu_s`` overrides the
    target training's."""
    target = target_cpu_s or float(json.loads(PROXY_COSTS.read_text())["cpu_s"][TARGET_LEVEL])
    source = "given with --target-cpu-s" if target_cpu_s else ""
    rungs = rung_cpu_s()
    screen = sum(c / ETA ** i for i, c in enumerate(rungs)) / target
    # ResNet9V2 against the surrogate per image-epoch, both from the first campaign's held-out runs
    arch = _median_wall(HELDOUT_DIR / "arch.csv") / (8192 * 2)
    full = _median_wall(HELDOUT_DIR / "full.csv") / (55000 * 2)
    digits = (_median_wall(CURVES["digits"], epochs=TARGET_EPOCHS["digits"])
              / _median_wall(CURVES["fashion-mnist"], epochs=TARGET_EPOCHS["fashion-mnist"]))
    return Costs(target_s=target, screen=screen, race=rungs[-1] / target, resnet9v2=arch / full, digits=digits,
                 target_source=source)


def rung_text() -> str:
    """``RUNGS`` as ``nlfs.evolve --rungs`` takes them."""
    return ";".join(",".join(f"{k}={v}" for k, v in r.items() if k != "level") for r in RUNGS)


def published_constants_text() -> str:
    return "; ".join(f"{name}: " + ", ".join(f"{where} " + " ".join(f"{k}={v:g}" for k, v in c.items())
                                             for where, c in sets) for name, sets in PUBLISHED_CONSTANTS.items())


def constant_choices(name: str, cfg: PlanConfig) -> int:
    """Settings of a loss's constants that each get their own learning-rate choice: label smoothing's eps
    grid, a baseline's published constants (``PUBLISHED_CONSTANTS``), else one."""
    return cfg.eps_points + cfg.eps_widen if name == SMOOTHING else len(PUBLISHED_CONSTANTS.get(name, ((None, None),)))


def stages(cfg: PlanConfig, costs: Costs) -> list[Stage]:
    """Every stage of both regimes: trainings and their cost in target trainings."""
    out = []
    for regime in REGIMES:
        baselines = BASELINES[regime] + (OPTIONAL_BASELINES[regime] if cfg.optional_baselines else ())
        losses = len(baselines) + cfg.finalists
        raced = (cfg.leaders + 1) * max(0, cfg.race_seeds - 1)  # the leaders and CE, past the rung's one seed
        rows = round(cfg.candidates * sum(ETA ** -i for i in range(len(RUNGS))))  # one row per rung reached
        out.append(Stage(regime, "search: screening", rows + raced,
                         cfg.candidates * costs.screen + raced * costs.race,
                         f"{cfg.candidates} candidates through the rungs (each promotes its top 1/{ETA}); "
                         f"{cfg.leaders} leaders and CE raced to {cfg.race_seeds} seeds at the last rung"))
        target = (cfg.leaders + 1) * cfg.search_target_seeds
        out.append(Stage(regime, "search: target", target, float(target),
                         f"{cfg.leaders} leaders and CE x {cfg.search_target_seeds} seeds"))
        grid = cfg.lr_points + cfg.lr_widen
        lr = sum(constant_choices(b, cfg) for b in baselines) + cfg.finalists
        extra = [f"{b} x {constant_choices(b, cfg)} " + ("eps" if b == SMOOTHING else "published constants")
                 for b in baselines if constant_choices(b, cfg) > 1]
        out.append(Stage(regime, "learning rate", lr * grid * cfg.lr_seeds, float(lr * grid * cfg.lr_seeds),
                         f"{losses} losses x {grid} rates x {cfg.lr_seeds} seed(s)"
                         + "".join(f", {e}" for e in extra)))
        test = losses * cfg.test_seeds
        out.append(Stage(regime, "test (elimination, Holm)", test, float(test),
                         f"{losses} losses ({len(baselines)} baselines, {cfg.finalists} finalists) x "
                         f"{cfg.test_seeds} seeds"))
        for name, what, key, new_lr in HELDOUT[regime]:
            if (regime, name) not in cfg.heldout:
                continue
            held_losses = len(BASELINES[regime]) + cfg.finalists
            rates = (sum(constant_choices(b, cfg) for b in BASELINES[regime]) + cfg.finalists) * (
                cfg.lr_points + cfg.lr_widen) * cfg.lr_seeds if new_lr else 0
            held = held_losses * cfg.heldout_seeds + rates
            out.append(Stage(regime, f"held-out: {name}", held, held * getattr(costs, key),
                             f"{what}; {held_losses} losses x {cfg.heldout_seeds} seeds"
                             + (f" + {rates} learning-rate trainings" if rates else ", the regime's rates")))
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


def with_added(cfg: PlanConfig) -> PlanConfig:
    """``cfg`` with the ``ADDED`` held-out settings."""
    return dataclasses.replace(cfg, heldout=(*cfg.heldout, *(s for s in ADDED if s not in cfg.heldout)))


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


def _second_lr_seed_h(cfg: PlanConfig, costs: Costs) -> float:
    """CPU-hours a second learning-rate seed would add to ``cfg``."""
    more = dataclasses.replace(cfg, lr_seeds=cfg.lr_seeds + 1)
    return cpu_hours(stages(more, costs), costs) - cpu_hours(stages(cfg, costs), costs)


def plan_markdown(cfg: PlanConfig, costs: Costs, cuts: list[str], requested: PlanConfig) -> str:
    """The plan of ``cfg`` (as cut to the budget) and the ``ADDED`` settings beside it."""
    total = cpu_hours(stages(cfg, costs), costs)
    rows = stages(with_added(cfg), costs)
    added = cpu_hours(rows, costs) - total
    full = cpu_hours(stages(requested, costs), costs)
    per_h = costs.target_s / 3600
    epochs = TARGET_EPOCHS["fashion-mnist"]
    lines = ["# Discovery campaign 2: compute plan", "",
             f"Written by `python -m bench.discovery2 --plan` before any training of the campaign. Budget "
             f"{cfg.budget_h:g} CPU-hours of background work (1 thread per training).", "",
             f"Unit: one target-regime training (surrogate CNN, all training images, {epochs} epochs, 1 thread): "
             f"{costs.target_s:.0f} CPU-s = {per_h:.3f} CPU-h ("
             + (costs.target_source or f"CPU time of one CE training, `{PROXY_COSTS.relative_to(ROOT)}`, AMD EPYC, "
                "2026-12-06; the study's target trainings took a median "
                f"{_median_wall(TRAININGS_CSV, level=TARGET_LEVEL):.0f} s of wall time with 3-4 of them sharing "
                "2 cores") + "). Relative costs: "
             f"one candidate through the rungs {costs.screen:.3f} (CPU time of a CE training at each rung, "
             f"{', '.join(f'{r}: {c:.1f} s' for r, c in zip((r['level'] for r in RUNGS), rung_cpu_s()))}, "
             f"the second and third paid by 1/{ETA} and 1/{ETA ** 2} of the candidates), one racing seed "
             f"{costs.race:.3f}, ResNet9V2 {costs.resnet9v2:.2f} (first campaign's "
             f"held-out runs, per image-epoch), digits {costs.digits:.3f} (target curves).", "",
             f"**Total: {total:.1f} CPU-hours for {sum(s.trainings for s in stages(cfg, costs))} trainings "
             f"({'within' if total <= cfg.budget_h else 'OVER'} the budget), and {added:.2f} CPU-hours for the "
             f"{sum(s.trainings for s in rows) - sum(s.trainings for s in stages(cfg, costs))} trainings of the "
             "settings added after the cuts.** The protocol before cuts "
             f"needed {full:.1f} CPU-hours.", ""]
    lines += ["Cuts made to fit, in order (accepted: the issue keeps the seeds and the strongest baselines and "
              "cuts settings): " + ("; ".join(cuts) if cuts else "none") + ". Kept: "
              f"{cfg.test_seeds} test seeds, {cfg.confirm_seeds} fresh confirmation seeds and every strongest "
              "baseline in every stage.", ""]
    if with_added(cfg) != CAMPAIGN:
        lines += [f"**The driver runs the plan frozen when the campaign was planned (`CAMPAIGN`, "
                  f"{cpu_hours(stages(CAMPAIGN, costs), costs):.1f} CPU-hours at these costs), not this one:** "
                  "the costs measured since cut differently.", ""]
    lines += ["| regime | stage | trainings | target-training units | CPU-hours | what |", "|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s.regime} | {s.stage} | {s.trainings} | {s.units:.1f} | {s.units * per_h:.2f} | "
                     f"{s.detail} |")
    lines += ["", "Added after the cuts because they cost almost nothing: two more held-out noise settings of the "
              "noisy regime's finalists, 20% symmetric and 40% asymmetric noise (the noisy-label literature's class "
              "pairs). They are on **sklearn digits, another dataset than the search's** (Fashion-MNIST has no "
              "literature class map: its pair-flip setting stands in there): the noise setting and "
              "the dataset change together, so they say whether a finalist's standing survives both, not which "
              "of the two moved it.", ""]
    lines += ["Protocol (`python -m bench.discovery2`, `bash bench/discovery2.sh`): the learning rate of every loss "
              f"(baselines included) comes from the grid {{{', '.join(f'{x:g}' for x in LR_GRID)}}}, widened by one "
              "point (x2 or /2) whenever the choice lands on an edge, again until it is interior (at most "
              f"{MAX_WIDEN} points added), by mean validation accuracy of the final model (the model whose test "
              f"accuracy is reported, not the peak over epochs) on {cfg.lr_seeds} seed(s) "
              f"({_seeds_text(LR_SEEDS)}) that are not test seeds; label smoothing's eps is tuned the same way, a "
              f"grid {{{', '.join(f'{x:g}' for x in EPS_GRID)}}} widened on an edge, each eps with its own "
              "learning-rate choice (the simplest honest way: the same rule as the learning rate, no sampler); "
              f"every test seed ({_seeds_text(TEST_SEEDS)}) draws its own validation images, training subset and "
              "label noise (`split_seed = seed`); a failed training (diverged or raised) scores chance accuracy "
              "(1 / classes) in every comparison, for every loss alike, and is counted in the report; Holm over "
              "all comparisons of a regime (its finalists x baselines x target and held-out settings, fixed by "
              "the plan: a comparison not yet run counts as p = 1 and the verdict says it is interim); the "
              "confirmation (fresh seeds "
              f"{_seeds_text(CONFIRM_SEEDS)}) is pre-registered in a committed file naming the finalist, the "
              "strongest baseline of its regime by the test stage (not CE), the seeds and the test, before it runs; "
              "SCE and NCE+RCE take the better of their authors' two published sets of constants "
              f"({published_constants_text()}), "
              "each with its own learning-rate choice, GCE keeps q = 0.7; every loss, baselines and finalists, "
              "trains on CE's gradient scale (`grad_scale=ce`: the loss multiplied by a factor that matches CE's "
              "mean |dL/dlogits| on its first batch, as in the search), so one learning-rate grid centred on CE's "
              "suits every loss and a loss's overall factor does not change its weight decay; the search scores "
              "the final model (`--score final`), as the test stage does.",
              "",
              f"One learning-rate seed: a second ({', '.join(map(str, (*LR_SEEDS, LR_SEEDS[-1] + 1)))}) would add "
              f"{_second_lr_seed_h(cfg, costs):.1f} CPU-hours to a plan already at {total + added:.1f} of "
              f"{cfg.budget_h:g} (its added settings included), so the reports name it as a limit.", "",
              "Order (`bash bench/discovery2.sh all`): the baselines' learning rates (and constants) in the target "
              "first, all the searches' warm starts need; then the searches, so that a regime whose search finds "
              "no novel loss spends nothing on tests it does not need; then the baselines' test seeds and held-out "
              "settings (about half the compute), the finalists', the confirmation. The search stage runs "
              "`python -m nlfs.evolve` with the regime's "
              f"`--target`, the rungs `{rung_text()}` (nlfs.evolve's defaults when planned, frozen here), and warm "
              "starts from the regime's strongest known losses (with the constants the rates stage chose).", ""]
    for regime, text in REGIMES.items():
        lines.append(f"- {regime}: {text}; baselines {', '.join(BASELINES[regime])}"
                     + (f" (and {', '.join(OPTIONAL_BASELINES[regime])} while affordable)"
                        if OPTIONAL_BASELINES[regime] else ""))
    return "\n".join(lines) + "\n"


# ================================================================================= the campaign as run
# The plan as cut to the budget when it was written (2026-12-07, re-planned before any training after a
# pre-flight review: CPU time as the unit, the chosen rungs, racing, published constants): what
# the driver runs.
CAMPAIGN = PlanConfig(candidates=200, leaders=4, race_seeds=3, finalists=3, optional_baselines=False,
                      heldout=(("clean", "digits"), ("noisy", "noise20"), ("noisy", "pairflip"), ("noisy", "digits"),
                               ("noisy", "digits-noise20"), ("noisy", "digits-asym40")))
CAMPAIGN_DIR = RESULTS / "discovery2"
TRAININGS = RESULTS / "discovery2_trainings.csv"
RUNS = ROOT / "runs"
DATASET = "fashion-mnist"
LR_GRID = (0.05, 0.1, 0.2)
EPS_GRID = (0.05, 0.1, 0.2)  # label smoothing's eps (the catalogue's constant ``a``)
MAX_WIDEN = 4  # points added to a grid at most: a choice still on an edge then is reported as such
SMOOTHING = "LabelSmoothingCE"
# Disjoint from each other and from the searches' seeds (0 and up, split seed 0).
LR_SEEDS = (50,)
TEST_SEEDS = tuple(range(100, 110))
CONFIRM_SEEDS = tuple(range(200, 210))
SEARCH_SEED = 0
NOISE = {"clean": {}, "noisy": {"label_noise": 0.4}}
PREFIX = {"clean": "FoundFMClean", "noisy": "FoundFMNoisy"}
ALPHA = 0.05


def _seeds_text(seeds) -> str:
    seeds = list(seeds)
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)) else (
        ", ".join(map(str, seeds)))


@dataclasses.dataclass(frozen=True)
class Setting:
    """Where a regime's losses are compared: the regime's own target on Fashion-MNIST, or a held-out
    setting (``name`` as in ``HELDOUT``) in that dataset's target length."""

    name: str
    dataset: str
    noise: tuple = ()  # (("label_noise", r), ("label_noise_kind", k))
    own_rates: bool = True  # False: another noise on the target's data and model keeps the target's choices
    # (set from HELDOUT, the plan's record of it: see _setting)

    @property
    def is_target(self) -> bool:
        return self.name == "target"

    def target_spec(self, seeds: int | None = None) -> dict:
        """The training as an ``nlfs.evolve --target`` spec: the dataset's frozen target (``TARGETS``: the
        whole split at CE's plateau) with this setting's noise."""
        spec = {**TARGETS[self.dataset], **dict(self.noise)}
        return spec if seeds is None else {**spec, "seeds": seeds}


def _setting(regime: str, name: str, dataset: str, noise: tuple = ()) -> Setting:
    """A regime's setting; a held-out one chooses its own learning rates as ``HELDOUT`` (the plan) says."""
    own = name == "target" or next(h[3] for h in HELDOUT[regime] if h[0] == name)
    return Setting(name, dataset, noise, own_rates=own)


SETTINGS = {
    "clean": (_setting("clean", "target", DATASET), _setting("clean", "digits", "digits")),
    "noisy": (_setting("noisy", "target", DATASET, (("label_noise", 0.4),)),
              _setting("noisy", "noise20", DATASET, (("label_noise", 0.2),)),
              _setting("noisy", "pairflip", DATASET, (("label_noise", 0.4), ("label_noise_kind", "pairflip"))),
              _setting("noisy", "digits", "digits", (("label_noise", 0.4),)),
              _setting("noisy", "digits-noise20", "digits", (("label_noise", 0.2),)),
              _setting("noisy", "digits-asym40", "digits", (("label_noise", 0.4), ("label_noise_kind", "asymmetric")))),
}


def target_setting(regime: str) -> Setting:
    """The regime's own target (``SETTINGS[regime]``'s first)."""
    return next(s for s in SETTINGS[regime] if s.is_target)


def spec_text(spec: dict) -> str:
    """A target spec as ``--target`` takes it."""
    return ",".join(f"{k}={v}" for k, v in spec.items())


# ------------------------------------------------------------------------------------ the grid rule
# ------------------------------------------------------------------------------------- trainings CSV
COLUMNS = ["key", "regime", "setting", "stage", "loss", "constants", "lr", "seed", "split_seed", "dataset", "model",
           "train_size", "val_size", "epochs", "steps", "batch_size", "label_noise", "label_noise_kind", "augment",
           "status", "reason", "best_val_acc", "val_acc", "test_acc", "wall_s", "cpu_s", "machine", "date"]


def read_rows(path: Path) -> list[dict]:
    """The finished trainings of a campaign CSV. A last line cut short by a kill (fewer cells than the
    header, or no line end) is not a training: it is left out, and ``append_row`` drops it."""
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = []
    for r in csv.DictReader(text.splitlines(keepends=True)):
        if None in r.values() or None in r or not r.get("key"):
            continue
        rows.append(r)
    return rows


def append_row(path: Path, row: dict) -> None:
    """One training, appended and flushed to disk as it finishes (a header first in a new file; a line a
    kill cut short is dropped first; a file from before a column was added is rewritten once with
    ``COLUMNS``, the new cells empty)."""

    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with path.open() as fh:
            header = fh.readline().rstrip("\r\n").split(",")
        if header != COLUMNS:
            if not set(header) < set(COLUMNS):  # a newer file, or not this campaign's: never rewrite it
                raise SystemExit(f"{path}: its columns are not the campaign's ({', '.join(COLUMNS)})")
            write_table(path, read_rows(path), COLUMNS)
    if not new:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            cut = fh.read(1) != b"\n"
        if cut:
            text = path.read_text()
            path.write_text(text[:text.rfind("\n") + 1])
            new = path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: csv_cell(row.get(k)) for k in COLUMNS})
        fh.flush()
        os.fsync(fh.fileno())


def _ok(row: dict | None) -> bool:
    return row is not None and row["status"] == "ok"


def _score(row: dict | None) -> float:
    """A learning-rate training's score: the final model's validation accuracy (the model whose test
    accuracy the test stage reports, not the peak over epochs: under label noise a loss peaks early and
    then memorises), 0 for a failed training."""
    return float(row["val_acc"]) if _ok(row) and row.get("val_acc") not in ("", None) else 0.0


# ---------------------------------------------------------------------------------------- the driver
@dataclasses.dataclass(frozen=True)
class Job:
    regime: str
    setting: Setting
    stage: str  # lr | test | confirm
    loss: str  # its label
    constants: tuple  # sorted (name, value) pairs overriding the loss's own (label smoothing's eps)
    lr: float
    seed: int


@dataclasses.dataclass
class Campaign:
    """Paths and how trainings run. ``overrides``: TrainConfig fields forced on every training (tests
    shrink the trainings with them); ``workers``: trainings at once, one thread each."""

    trainings: Path = TRAININGS
    results: Path = CAMPAIGN_DIR
    runs: Path = RUNS
    workers: int = 2
    overrides: dict = dataclasses.field(default_factory=dict)
    plan: PlanConfig = CAMPAIGN
    log: object = print
    _keys: dict = dataclasses.field(default_factory=dict, init=False, repr=False)  # (job, loss) -> key, per run

    # ----------------------------------------------------------------- files
    def finalists_file(self, regime: str) -> Path:
        return self.results / f"{regime}_finalists.json"

    def preregistration_file(self, regime: str) -> Path:
        return self.results / f"{regime}_confirmation.json"

    def search_dir(self, regime: str) -> Path:
        return self.runs / f"disc2-{regime}"

    def search_csv(self, regime: str) -> Path:
        return self.results / f"{regime}_search.csv"

    def finalists(self, regime: str) -> list[dict]:
        """The regime's finalists (none before the search has picked them: see ``picked``)."""
        return self.picked(regime) or []

    def picked(self, regime: str) -> list[dict] | None:
        """The finalists the search picked: None before it has, [] when it found no novel loss."""
        path = self.finalists_file(regime)
        return json.loads(path.read_text()) if path.is_file() else None

    # ----------------------------------------------------------------- trainings
    def config(self, job: Job):
        """The job's TrainConfig: its setting's target (``nlfs.search.make_target``), one thread, every
        loss on CE's gradient scale (as the search trains: a loss's overall factor, a finalist's found
        scale included, then changes neither its step size nor its weight decay), the split seed equal
        to the seed, the test split read only outside the learning-rate stage."""
        from nlfs.search import make_target
        from nlfs.train import TrainConfig

        base = TrainConfig(dataset=job.setting.dataset, model="surrogate", grad_scale="ce", threads=1,
                           evaluate_test=job.stage != "lr")
        cfg = make_target(job.setting.target_spec()).apply(base)
        return dataclasses.replace(cfg, **self.overrides, lr=job.lr, seed=job.seed, split_seed=job.seed)

    def loss(self, regime: str, label: str):
        """What trains under ``label``: a catalogue name, or a finalist's LossSpec (constants, class
        reduction and scale as found)."""
        from nlfs.search import entry_spec

        for entry in self.finalists(regime):
            if entry["name"] == label:
                return entry_spec(entry)
        return label

    def key(self, job: Job, loss=None) -> str:
        """The training's key (``nlfs.train.training_key``): the loss as trained and the TrainConfig with
        the dataset's defaults filled in (a default that moves later changes the key, never what a row
        means)."""
        from nlfs.losses import resolve_spec
        from nlfs.train import training_key

        cached = (job, None if loss is None else repr(loss))  # a job trains as its label says, or as ``loss``
        if cached in self._keys:
            return self._keys[cached]
        spec = resolve_spec(loss if loss is not None else self.loss(job.regime, job.loss))
        train = {k: v for k, v in self.config(job).resolved().to_dict().items() if k not in ("threads", "progress")}
        self._keys[cached] = training_key({"loss": [spec.text, spec.class_reduction, spec.scale,
                                                    sorted({**spec.constants, **dict(job.constants)}.items())],
                                           "train": train}, length=16)
        return self._keys[cached]

    # ----------------------------------------------------------------- choices
    def choice(self, index: dict, regime: str, setting: Setting, label: str) -> tuple[dict | None, list[Job]]:
        """``(chosen, jobs)``: a loss's learning rate (and label smoothing's eps, or a baseline's published
        setting of its constants) in ``setting``, or None while its grid is unfinished, and the
        learning-rate trainings it still needs. A setting without its own rates takes the target's."""
        if not setting.own_rates:
            setting = target_setting(regime)
        if label in PUBLISHED_CONSTANTS:
            return self._published_choice(index, regime, setting, label)
        if label != SMOOTHING:
            return self._lr_choice(index, regime, setting, label, ())
        scores, jobs, tried = {}, [], {}
        while True:
            eps, todo = grid_choice(scores, EPS_GRID, limit=1.0, max_added=MAX_WIDEN)
            if eps is not None:
                chosen = tried[eps]
                return {**chosen, "eps": eps, "eps_tried": dict(sorted(scores.items()))}, jobs
            waiting = False
            for e in todo:
                chosen, more = self._lr_choice(index, regime, setting, label, (("a", e),))
                if chosen is None:
                    jobs += more
                    waiting = True
                else:
                    scores[e], tried[e] = chosen["score"], chosen
            if waiting:
                return None, jobs

    def _published_choice(self, index, regime, setting, label) -> tuple[dict | None, list[Job]]:
        """The better of a baseline's published constants (``PUBLISHED_CONSTANTS``), each at its own chosen rate;
        a tie goes to the first (the catalogue's)."""
        chosen, jobs = {}, []
        for where, consts in PUBLISHED_CONSTANTS[label]:
            c, more = self._lr_choice(index, regime, setting, label, tuple(sorted(consts.items())))
            if c is None:
                jobs += more
            else:
                chosen[where] = c
        if jobs:
            return None, jobs
        best = max(chosen, key=lambda where: chosen[where]["score"])
        return {**chosen[best], "published": best, "published_tried": {w: c["score"] for w, c in chosen.items()}}, []

    def _lr_choice(self, index, regime, setting, label, constants) -> tuple[dict | None, list[Job]]:
        loss = self.loss(regime, label)
        scores, jobs = {}, []
        while True:
            lr, todo = grid_choice(scores, LR_GRID, max_added=MAX_WIDEN)
            if lr is not None:
                tried = dict(sorted(scores.items()))
                return {"lr": lr, "constants": constants, "score": scores[lr], "tried": tried}, jobs
            for rate in todo:
                runs = [Job(regime, setting, "lr", label, constants, rate, s) for s in LR_SEEDS]
                rows = [index.get(self.key(j, loss)) for j in runs]
                missing = [j for j, r in zip(runs, rows, strict=True) if r is None]
                if missing:
                    jobs += missing
                else:
                    scores[rate] = statistics.fmean(_score(r) for r in rows)
            if jobs:
                return None, jobs

    def losses(self, regime: str, finalists: bool = True) -> list[str]:
        names = list(BASELINES[regime])
        return names + ([e["name"] for e in self.finalists(regime)] if finalists else [])

    def settings(self, regime: str, target: bool = True, heldout: bool = True) -> list[Setting]:
        return [s for s in SETTINGS[regime] if (s.is_target and target) or (
            not s.is_target and heldout and (regime, s.name) in self.plan.heldout)]

    def wanted(self, index: dict, regime: str, settings: list[Setting], labels: list[str]) -> list[Job]:
        """Every training the losses ``labels`` still need in ``settings``: the learning-rate grid, then
        (once chosen) the test seeds."""
        jobs = []
        for setting in settings:
            for label in labels:
                chosen, more = self.choice(index, regime, setting, label)
                jobs += more
                if chosen is not None:
                    jobs += [Job(regime, setting, "test", label, chosen["constants"], chosen["lr"], s)
                             for s in TEST_SEEDS]
        return jobs

    # ----------------------------------------------------------------- running
    def index(self) -> dict:
        """Key -> row of the trainings done (the latest row of a key; an ``error`` row, the trainer raised,
        is trained again in a later run). Keys are computed afresh from here on (a finalists file may
        have been written since)."""
        self._keys.clear()
        return {r["key"]: r for r in read_rows(self.trainings)}

    def run(self, want, losses: dict | None = None) -> int:
        """Train what ``want(index)`` lists until it lists nothing not done, ``workers`` at a time, each
        row appended as it finishes; ``losses`` maps ``(regime, label)`` to what trains under that label
        when it is not ``loss``'s (the pre-registered finalist). Returns the trainings run."""
        from nlfs.search import make_executor, run_jobs

        index = {k: r for k, r in self.index().items() if r["status"] != "error"}
        pending: set[str] = set()

        def pull():
            for job in want(index):
                loss = (losses or {}).get((job.regime, job.loss)) or self.loss(job.regime, job.loss)
                key = self.key(job, loss)
                if key not in index and key not in pending:
                    pending.add(key)
                    cfg = self.config(job)
                    payload = {"loss": loss, "constants": dict(job.constants) or None, "train": cfg.to_dict(),
                               "rejection": False, "name": job.loss}
                    return (job, key, cfg), payload
            return None

        done = 0
        with _locked(self.runs / f"{self.trainings.name}.lock"):
            executor = make_executor("local", self.workers, threads=1)
            try:
                for (job, key, cfg), out in run_jobs(executor, pull):
                    row = self.record(job, key, cfg, out)
                    append_row(self.trainings, row)
                    index[key] = row
                    pending.discard(key)
                    done += 1
                    acc = row["test_acc"] if job.stage != "lr" else row["val_acc"]
                    self.log(f"[{job.regime} {job.setting.name} {job.stage}] {job.loss}"
                             f"{''.join(f' {k}={v:g}' for k, v in job.constants)} lr {job.lr:g} seed {job.seed}: "
                             f"{row['status']} {'' if acc in (None, '') else f'{float(acc):.4f} '}"
                             f"({row['wall_s']:.0f} s, {_cpu_s(row):.0f} CPU-s)")
            finally:
                executor.close()
        return done

    def record(self, job: Job, key: str, cfg, out: dict) -> dict:
        from bench._schema import machine_name, today

        res = out.get("result") or {}
        ok = out["status"] == "ok"
        r = cfg.resolved()
        return dict(key=key, regime=job.regime, setting=job.setting.name, stage=job.stage, loss=job.loss,
                    constants=json.dumps(dict(job.constants), sort_keys=True) if job.constants else "",
                    lr=job.lr, seed=job.seed, split_seed=cfg.split_seed, dataset=r.dataset, model=r.model,
                    train_size=res.get("train_size") or r.train_size, val_size=r.val_size, epochs=r.epochs,
                    steps=res.get("steps") or r.steps, batch_size=r.batch_size, label_noise=r.label_noise,
                    label_noise_kind=r.label_noise_kind if r.label_noise else "", augment=r.augment,
                    status=out["status"], reason=(out.get("reason") or "")[:200],
                    best_val_acc=res.get("best_val_acc"), val_acc=res.get("val_acc"),
                    test_acc=res.get("test_acc") if ok else None, wall_s=float(out.get("wall_time") or 0.0),
                    cpu_s=out.get("cpu_time"),
                    machine=machine_name(), date=today())

    # ----------------------------------------------------------------- stages
    def rates(self, regimes) -> int:
        """Every baseline's learning rate (and constants) in the target: what the search's warm starts
        need, and all it needs, so the search can run before the baselines' test seeds."""
        return self.run(lambda index: [j for regime in regimes for j in self.wanted(
            index, regime, self.settings(regime, heldout=False), self.losses(regime, finalists=False))
            if j.stage == "lr"])

    def baselines(self, regimes) -> int:
        """Every baseline's learning rate and test seeds, in the target and the held-out settings: nothing
        here depends on a search, save that a regime whose search found no novel loss needs none of it."""
        needed = [r for r in regimes if self.picked(r) != []]
        for r in sorted(set(regimes) - set(needed)):
            self.log(f"{r}: the search found no finalist ({self.finalists_file(r)}): the baselines' tests are "
                     "not needed")
        return self.run(lambda index: [j for regime in needed for j in self.wanted(
            index, regime, self.settings(regime), self.losses(regime, finalists=False))])

    def test(self, regimes) -> int:
        """The target stage of every loss, finalists included (a baseline still missing too)."""
        regimes = self._with_finalists(regimes)
        return self.run(lambda index: [j for regime in regimes for j in self.wanted(
            index, regime, self.settings(regime, heldout=False), self.losses(regime))])

    def heldout(self, regimes) -> int:
        regimes = self._with_finalists(regimes)
        return self.run(lambda index: [j for regime in regimes for j in self.wanted(
            index, regime, self.settings(regime, target=False), self.losses(regime))])

    def _with_finalists(self, regimes) -> list[str]:
        ready = [r for r in regimes if self.finalists(r)]
        for r in sorted(set(regimes) - set(ready)):
            self.log(f"{r}: the search found no finalist ({self.finalists_file(r)}): nothing to test"
                     if self.picked(r) is not None else
                     f"{r}: no finalists yet ({self.finalists_file(r)}): run the search and `finalists` first")
        return ready

    def confirm(self, regimes) -> int:
        """The pre-registered comparison on its fresh seeds, exactly as the file names it (the finalist's
        entry, the baseline, learning rates, constants, seeds); refused for a regime without the file."""
        jobs, losses = [], {}
        for regime in regimes:
            path = self.preregistration_file(regime)
            if not path.is_file():
                self.log(f"{regime}: no pre-registration ({path}): run `preregister` and commit it first")
                continue
            for _, job, loss in self.confirm_jobs(json.loads(path.read_text())):
                jobs.append(job)
                losses[(job.regime, job.loss)] = loss
        return self.run(lambda index: jobs, losses)

    def confirm_jobs(self, pre: dict) -> list[tuple[str, Job, object]]:
        """The pre-registered confirmation's trainings as ``(side, job, loss)``: the finalist and the
        baseline on every fresh seed of the file, the finalist trained as the entry it names."""
        from nlfs.search import entry_spec

        target = target_setting(pre["regime"])
        out = []
        for side in ("finalist", "baseline"):
            c = pre[side]
            loss = entry_spec(c["entry"]) if "entry" in c else c["name"]
            out += [(side, Job(pre["regime"], target, "confirm", c["name"], tuple(sorted(c["constants"].items())),
                               c["lr"], s), loss) for s in pre["seeds"]]
        return out

    # ----------------------------------------------------------------- tables
    def test_rows(self, index: dict, regime: str, setting: Setting, label: str) -> list[dict] | None:
        """The rows of a loss's test seeds in ``setting`` (at its chosen learning rate), None while any is
        missing."""
        chosen, _ = self.choice(index, regime, setting, label)
        if chosen is None:
            return None
        loss = self.loss(regime, label)
        rows = [index.get(self.key(Job(regime, setting, "test", label, chosen["constants"], chosen["lr"], s), loss))
                for s in TEST_SEEDS]
        return None if None in rows else rows

    def chance(self, regime: str, setting: Setting) -> float:
        """Chance accuracy in ``setting`` (1 / its dataset's classes): what a failed training scores."""
        from nlfs.data import load_dataset

        cfg = self.config(Job(regime, setting, "test", "CE", (), LR_GRID[1], TEST_SEEDS[0]))
        return 1.0 / load_dataset(cfg.dataset).num_classes

    def accuracies(self, regime: str, setting: Setting, index: dict | None = None) -> dict[str, dict[int, float]]:
        """{loss: {seed: test accuracy}} of the test stage in ``setting`` at each loss's chosen learning rate
        (a loss without its choice yet has none). A failed training (diverged or raised) scores chance
        accuracy, for every loss alike: a loss is never judged on the seeds it survived."""
        index = self.index() if index is None else index
        out = {}
        for label in self.losses(regime):
            chosen, _ = self.choice(index, regime, setting, label)
            if chosen is None:
                continue
            loss = self.loss(regime, label)
            for s in TEST_SEEDS:
                row = index.get(self.key(Job(regime, setting, "test", label, chosen["constants"], chosen["lr"], s),
                                         loss))
                if row is None:
                    continue
                ok = _ok(row) and row["test_acc"] not in ("", None)
                out.setdefault(label, {})[s] = float(row["test_acc"]) if ok else self.chance(regime, setting)
        return out

    def failed(self, regime: str, setting: Setting, index: dict) -> dict[str, int]:
        """{loss: test seeds whose training failed (diverged or raised)} in ``setting``."""
        out = {}
        for label in self.losses(regime):
            chosen, _ = self.choice(index, regime, setting, label)
            if chosen is not None:
                loss = self.loss(regime, label)
                out[label] = sum(1 for s in TEST_SEEDS if (r := index.get(self.key(
                    Job(regime, setting, "test", label, chosen["constants"], chosen["lr"], s), loss))) is not None
                                 and not _ok(r))
        return out

    def strongest(self, regime: str, index: dict | None = None) -> str | None:
        """The strongest baseline of a regime: the highest mean test accuracy in its target over its test
        seeds (a failed one at chance, ``accuracies``), once every baseline's test seeds are done; None
        before."""
        index = self.index() if index is None else index
        target = target_setting(regime)
        if any(self.test_rows(index, regime, target, b) is None for b in BASELINES[regime]):
            return None
        acc = self.accuracies(regime, target, index)
        return max(BASELINES[regime], key=lambda b: statistics.fmean(acc[b].values()) if acc.get(b) else -1.0)

    def preregister(self, regime: str) -> dict | None:
        """Write the confirmation's file (once: an existing one is kept) from the finished test stage: the
        finalist with the largest mean paired difference to the strongest baseline, that baseline, each
        one's learning rate (and eps), the fresh seeds and the test. None while the test stage is
        unfinished."""
        from nlfs.stats import paired_differences

        path = self.preregistration_file(regime)
        if path.is_file():
            return json.loads(path.read_text())
        index = self.index()
        target = target_setting(regime)
        acc = self.accuracies(regime, target, index)
        finals = [e for e in self.finalists(regime) if self.test_rows(index, regime, target, e["name"]) is not None]
        base = self.strongest(regime, index)
        if base is None or not finals or len(finals) < len(self.finalists(regime)):
            self.log(f"{regime}: the test stage is unfinished: nothing to pre-register yet")
            return None
        best = max(finals, key=lambda e: statistics.fmean(paired_differences(acc.get(e["name"], {}), acc[base])
                                                          or [-1.0]))

        def side(label):
            chosen, _ = self.choice(index, regime, target, label)
            return {"name": label, "constants": dict(chosen["constants"]), "lr": chosen["lr"]}

        pre = {"regime": regime, "setting": "target", "regime_words": self.regime_words(regime, target),
               "finalist": {**side(best["name"]), "entry": best}, "baseline": side(base),
               "baseline_rule": f"the strongest baseline of the regime: highest mean test accuracy over test seeds "
                                f"{_seeds_text(TEST_SEEDS)} in the target",
               "seeds": list(CONFIRM_SEEDS),
               "test": f"paired t-test (two-sided) of test accuracy, {best['name']} minus {base}, over the "
                       f"{len(CONFIRM_SEEDS)} fresh seeds (each its own split, subset and noise); a training that "
                       f"fails (diverges or raises) scores chance accuracy ({self.chance(regime, target):.2g}, "
                       f"1 / classes) on its seed, for both losses alike, and the report counts the failures; "
                       f"confirmed when the mean difference is positive and p < {ALPHA}. One test: no correction.",
               "failed_training_scores": self.chance(regime, target),
               "written_before_confirmation": True}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(pre, indent=2) + "\n")  # a kill mid-write leaves no half a file
        return pre

    def regime_words(self, regime: str, setting: Setting) -> str:
        from nlfs.search import training_regime

        cfg = self.config(Job(regime, setting, "test", "CE", (), LR_GRID[1], TEST_SEEDS[0]))
        words = training_regime(cfg, split_per_seed=True)
        # nlfs.data.with_label_noise corrupts the training images' labels only
        return words + ("; validation and test labels stay clean" if cfg.label_noise else "")


@contextlib.contextmanager
def _locked(path: Path):
    """One driver per trainings CSV at a time (``path``: its lock file, under runs/): a second one stops
    with one line."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{path}: another bench.discovery2 stage is training; wait for it") from None
        yield


# The costs the committed plan was priced with (`--plan`, 2026-12-07): the report sets what was spent beside
# this plan, not beside one re-priced by later measurements.
PLAN_COSTS = Costs(target_s=212.0, screen=0.041129648529871665, resnet9v2=0.8682767638390584,
                   digits=0.003580280914348664, race=0.12735849056603774)


# --------------------------------------------------------------------------------------- the searches
def search_argv(camp: Campaign, regime: str, index: dict | None = None) -> list[str]:
    """``nlfs.evolve``'s arguments for a regime's search: genetic programming warm-started from the
    regime's strongest known losses, the frozen ``RUNGS`` (screened with the regime's label noise), every
    training scored by its final model and on CE's gradient scale as the campaign's own trainings are,
    and the regime's target with the plan's leaders, racing and seeds."""
    target = target_setting(regime)
    argv = ["--dataset", DATASET, "--algorithm", "gp", "--seed", str(SEARCH_SEED),
            "--budget", str(camp.plan.candidates), "--finalists", str(camp.plan.leaders),
            "--rungs", rung_text(), "--eta", str(ETA), "--race-seeds", str(camp.plan.race_seeds),
            "--score", "final", "--grad-scale", "ce",
            "--target", spec_text(target.target_spec(camp.plan.search_target_seeds)),
            "--seed-losses", ";".join(warm_starts(camp, regime, index)), "--workers", str(camp.workers),
            "--threads", "1", "--run-dir", str(camp.search_dir(regime)), "--no-progress"]
    for key, value in target.noise:
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def warm_starts(camp: Campaign, regime: str, index: dict | None = None) -> list[str]:
    """The regime's baselines as warm starts, with the constants the rates stage chose in the target
    (before it has: the catalogue's). Label smoothing enters as its formula with its chosen eps and the
    dataset's classes written in (as the campaign ran it), a baseline with a chosen
    published constants as its expression with those numbers."""
    from nlfs.data import load_dataset
    from nlfs.losses import get

    out = []
    index = camp.index() if index is None else index
    target = target_setting(regime)
    for name in BASELINES[regime]:
        if name in PUBLISHED_CONSTANTS:
            chosen, _ = camp.choice(index, regime, target, name)
            out.append(str(get(name).expr.substitute(dict(chosen["constants"]))) if chosen else name)
            continue
        if name != SMOOTHING:
            out.append(name)
            continue
        chosen, _ = camp.choice(index, regime, target, name)
        eps = chosen["eps"] if chosen else get(SMOOTHING).constants["a"]
        classes = load_dataset(DATASET).num_classes
        out.append(f"-((1 - {eps:g}) * y + {eps:g} / {classes}) * log(p)")
    return out


def run_searches(camp: Campaign, regimes) -> int:
    """Each regime's search: started, resumed where a killed one stopped, or left when finished. A search
    starts only once the rates stage has chosen every warm start's constants in the target (its warm
    starts are frozen into the run when it starts); one that cannot start yet leaves the other to run,
    and the return code says so (2)."""
    from nlfs import evolve

    index = camp.index()
    waiting = 0
    for regime in regimes:
        run = camp.search_dir(regime)
        if (run / "summary.json").is_file():
            camp.log(f"{regime}: search finished ({run / 'summary.json'})")
            continue
        if camp.finalists_file(regime).is_file():  # a fresh checkout: the run directory is not committed
            camp.log(f"{regime}: search finished; its finalists are {_rel(camp.finalists_file(regime))} and its "
                     f"evaluations {_rel(camp.search_csv(regime))} ({run} is not here)")
            continue
        tuned = [b for b in BASELINES[regime] if b == SMOOTHING or b in PUBLISHED_CONSTANTS]
        unchosen = [b for b in tuned if camp.choice(index, regime, target_setting(regime), b)[0] is None]
        if unchosen and not (run / "run.db").is_file():
            camp.log(f"{regime}: the rates stage has not chosen {', '.join(unchosen)}'s constants yet, which "
                     "the search starts from: run `rates` first")
            waiting = 2
            continue
        argv = (["--resume", str(run), "--workers", str(camp.workers), "--threads", "1", "--no-progress"]
                if (run / "run.db").is_file() else search_argv(camp, regime))
        camp.log(f"{regime}: python -m nlfs.evolve " + " ".join(argv))
        rc = evolve.main(argv)
        if rc:
            return rc
    return waiting


SEARCH_COLUMNS = ["id", "candidate", "rung", "stage", "status", "fitness", "accuracy", "trainings", "wall_time",
                  "cpu_time", "created", "expression"]


def with_trainings(rows: list[dict]) -> list[dict]:
    """The search's rows, each with ``trainings``: the seeds it trained (a row lists every seed of its
    candidate at its budget, those of the rung below or of an earlier racing step reused; a fitness
    reused from a twin trained none, a rejection none)."""
    seen: dict = {}
    out = []
    for r in rows:
        seeds = {s["seed"] for s in (r.get("result") or {}).get("seeds", [])}
        key = (r.get("candidate") or r["id"], r.get("fidelity"), r["status"] == "baseline")
        new = seeds - seen.setdefault(key, set())
        seen[key] |= seeds
        if (r.get("reason") or "").startswith("fitness reused"):
            new = set()
        trained = len(new) or int(r["status"] in ("diverged", "error") and not seeds)
        out.append({**r, "trainings": trained})
    return out


def pick_finalists(camp: Campaign, regime: str) -> list[dict]:
    """The search's finalists -> ``finalists_file`` (nlfs/found_losses.json's format), and every evaluation
    of the search -> ``search_csv`` (its compute). Finalists: the leaders the search trained in its target,
    by their paired difference to CE there, the plan's number; never a catalogue loss in disguise (a
    warm start itself is a baseline) nor a candidate the target did not check (a proxy lead alone). None
    of those: an empty list, and the regime's verdict says the search found nothing to test. Picked once:
    an existing file is kept."""
    from nlfs.losses import stored_class_reduction
    from nlfs.search import read_run

    run = camp.search_dir(regime)
    summary = json.loads((run / "summary.json").read_text())
    rows, saved = read_run(run)
    write_table(camp.search_csv(regime), with_trainings(rows), SEARCH_COLUMNS)
    path = camp.finalists_file(regime)
    if path.is_file():  # picked once: what the test stage and a pre-registration refer to never changes
        entries = camp.finalists(regime)
        if any("known_family" not in e for e in entries):  # picked before the annotation: add it alone
            atomic_write(path, json.dumps(with_known_families(entries), indent=2) + "\n")
        return camp.finalists(regime)
    by_id = {r["id"]: r for r in rows}

    checked = [e for e in summary["best"] if not e.get("same_as") and (e.get("target") or {}).get("paired") is not None]
    entries = []
    for i, e in enumerate(sorted(checked, key=lambda e: -e["target"]["paired"])[:camp.plan.finalists], 1):
        entries.append({"name": f"{PREFIX[regime]}{i}", "expression": e["expression"], "constants": e["constants"],
                        "class_reduction": stored_class_reduction(by_id[e["id"]], stored_class_reduction(saved)),
                        "scale": float(e.get("scale") or 1.0),
                        "provenance": {"search_run": f"runs/{run.name}", "candidate": e["name"],
                                       "search_target": e.get("in_target", ""),
                                       "results": f"bench/results/discovery2_{regime}.md"}})
    entries = with_known_families(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(entries, indent=2) + "\n")
    return entries


def with_known_families(entries: list[dict]) -> list[dict]:
    """Each finalist with ``known_family``: the catalogue loss it is at other constants than the published
    ones (``{"loss", "constants"}``, e.g. GCE at q = 0.5), or None. Such a finalist is that loss, tuned:
    if it wins, the finding is the constants, not a new loss."""
    from nlfs.search import family_record

    out = []
    for e in entries:
        if "known_family" not in e:
            e = {**e, "known_family": family_record(e["expression"], e.get("constants"),
                                                    e.get("class_reduction") or "class_sum")}
        out.append(e)
    return out


def family_words(entry: dict) -> str:
    """'GCE (q 0.5)' for a finalist that is a catalogue loss at other constants, else ''."""
    from nlfs.search import family_text

    return family_text(entry.get("known_family"))


# -------------------------------------------------------------------------------------------- report
def _pp(x: float) -> str:
    return f"{x * 100:+.2f}"


def _confirmation(camp: Campaign, regime: str, pre: dict, index: dict) -> dict | None:
    """The pre-registered test from the confirmation's trainings (pending before every fresh seed of both
    losses is in). A failed training scores chance accuracy (the file's rule); ``failed`` counts them."""
    from nlfs.stats import paired_by_key

    chance = pre.get("failed_training_scores", camp.chance(regime, target_setting(regime)))
    acc, failed = {}, {"finalist": 0, "baseline": 0}
    for side, job, loss in camp.confirm_jobs(pre):
        row = index.get(camp.key(job, loss))
        if row is not None:
            ok = _ok(row) and row["test_acc"] not in ("", None)
            acc.setdefault(side, {})[job.seed] = float(row["test_acc"]) if ok else chance
            failed[side] += not ok
    done = [len(acc.get(side, {})) for side in ("finalist", "baseline")]
    if done != [len(pre["seeds"])] * 2:
        return {"pending": True, "done": sum(done), "of": 2 * len(pre["seeds"]), "failed": failed}
    t = paired_by_key(acc["finalist"], acc["baseline"])
    return {"pending": False, "test": t, "confirmed": bool(t.mean_diff > 0 and t.p_t < ALPHA), "failed": failed}


def search_target_words(camp: Campaign, regime: str, index: dict) -> str:
    """The regime of a search's target check (``search_argv`` as ``nlfs.evolve`` reads it): its training,
    seeds and split seed, and gradient scale."""
    from nlfs.evolve import build_parser, config_from_args
    from nlfs.search import training_regime

    cfg = config_from_args(build_parser().parse_args(search_argv(camp, regime, index)))
    cfg.resolve()
    train = cfg.target_train_config()
    seeds = [cfg.seed + i for i in range(cfg.target_regime().seeds)]
    shared = "validation split, training subset and label-noise draw" if train.label_noise else (
        "validation split and training subset")
    return (f"{training_regime(train)}, seeds {_seeds_text(seeds)} all on split seed {train.split_seed} (one "
            f"{shared} for every seed), each paired with CE on the same seeds")


def limits(camp: Campaign, regime: str) -> list[str]:
    """What this campaign's protocol leaves out in ``regime``, each with its reason."""
    from nlfs.losses import get

    out = []
    second = _second_lr_seed_h(camp.plan, PLAN_COSTS)
    total = cpu_hours(stages(camp.plan, PLAN_COSTS), PLAN_COSTS)  # the added settings included
    out.append(f"One learning-rate seed ({_seeds_text(LR_SEEDS)}): neighbouring grid points can differ by less than "
               "one seed's noise, so a choice between neighbours may be partly chance. A second "
               f"seed would add {second:.1f} CPU-hours to a plan already at {total:.1f} of its {camp.plan.budget_h:g} "
               f"(`{_rel(PLAN_MD)}`, its added settings included).")
    fixed = [f"{b} ({', '.join(f'{k}={v:g}' for k, v in get(b).constants.items())})"
             for b in BASELINES[regime] if b != SMOOTHING and b not in PUBLISHED_CONSTANTS and get(b).constants]
    sets = [b for b in BASELINES[regime] if b in PUBLISHED_CONSTANTS]
    if fixed or sets:
        keeps = "keeps its paper's value" if len(fixed) == 1 else "keep their papers' values"
        tuned = (["label smoothing's eps is tuned (the issue asks it)"] if SMOOTHING in BASELINES[regime] else []) + (
            [f"{' and '.join(sets)} take the better of their authors' two published sets of constants"] if sets else [])
        out.append(f"Uneven tuning: the found loss's constants were searched in this regime; "
                   f"{'; '.join(tuned) + '; ' if tuned else ''}"
                   + (f"{', '.join(fixed)} {keeps} "
                      f"(only {'its' if len(fixed) == 1 else 'their'} learning rate is tuned)" if fixed else
                      "no baseline's constants are searched as freely")
                   + ": where a baseline's constants are off for this regime, the comparison favours the found loss. "
                   "No finer grid over them fits the budget.")
    out.append("Each regime's family is Holm-corrected on its own (two questions, one per regime): a claim that "
               f"spans both regimes carries up to {2 * ALPHA:g} family-wise error, not {ALPHA:g}.")
    cut = OPTIONAL_BASELINES[regime] if not camp.plan.optional_baselines else ()
    if cut:
        out.append(f"{' and '.join(cut)} were cut by the budget (the plan's first cut, `optional_baselines=False`): "
                   "they are in the catalogue, not in this comparison.")
    return out


def comparisons(camp: Campaign, regime: str, index: dict) -> tuple[list[dict], int]:
    """``(rows, family)``: every comparison of the regime done so far (``nlfs.heldout.table``: a finalist
    and a baseline with all their test seeds in a setting, a failed one at chance), Holm-corrected over
    the whole family fixed before any test training: finalists x baselines x settings, the finalists the
    plan's number until the search has picked them, then those it picked. A comparison not yet run counts
    as p = 1, so the family never shrinks to what has finished."""
    from nlfs.heldout import table
    from nlfs.stats import holm

    settings = camp.settings(regime)
    finals = [e["name"] for e in camp.finalists(regime)]
    baselines = list(BASELINES[regime])
    # the plan's finalists until the search has picked them (before any test training), then those picked
    planned = camp.plan.finalists if camp.picked(regime) is None else len(finals)
    family = planned * len(baselines) * len(settings)
    done = {}
    for s in settings:
        acc = camp.accuracies(regime, s, index)
        complete = {label: a for label, a in acc.items() if camp.test_rows(index, regime, s, label) is not None}
        if complete:
            done[s.name] = complete
    rows = table(done, finals, baselines, ALPHA) if finals else []
    for key in ("p_t", "p_w"):
        for r, adj in zip(rows, holm([r[key] for r in rows] + [1.0] * (family - len(rows)))):
            r[key + "_holm"] = adj
    for r in rows:
        r["beats"] = bool(r["mean_diff"] > 0 and math.isfinite(r["p_t_holm"]) and r["p_t_holm"] < ALPHA)
    return rows, family


NOT_NEEDED = "not needed (no finalist)"  # a stage after a search that found no novel loss


def _cpu_s(row: dict, cpu: str = "cpu_s", wall: str = "wall_s") -> float:
    """A training's CPU seconds: its ``cpu`` column (what the worker measured, 1 thread), else, in a row
    from before that column, its ``wall`` time (the same while nothing else shares the cores, more when
    it did). A search's evaluations: ``cpu_time`` and ``wall_time``."""
    return float(row.get(cpu) or row[wall])


def _stage_rows(camp: Campaign, regime: str, index: dict) -> list[dict]:
    """Per planned stage: planned trainings and CPU-hours (``PLAN_COSTS``), trainings done and CPU-hours
    spent (``_cpu_s``), and whether it is done, partial or pending."""
    mine = [r for r in index.values() if r["regime"] == regime]
    planned = {s.stage: s for s in stages(camp.plan, PLAN_COSTS) if s.regime == regime}
    per_h = PLAN_COSTS.target_s / 3600
    picked = camp.picked(regime) is not None  # the search is over and its finalists chosen (maybe none)
    none = camp.picked(regime) == []  # nothing found: the tests after the search are not needed
    search = []
    if camp.search_csv(regime).is_file():
        with camp.search_csv(regime).open(newline="") as fh:
            search = [r for r in csv.DictReader(fh) if r["status"] in ("ok", "diverged", "error", "baseline")
                      and r.get("wall_time") not in ("", None)]
    target = target_setting(regime)
    wanted = {s.name: [j for j in camp.wanted(index, regime, [s], camp.losses(regime)) if camp.key(j) not in index]
              for s in camp.settings(regime)}  # the trainings still missing
    test_jobs = [j for j in wanted["target"] if j.stage == "test"]
    lr_jobs = [j for j in wanted["target"] if j.stage == "lr"]
    out = []

    def add(name, rows, done, wall=None, needed=True):
        plan = planned.get(name)
        spent = sum(_cpu_s(r) for r in rows) if wall is None else wall
        status = NOT_NEEDED if not needed else "done" if done and rows else "pending" if not rows else "partial"
        out.append({"stage": name, "plan_trainings": plan.trainings if plan else 0,
                    "plan_h": plan.units * per_h if plan else 0.0, "h": spent / 3600, "status": status,
                    # a search row may train several seeds (older tables without the column: one each)
                    "trainings": sum(int(r.get("trainings") or 1) for r in rows)})

    # the target stage's rows, CE's trained there beside the leaders included: those at its rung
    in_target = {r["rung"] for r in search if r.get("stage") == "target"}
    scr = [r for r in search if r["rung"] not in in_target]
    tgt = [r for r in search if r["rung"] in in_target]
    add("search: screening", scr, picked, sum(_cpu_s(r, "cpu_time", "wall_time") for r in scr))
    add("search: target", tgt, picked, sum(_cpu_s(r, "cpu_time", "wall_time") for r in tgt))
    add("learning rate", [r for r in mine if r["setting"] == target.name and r["stage"] == "lr"],
        picked and not lr_jobs)
    add("test (elimination, Holm)", [r for r in mine if r["setting"] == target.name and r["stage"] == "test"],
        picked and not lr_jobs and not test_jobs, needed=not none)
    for s in camp.settings(regime, target=False):
        add(f"held-out: {s.name}", [r for r in mine if r["setting"] == s.name and r["stage"] != "confirm"],
            picked and not wanted[s.name], needed=not none)
    pre = camp.preregistration_file(regime)
    conf = [r for r in mine if r["stage"] == "confirm"]
    add("confirmation", conf, pre.is_file() and len(conf) >= 2 * len(CONFIRM_SEEDS), needed=not none)
    return out


def report(camp: Campaign, regime: str) -> str:
    """``discovery2_<regime>.md`` from the committed files: the verdict first, the compute per stage beside
    the plan, the learning-rate choices, the test stage, every comparison (Holm over all of the regime's)
    and the pre-registered confirmation; a stage without trainings yet is named as pending."""
    from nlfs.heldout import markdown
    from nlfs.stats import format_mean_std, format_p

    index = camp.index()
    settings = camp.settings(regime)
    target = settings[0]
    finals = [e["name"] for e in camp.finalists(regime)]
    baselines = list(BASELINES[regime])
    acc = {s.name: camp.accuracies(regime, s, index) for s in settings}
    strongest = camp.strongest(regime, index)
    rows, family = comparisons(camp, regime, index)
    interim = (f"interim: {len(rows)} of {family} comparisons done" if len(rows) < family else "")
    stage_rows = _stage_rows(camp, regime, index)
    pending = [s["stage"] for s in stage_rows if s["status"] not in ("done", NOT_NEEDED)]
    regime_words = {s.name: camp.regime_words(regime, s) for s in settings}
    pre = json.loads(camp.preregistration_file(regime).read_text()) if camp.preregistration_file(regime).is_file() \
        else None
    conf = _confirmation(camp, regime, pre, index) if pre else None
    mine = [r for r in index.values() if r["regime"] == regime]
    lines = [f"# Discovery campaign 2, {regime} regime: {REGIMES[regime]} (Fashion-MNIST)", ""]

    # -- the verdict first
    vs_best = [r for r in rows if r["baseline"] == strongest and r["setting"] == target.name]
    test_done = "test (elimination, Holm)" not in pending
    if camp.picked(regime) == []:
        verdict = ("**No.** The search ended without a novel loss checked in its target (every leader it trained "
                   "was a known loss in disguise, or none reached it): there is no found loss to test "
                   f"against {', '.join(baselines)}.")
    elif not finals or not test_done or strongest is None:
        verdict = ("**No verdict yet.** The question, does a found loss beat the strongest known loss of this "
                   f"regime ({', '.join(baselines)}: the strongest is the one with the highest mean test accuracy "
                   "in the target), is answered once the test stage is done.")
    else:
        wins = [r for r in vs_best if r["beats"]]
        best_r = max(vs_best, key=lambda r: r["mean_diff"])
        if wins:
            verdict = (f"**Yes, in the target:** {', '.join(r['finalist'] for r in wins)} beats {strongest}, the "
                       f"strongest known loss of this regime, after the Holm correction ({best_r['finalist']} "
                       f"{_pp(best_r['mean_diff'])} pp [{_pp(best_r['ci_low'])}, {_pp(best_r['ci_high'])}], Holm p "
                       f"{format_p(best_r['p_t_holm'])}).")
        else:
            verdict = (f"**No.** No found loss beats {strongest}, the strongest known loss of this regime, in the "
                       f"target after the Holm correction (best: {best_r['finalist']} {_pp(best_r['mean_diff'])} pp "
                       f"[{_pp(best_r['ci_low'])}, {_pp(best_r['ci_high'])}], Holm p {format_p(best_r['p_t_holm'])}).")
        won = [f"{r['finalist']} > {r['baseline']} in {r['setting']} ({_pp(r['mean_diff'])} pp)" for r in rows
               if r["beats"]]
        lost = [f"{r['finalist']} < {r['baseline']} in {r['setting']} ({_pp(r['mean_diff'])} pp)" for r in rows
                if r["mean_diff"] < 0 and math.isfinite(r["p_t_holm"]) and r["p_t_holm"] < ALPHA]
        verdict += (" Where a found loss wins after correction: " + ("; ".join(won) if won else "nowhere") + ". "
                    "Where it loses after correction: " + ("; ".join(lost) if lost else "nowhere") + ".")
        if conf and not conf["pending"]:
            t, f, b = conf["test"], pre["finalist"]["name"], pre["baseline"]["name"]
            verdict += (f" The pre-registered confirmation on fresh seeds ({f} against {b}: {_pp(t.mean_diff)} pp "
                        f"[{_pp(t.ci_low)}, {_pp(t.ci_high)}], p {format_p(t.p_t)}) is "
                        f"**{'confirmed' if conf['confirmed'] else 'not confirmed'}**")
            words = family_words(pre["finalist"].get("entry") or {})
            if conf["confirmed"] and words:  # a re-tuned known loss: the win is its constant's, not a new loss's
                verdict += (f": {f} is {words}, so what it confirms is that constant over {b}'s published one in "
                            "this regime, not a new loss")
            verdict += "."
        tuned = {e["name"]: family_words(e) for e in camp.finalists(regime) if family_words(e)}
        if any(r["finalist"] in tuned for r in rows if r["beats"]):
            verdict += (" " + "; ".join(f"{n} is {w}" for n, w in tuned.items()) + ": a catalogue loss at other "
                        "constants than its published ones, so a win of it is a tuned known loss, not a new one.")
        verdict += (" A loss ships (`nlfs.losses.found()`) only if it beats the strongest baseline of its regime "
                    "after correction and its confirmation holds.")
        if interim:
            verdict = (f"**{interim[0].upper()}{interim[1:]}.** " + verdict + f" Until all {family} are done this "
                       f"verdict is interim: the Holm correction counts the whole family the plan fixed ("
                       f"{family // len(baselines) // len(settings)} finalist(s) x {len(baselines)} baselines x "
                       f"{len(settings)} settings), a comparison not yet run as p = 1.")
    lines += [verdict, ""]
    lines += ["Pending stages: " + (", ".join(pending) if pending else "none") + ".", ""]
    lines += ["Every accuracy below is the final model's (the weights at the end of training), in its setting's "
              "regime: test accuracy (the official test split, read once per training), except in the learning-rate "
              "table, which shows validation accuracy on the learning-rate seed(s). The learning rate (and label "
              "smoothing's eps, SCE's and NCE+RCE's published constants) is chosen on that final validation "
              "accuracy, the same model the test stage tests, "
              "for every loss alike; never on test accuracy.", ""]
    lines += [f"- `{name}`: {words}" for name, words in regime_words.items()]
    machines = sorted({r["machine"] for r in mine if r.get("machine")})
    dates = sorted({r["date"] for r in mine if r.get("date")})
    lines += ["", f"Trainings: {len(mine)} in `{_rel(camp.trainings)}` (machine: {', '.join(machines) or '-'}; "
              f"dates: {', '.join(dates) or '-'}).", ""]
    lines += ["## Limits", ""] + [f"- {text}" for text in limits(camp, regime)] + [""]

    # -- compute
    lines += ["## Compute per stage", "",
              f"CPU-hours spent: the sum of the trainings' CPU times (1 thread each: `cpu_s`, and the search's "
              f"evaluations' `cpu_time` in `{_rel(camp.search_csv(regime))}`; a row from before those columns "
              f"counts its wall time, which other work sharing the cores inflates). Planned: `{_rel(PLAN_MD)}` "
              f"(one target training {PLAN_COSTS.target_s:.0f} CPU-s).", "",
              "| stage | status | trainings planned | trainings done | CPU-h planned | CPU-h spent |",
              "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {s['stage']} | {s['status']} | {s['plan_trainings']} | {s['trainings']} | {s['plan_h']:.2f} | "
              f"{s['h']:.2f} |" for s in stage_rows]
    lines += [f"| all | | {sum(s['plan_trainings'] for s in stage_rows)} | {sum(s['trainings'] for s in stage_rows)} | "
              f"{sum(s['plan_h'] for s in stage_rows):.2f} | {sum(s['h'] for s in stage_rows):.2f} |", ""]

    # -- the finalists
    lines += ["## Finalists", ""]
    entries = camp.picked(regime)
    if entries == []:
        lines += [f"None: the search (`{_rel(camp.search_dir(regime))}`) trained no novel leader in its target.", ""]
    elif entries is None:
        lines += [f"Pending: the search (`{_rel(camp.search_dir(regime))}`, `python -m nlfs.evolve` in the target "
                  f"with warm starts from {', '.join(baselines)}) and `finalists` write "
                  f"`{_rel(camp.finalists_file(regime))}`.", ""]
    else:
        lines += ["| name | expression | constants | gradient scale | a catalogue loss at other constants | "
                  "search candidate | search's target check |",
                  "|---|---|---|---:|---|---|---|"]
        for e in entries:
            prov = e.get("provenance") or {}
            consts = ", ".join(f"{k}={v:.4g}" for k, v in (e.get("constants") or {}).items()) or "-"
            fam = family_words(e) or ("no" if "known_family" in e else "not checked")
            lines.append(f"| {e['name']} | `{e['expression']}` | {consts} | {float(e.get('scale') or 1.0):.3g} | "
                         f"{fam} | {prov.get('candidate', '-')} | {prov.get('search_target', '-')} |")
        lines += ["", f"The search's target check is the search's own regime, not the test stage's: "
                  f"{search_target_words(camp, regime, index)}. The finalists are the novel leaders the search "
                  "trained there, by their paired lead over CE (the search trains only CE beside its leaders), not "
                  "over the regime's strongest baseline: that only orders them, and the test stage compares each "
                  "with every baseline. A finalist that is a catalogue loss at other constants (its gradient on the "
                  "search's fixed probe batch equal up to a factor, `nlfs.search.known_family`) is that loss tuned: "
                  "its comparisons stand, and a win would be a finding about the constants, not a new loss.", ""]

    # -- learning rates
    lines += ["## Learning rates (and label smoothing's eps, SCE's and NCE+RCE's published constants)", "",
              f"Grid {{{', '.join(f'{x:g}' for x in LR_GRID)}}} widened by x2 or /2 while the choice is on an edge, "
              f"by mean validation accuracy of the final model (the one the test stage tests; not the peak over "
              f"epochs) on seed(s) {_seeds_text(LR_SEEDS)} (not test seeds).", "",
              "| setting | loss | rates tried: validation % | chosen | on an edge |", "|---|---|---|---:|---|"]
    for s in (s for s in settings if s.own_rates):
        for label in camp.losses(regime):
            chosen, _ = camp.choice(index, regime, s, label)
            if chosen is None:
                lines.append(f"| {s.name} | {label} | pending | | |")
                continue
            tried = ", ".join(f"{lr:g}: {v * 100:.2f}" for lr, v in chosen["tried"].items())
            eps = ""
            if "eps" in chosen:
                eps = (f" (eps {chosen['eps']:g} of " + ", ".join(f"{e:g}: {v * 100:.2f}"
                                                                 for e, v in chosen["eps_tried"].items()) + ")")
            if "published" in chosen:
                eps = (f" ({chosen['published']} constants, {_constants_text(chosen['constants'])}, of "
                       + ", ".join(f"{w}: {v * 100:.2f}" for w, v in chosen["published_tried"].items()) + ")")
            edge = on_edge(chosen["lr"], chosen["tried"]) or ("eps" in chosen and on_edge(chosen["eps"],
                                                                                             chosen["eps_tried"]))
            lines.append(f"| {s.name} | {label} | {tried}{eps} | {chosen['lr']:g} | "
                         f"{'yes (widening capped)' if edge else 'no'} |")
    shared = [s.name for s in settings if not s.own_rates]
    lines += ["", f"{', '.join(shared)}: the target's choices (another noise on the same data and model)."] \
        if shared else []
    lines.append("")

    # -- the test stage and every comparison
    lines += ["## Test accuracy per setting", "",
              f"Test seeds {_seeds_text(TEST_SEEDS)}, each its own validation images, training subset and label "
              "noise. A failed training (diverged or raised) scores chance accuracy (1 / classes) on its seed, in "
              "the mean here and in every comparison, for every loss alike.",
              "", "| setting | loss | seeds trained | failed (at chance) | test accuracy % (mean ± sd, all seeds) |",
              "|---|---|---:|---:|---:|"]
    for s in settings:
        failed = camp.failed(regime, s, index)
        for label in camp.losses(regime):
            a = acc[s.name].get(label, {})
            m, sd = (statistics.fmean(a.values()), statistics.stdev(a.values()) if len(a) > 1 else math.nan) \
                if a else (math.nan, math.nan)
            lines.append(f"| {s.name} | {label}{' (strongest)' if s.is_target and label == strongest else ''} | "
                         f"{len(a) - failed.get(label, 0)} | {failed.get(label, 0)} | "
                         f"{format_mean_std(m, sd, 2, 100)} |")
    lines += ["", "Strongest baseline in the target: "
              f"{strongest or 'pending (every baseline needs all its test seeds)'}.",
              "", "## Found losses against every baseline", ""]
    if rows:
        table_md = markdown(rows, ALPHA, regime_words)
        head = table_md.split("\n", 1)[0]
        assert head.startswith(f"{len(rows)} comparisons;"), head  # nlfs.heldout.markdown's first line
        lines += [f"{len(rows)} of the {family} comparisons of the family (the plan's finalists x baselines x "
                  f"settings) done{' (interim)' if interim else ''}; p-values Holm-corrected across all "
                  f"{family}, a comparison not yet run counted as p = 1; a finalist beats a baseline when the "
                  f"difference is positive and the corrected t-test p < {ALPHA}. A failed training scores chance "
                  "accuracy on its seed." + table_md[len(head):], ""]
    else:
        lines += ["Pending: no finalist has test seeds yet.", ""]

    # -- the confirmation
    lines += ["## Pre-registered confirmation", ""]
    if pre is None:
        lines.append(f"Pending: `{_rel(camp.preregistration_file(regime))}` is written (and committed) once the test "
                     "stage is done, before any confirmation training.")
    else:
        f, b = pre["finalist"], pre["baseline"]
        lines.append(f"Pre-registered in `{_rel(camp.preregistration_file(regime))}`: {f['name']} (lr {f['lr']:g}) "
                     f"against {b['name']} (lr {b['lr']:g}"
                     + (f", {_constants_text(b['constants'])}" if b["constants"] else "")
                     + f"), seeds {_seeds_text(pre['seeds'])}; {pre['test']}")
        if conf is None or conf["pending"]:
            lines += ["", f"Pending: {conf['done'] if conf else 0} of {2 * len(pre['seeds'])} trainings done."]
        else:
            t = conf["test"]
            lines += ["", f"{f['name']} - {b['name']} = {_pp(t.mean_diff)} pp [{_pp(t.ci_low)}, {_pp(t.ci_high)}] "
                      f"over {t.n} paired seeds ({conf['failed']['finalist']} failed training(s) of {f['name']}, "
                      f"{conf['failed']['baseline']} of {b['name']}, at chance), {t.wins}/{t.losses} better/worse, "
                      f"paired t-test p = {format_p(t.p_t)}: "
                      f"**{'confirmed' if conf['confirmed'] else 'not confirmed'}** at α = {ALPHA}."]
    return "\n".join(lines) + "\n"


def _constants_text(constants) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in dict(constants).items())


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def committed(path: Path) -> bool:
    """Whether ``path`` is in git's last commit as it is on disk (a pre-registration must be)."""
    import subprocess

    def git(*a):
        return subprocess.run(["git", *a], cwd=Path(path).parent, capture_output=True).returncode == 0

    return git("ls-files", "--error-unmatch", Path(path).name) and git("diff", "--quiet", "HEAD", "--",
                                                                          Path(path).name)


# ----------------------------------------------------------------------------------------------- CLI
STAGES = ("rates", "baselines", "search", "finalists", "test", "heldout", "preregister", "confirm", "report")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.discovery2", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n")[1])
    ap.add_argument("stage", nargs="?", choices=STAGES, help="the campaign stage to run")
    ap.add_argument("--plan", action="store_true", help="write the compute plan (no training)")
    ap.add_argument("--regime", choices=(*REGIMES, "both"), default="both", help="(default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="trainings at once, 1 thread each (default: %(default)s)")
    ap.add_argument("--budget", type=float, default=PlanConfig.budget_h, help="CPU-hours (default: %(default)s)")
    ap.add_argument("--target-cpu-s", type=float, help="one target training's CPU-seconds (default: measured)")
    ap.add_argument("--out", type=Path, default=PLAN_MD, help="the plan's file (default: %(default)s)")
    args = ap.parse_args(argv)
    if not args.plan and not args.stage:
        ap.error("nothing to do: pass --plan or a stage")
    if args.budget <= 0 or (args.target_cpu_s is not None and args.target_cpu_s <= 0) or args.workers < 1:
        ap.error("--budget, --target-cpu-s and --workers must be positive")
    if args.plan:
        costs = measured_costs(args.target_cpu_s)
        requested = PlanConfig(budget_h=args.budget)
        cfg, cuts = fit(requested, costs)
        args.out.write_text(plan_markdown(cfg, costs, cuts, requested))
        print(f"bench.discovery2: plan {cpu_hours(stages(with_added(cfg), costs), costs):.1f} of {args.budget:g} "
              "CPU-hours "
              f"-> {args.out}")
        if not args.stage:
            return 0
    regimes = list(REGIMES) if args.regime == "both" else [args.regime]
    camp = Campaign(workers=args.workers)
    if args.stage == "rates":
        camp.rates(regimes)
    elif args.stage == "baselines":
        camp.baselines(regimes)
    elif args.stage == "search":
        return run_searches(camp, regimes)
    elif args.stage == "finalists":
        for regime in regimes:
            if (camp.search_dir(regime) / "summary.json").is_file():
                entries = pick_finalists(camp, regime)
            elif camp.finalists_file(regime).is_file():  # picked before; the run directory is not here
                entries = camp.finalists(regime)
            else:
                print(f"{regime}: the search has not finished ({camp.search_dir(regime)}): run `search` first")
                continue
            for e in entries:
                print(f"{regime}: {e['name']} = {e['expression']} {e['constants']} scale {e['scale']:.3g}")
    elif args.stage == "test":
        camp.test(regimes)
    elif args.stage == "heldout":
        camp.heldout(regimes)
    elif args.stage == "preregister":
        for regime in regimes:
            pre = camp.preregister(regime)
            if pre:
                print(f"{regime}: pre-registered {pre['finalist']['name']} vs {pre['baseline']['name']} on seeds "
                      f"{_seeds_text(pre['seeds'])} -> {camp.preregistration_file(regime)}")
    elif args.stage == "confirm":
        loose = [r for r in regimes if camp.preregistration_file(r).is_file()
                 and not committed(camp.preregistration_file(r))]
        for regime in loose:
            print(f"{regime}: {camp.preregistration_file(regime)} is not committed: commit it before the confirmation "
                  "runs (bash bench/discovery2.sh confirm does)")
        camp.confirm([r for r in regimes if r not in loose])
    elif args.stage == "report":
        for regime in regimes:
            out = RESULTS / f"discovery2_{regime}.md"
            out.write_text(report(camp, regime))
            print(f"bench.discovery2: {regime} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
