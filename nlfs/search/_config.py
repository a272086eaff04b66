"""What a search is: its configuration (``SearchConfig``, the presets), the checks that stop a search
that cannot run here before any work, and the algorithm and warm-start genotypes it builds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import _filters as F
from ._algorithms import ALGORITHMS
from ._rungs import default_rungs, make_rungs
from ._target import Target, default_target, make_target
from ._worker import SCORES

PRESETS = {
    # a short search on two CPU cores: screens candidates for 1 minute, lets the screened ones finish
    # their rungs (the last is an epoch of the whole split), races its leader to 3 seeds (one step),
    # then trains it and CE once in the target side by side (Fashion-MNIST: all 55,000 images for 8
    # epochs, the longest stage; wall times under "The README's first command" in bench/results/README.md);
    # an explicit --budget drops the time limit. Its one target seed shows a sign, never a held lead, so
    # it trains none of the regime's strong baselines there (each would add a target training)
    "quick": dict(budget=1000, time_limit=60, population=8, sample=3, initial=12, children=10_000,
                  gp_population=12, generations=10_000, finalists=1, target_seeds=1, race_seeds=3,
                  regime_baselines=False),
    # the papers' values (NeuroLoss regularized evolution; EvoMAL GP), and the regime's strongest known
    # losses trained in the target beside CE (_target.REGIME_BASELINES)
    "paper": dict(budget=5000, population=100, sample=20, initial=1000, children=4000,
                  gp_population=25, generations=50, finalists=3, target_seeds=3, race_seeds=6,
                  regime_baselines=True),
}


@dataclass
class SearchConfig:
    run_dir: str = "runs/search"
    algorithm: str = "regularized"  # regularized | gp
    space: str = "nlfs"  # nlfs | gp | path to a .toml/.yaml tree space
    dataset: str = "digits"
    backend: str = "auto"
    seed: int = 0
    budget: int = 16  # trainings (candidates that pass every filter)
    max_attempts: int | None = None  # candidates generated in all; default 50 x budget
    population: int = 6
    sample: int = 3
    initial: int = 8
    children: int = 10_000
    gp_population: int = 8
    generations: int = 10_000
    crossover: float = 0.7
    mutation: float = 0.25
    elitism: float = 0.05
    tournament: int = 4
    class_reduction: str = "class_sum"  # how a candidate combines over classes: class_sum | element_mean
    filters: tuple[str, ...] = F.STAGES
    phenotype_tol: float = 0.01
    model: str = "surrogate"
    epochs: int | None = None
    steps: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    data_root: str | None = None
    device: str = "auto"
    workers: int = 1
    threads: int | None = None  # per training (None: the cores shared among the workers); how it runs,
    # like workers: a resumed run takes the new value
    executor: str = "local"  # local | ray
    pack: int = 1  # jobs of one budget trained as one packed network (a GPU feature); how it runs, like workers
    ray_address: str | None = None
    baseline: bool = True  # also train cross-entropy under the same settings (needed for paired)
    progress: bool = True
    train_overrides: dict = field(default_factory=dict)
    # -- multi-fidelity screening and fair comparison (see _rungs and the fidelity study) --
    rungs: list | None = None  # [{"seeds": n, TrainConfig budget fields...}]; None: see resolve()
    eta: int = 3  # a finished rung promotes its top 1/eta
    paired: bool = True  # fitness = accuracy minus CE's with the same seeds at the same rung
    grad_scale: str = "none"  # none | ce (TrainConfig.grad_scale)
    score: str = "best"  # best | final: which validation accuracy a training scores (SCORES)
    augment: str = "none"  # TrainConfig.augment, for the whole search
    seed_losses: tuple[str, ...] = ()  # warm start: catalogue names or expressions
    seed_mutants: int = 3  # small-edit mutants of each seed loss in the first population
    # a warm start itself may lead (be raced and trained in the target): off, the leaders are new losses
    warm_starts_compete: bool = False
    time_limit: float | None = None  # seconds: no new candidate after it (promotions still finish)
    # -- the regime the search is judged by (see _target) --
    target: dict | None = None  # a parse_target spec; None: default_target(dataset), see resolve()
    finalists: int = 2  # leaders raced and trained in the target; 0: no target stage
    race_seeds: int = 6  # paired seeds a leader may reach at the last rung; <= its seeds: no racing
    # known losses (catalogue names or expressions) trained in the target beside CE on its seeds: a
    # leader's lead holds only against the strongest of them (REGIME_BASELINES, the regime's own)
    target_baselines: tuple[str, ...] = ()
    # -- a search scored by the user's own training (nlfs.discover(fitness=f), see _discover) --
    fitness: bool = False  # every score is f(loss, seed, budget): rungs and target give budgets only

    def resolve(self) -> SearchConfig:
        """Fill in the rungs: the dataset's default schedule unless a budget was fixed by hand
        (``epochs``, ``steps`` or ``train_size``), which gives one rung of one seed."""
        from ..data import AUGMENTS
        from ..train import GRAD_SCALES

        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.grad_scale not in GRAD_SCALES:
            raise ValueError(f"grad_scale must be one of {', '.join(GRAD_SCALES)}, got {self.grad_scale!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.fitness and self.score != "best":
            raise ValueError("score picks which of nlfs's validation accuracies a training scores; a fitness "
                             "function returns its own score (leave score at its default)")
        if self.pack < 1:
            raise ValueError(f"pack must be at least 1, got {self.pack}")
        if self.eta < 2:
            raise ValueError(f"eta must be >= 2, got {self.eta}")
        if self.rungs is None:
            fixed = any(v is not None for v in (self.epochs, self.steps, self.train_size))
            self.rungs = [{"seeds": 1}] if fixed else default_rungs(self.dataset)
        self.rungs = [dict(r) for r in self.rungs]
        make_rungs(self.rungs)
        for i, rung in enumerate(self.rungs):
            if self.fitness and ("budget" not in rung or set(rung) - {"budget", "seeds"}):
                raise ValueError(f"rung {i}: a fitness function's rungs take budget (a fraction of a full "
                                 f"training) and seeds, got {rung}")
            if not self.fitness and "budget" in rung:
                raise ValueError(f"rung {i}: budget is for a search scored by a fitness function")
        self.target = self.target_regime().to_spec()
        if self.fitness != ("budget" in self.target):
            raise ValueError(f"target {self.target}: a fitness function's target is budget=1 (its full training)"
                             if self.fitness else "target: budget is for a search scored by a fitness function")
        if self.finalists < 0 or self.race_seeds < 0:
            raise ValueError(f"finalists and race_seeds must be >= 0, got {self.finalists} and {self.race_seeds}")
        self.seed_losses = tuple(self.seed_losses)
        self.target_baselines = tuple(self.target_baselines)
        self.target_baseline_specs()
        return self

    def target_baseline_specs(self) -> list:
        """``target_baselines`` as LossSpecs (a ValueError naming the one that is not a loss); CE is
        every run's paired baseline, never one of them."""
        from .. import losses

        out, seen = [], {}
        if self.target_baselines and not self.has_target_stage:
            why = ("the taylor algorithm trains at one budget" if self.algorithm == "taylor" else
                   "finalists is 0" if not self.finalists else "the run is unpaired")
            raise ValueError(f"target_baselines (--target-baselines) train in the target stage beside the leaders, "
                             f"which this run has none of: {why}")
        for text in self.target_baselines:
            where = f"target baseline {text!r} (target_baselines, --target-baselines)"
            try:  # a catalogue loss keeps its own class reduction; an expression takes the run's
                spec = losses.resolve_spec(text, None if losses.is_registered(text) else self.class_reduction)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            missing = sorted(set(spec.expr.constants) - set(spec.constants))
            if missing:
                raise ValueError(f"{where}: named constants {missing} have no values")
            same = str(spec.expr.substitute(dict(spec.constants)).canonical())
            if same == str(losses.get("CE").expr.canonical()):
                raise ValueError(f"{where}: CE is every run's paired baseline, trained in the target anyway")
            if same in seen:
                raise ValueError(f"{where}: the same loss as {seen[same]!r}, given already")
            seen[same] = text
            out.append(spec)
        return out

    def target_regime(self) -> Target:
        if self.target is not None:
            return make_target(self.target)
        return make_target({"budget": 1.0, "seeds": 2} if self.fitness else default_target(self.dataset))

    def target_train_config(self):
        """The run's TrainConfig trained in its target (``Target.apply``)."""
        return self.target_regime().apply(self.train_config())

    @property
    def racing(self) -> bool:
        return self.finalists > 0 and self.race_seeds > self.rung_list()[-1].seeds

    @property
    def known_losses(self) -> tuple[str, ...]:
        """The warm starts that, as given, are known losses and no find (``known_twin``'s ``seed_losses``):
        every seed loss, or none when ``warm_starts_compete``; catalogue losses are known either way."""
        return () if self.warm_starts_compete else tuple(self.seed_losses)

    @property
    def is_paired(self) -> bool:
        return self.paired and self.baseline

    @property
    def has_target_stage(self) -> bool:
        """Whether the run trains its leaders in the target (paired with CE): finalists, a paired run,
        and not the taylor algorithm (which trains at one budget)."""
        return bool(self.finalists) and self.is_paired and self.algorithm != "taylor"

    def base_length(self) -> dict | None:
        """The length a rung without its own epochs or steps trains (``_rungs.base_length``; None for a
        fitness function's run, whose rungs are budgets)."""
        from ._rungs import base_length

        return None if self.fitness else base_length(self.dataset, self.epochs, self.steps)

    def rung_list(self):
        return make_rungs(self.rungs or [{"seeds": 1}])

    def seeds(self, rung) -> list[int]:
        return [self.seed + i for i in range(rung.seeds)]

    def train_config(self, rung=None):
        from ..train import TrainConfig

        budget = dict(epochs=self.epochs, steps=self.steps, train_size=self.train_size, val_size=self.val_size)
        extra = dict(self.train_overrides)
        if rung is not None:
            budget.update({k: v for k, v in rung.train.items() if k in budget})
            extra.update({k: v for k, v in rung.train.items() if k not in budget})
        extra.setdefault("augment", self.augment)
        extra.setdefault("grad_scale", self.grad_scale)
        return TrainConfig(dataset=self.dataset, model=self.model, seed=self.seed, device=self.device,
                           backend=self.backend, data_root=self.data_root, evaluate_test=False,
                           progress=False, **budget, **extra)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        d["seed_losses"] = list(self.seed_losses)
        d["target_baselines"] = list(self.target_baselines)
        from ..losses import registered_entries

        registered = registered_entries((*self.seed_losses, *self.target_baselines))
        if registered:  # only when there are: other runs' configurations stay as they were
            d["registered_losses"] = registered
        return d

    @classmethod
    def from_dict(cls, saved: dict, strict: bool = True, **overrides) -> SearchConfig:
        """A saved configuration (``run.db``'s meta); keys of older versions missing take defaults.
        Keys this version does not know are refused when ``strict`` (resuming a search whose settings
        would be half understood is wrong) and ignored otherwise (reading a run's training settings)."""
        known = {f.name for f in dataclasses.fields(cls)}
        saved = {k: v for k, v in saved.items() if k != "registered_losses"}  # read_config registers them
        if "reduction" in saved:  # the class reduction's name before the rename
            saved = {k: v for k, v in saved.items() if k != "reduction"} | {"class_reduction": saved["reduction"]}
        unknown = set(saved) - known
        if unknown and strict:
            raise ValueError(f"the saved configuration has keys this nlfs does not know: {sorted(unknown)}")
        d = {k: v for k, v in {**saved, **overrides}.items() if k in known}
        d["filters"] = tuple(d.get("filters", F.STAGES))
        d["seed_losses"] = tuple(d.get("seed_losses", ()))
        d["target_baselines"] = tuple(d.get("target_baselines", ()))
        return cls(**d)


def regime_target_baselines(value, cfg: SearchConfig) -> tuple[str, ...]:
    """``target_baselines`` as given (losses, ``"regime"`` or ``"none"``) for the run ``cfg``: ``"regime"``
    is its target's strongest known losses, by the label noise the target trains with (its own, else the
    run's); a fitness function's regime is not nlfs's to guess, so its caller names them."""
    from ._target import REGIME_BASELINES, regime_baselines

    if isinstance(value, str) and value.strip().lower() in ("none", ""):
        return ()
    if isinstance(value, str) and value.strip().lower() == "regime":
        if cfg.fitness:
            raise ValueError("target_baselines 'regime': a fitness function's regime (its label noise) is its own; "
                             f"name the losses, e.g. {REGIME_BASELINES['clean']}, or under label noise "
                             f"{REGIME_BASELINES['noisy']}")
        return regime_baselines(cfg.target_train_config().label_noise)
    if isinstance(value, str):
        raise ValueError(f"target_baselines must be a list of losses, 'regime' or 'none', got {value!r}")
    return tuple(value)


def warm_genotypes(cfg: SearchConfig, space) -> list:
    """The seed losses as genotypes of ``space`` (tree spaces only): catalogue names or expressions,
    named constants replaced by their values (a tree genotype holds numbers, and may hold C, so label
    smoothing starts as itself). A warm start keeps every op it holds, listed by the space or not (CE's
    negation is in no tree space): the space's ops are what variation adds, not a bound on the loss."""
    if not cfg.seed_losses:
        return []
    if not hasattr(space, "fits"):
        raise ValueError(f"warm starts (--seed-losses) need a tree space such as gp; the {space.name!r} "
                         "space's cells cannot hold an arbitrary loss")
    from .. import losses

    out = []
    for text in cfg.seed_losses:
        try:  # an unknown name: "unknown loss 'NGLL'; did you mean NGL?"; a malformed one: the token
            spec = losses.resolve_spec(text)
        except ValueError as err:
            raise ValueError(f"seed loss {text!r} (seed_losses, --seed-losses): {err}") from None
        expr = spec.expr.substitute(dict(spec.constants))
        if expr.constants:
            raise ValueError(f"seed loss {text!r}: named constants {list(expr.constants)} have no values; "
                             "write numbers instead")
        if not expr.uses("y", "p") or expr.leaves - {"y", "p", "C"}:  # C: the classes, which every backend knows
            raise ValueError(f"seed loss {text!r} must be an expression over y and p (and C, the number of "
                             "classes) only")
        out.append(expr)
    return out


def check_search(cfg: SearchConfig) -> None:
    """Stop before any work when the search cannot run here: its settings, space, seed losses,
    and whether CE trains under every rung's configuration (backend, dataset, model, device)."""
    from ..spaces import get_space
    from ..train import ConfigError, check_config

    try:
        cfg.resolve()
        space = get_space(cfg.space)
        warm_genotypes(cfg, space)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    if cfg.fitness:
        return  # nlfs trains nothing of its own: the fitness function is checked by CE's first score
    for rung in cfg.rung_list():
        check_config(cfg.train_config(rung), "CE")
    if cfg.has_target_stage:
        try:
            check_config(cfg.target_train_config(), "CE")
        except ConfigError as err:
            raise ConfigError(f"target {cfg.target}: {err}") from None


def make_algorithm(cfg: SearchConfig, space):
    warm = warm_genotypes(cfg, space)
    if cfg.algorithm == "regularized":
        return ALGORITHMS["regularized"](space, cfg.seed, population=cfg.population, sample=cfg.sample,
                                         initial=cfg.initial, children=cfg.children, warm=warm,
                                         warm_mutants=cfg.seed_mutants)
    if cfg.algorithm == "gp":
        return ALGORITHMS["gp"](space, cfg.seed, population=cfg.gp_population, generations=cfg.generations,
                                crossover=cfg.crossover, mutation=cfg.mutation, elitism=cfg.elitism,
                                tournament=cfg.tournament, warm=warm, warm_mutants=cfg.seed_mutants)
    raise ValueError(f"unknown algorithm {cfg.algorithm!r}; choose regularized or gp "
                     "(taylor runs through nlfs.search._taylor.TaylorSearch)")
