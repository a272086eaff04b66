"""``nlfs.discover``: the search of ``python -m nlfs.evolve`` from Python, on a user's own data, model
or training loop, and what both share: a preset's configuration (:func:`preset_config`), opening a
new or resumed run (:func:`open_search`), the default dataset and seed losses.

Three ways to say what a candidate loss is scored on:

* ``data`` (a path or ``module:function`` as ``--dataset`` takes, arrays ``(x, y)``, a dict with
  ``x_train``/``y_train``/..., a torch ``Dataset``): nlfs trains ``model`` on it. Data held in memory is
  written once to ``run_dir/data.pt`` (``nlfs.data.save_dataset``); every payload names that path, so a
  worker process loads it once (``nlfs.data.load_dataset`` caches it per process) and a resumed run,
  from Python or ``python -m nlfs.evolve --resume``, reads the same data.
* ``fitness=f``: the user's own training, ``f(loss, seed, budget) -> float`` (higher is better; an
  accuracy in 0..1 makes the report's percentage points read as such). ``loss`` is an ``nlfs.Loss``,
  a drop-in for ``nn.CrossEntropyLoss``; ``budget`` is the rung's fraction of a full training (1.0 in
  the target). With ``workers=1`` (the default) ``f`` runs in this process, as called; with more
  workers it is pickled by value with cloudpickle once per worker process (or ``ray.put`` once for
  Ray), so a function of a notebook or of a script's ``__main__`` works, closures and the data they
  hold included. (A script that starts workers needs ``if __name__ == "__main__":``, as any
  ``multiprocessing`` script.)
* neither: the default dataset, as ``python -m nlfs.evolve``.

Each candidate is paired with cross-entropy on the same seeds and budgets; filters, rungs, racing,
the target stage, ``run.db`` and the reports are those of every search. Calling ``discover`` again
with the same ``run_dir`` resumes the run (its saved configuration decides; only how it runs and its
budget may change, and known losses to train in the target be added).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._config import PRESETS, SearchConfig, regime_target_baselines
from ._filters import family_text
from ._target import regime_warm_starts

# A fitness function's screening rungs, shaped as the datasets' (a short proxy, a longer one, then
# more seeds of it) in fractions of its full training; not measured for any user's task.
FITNESS_RUNGS = ({"budget": 0.25, "seeds": 1}, {"budget": 0.5, "seeds": 1}, {"budget": 0.5, "seeds": 3})
FITNESS_DATASET = "your fitness function"  # what a fitness run's rows and reports name as its data
DATA_FILE = "data.pt"  # a user's in-memory data, saved once in the run directory


def default_dataset() -> str:
    """Fashion-MNIST when it is installed, else scikit-learn's digits."""
    from ..data import DatasetError, load_dataset

    try:
        load_dataset("fashion-mnist")
        return "fashion-mnist"
    except DatasetError:
        return "digits"


def default_space(algorithm: str) -> str:
    return {"gp": "gp", "taylor": "taylor"}.get(algorithm, "nlfs")


def default_seed_losses(cfg: SearchConfig) -> tuple[str, ...]:
    """The warm starts of ``cfg``'s search when none are given: in tree spaces, CE and the strongest known
    losses of the regime its target trains in (a fitness function's regime is unknown: the clean one's);
    the nlfs and taylor spaces start at random."""
    if cfg.space in ("nlfs", "taylor"):
        return ()
    # warm trees beat random ones (bench/results/search_before_after_fashion_mnist.md)
    return regime_warm_starts(None if cfg.fitness else cfg.target_train_config().label_noise)


def preset_config(preset: str = "quick", *, algorithm: str = "gp", space: str | None = None,
                  dataset: str | None = None, run_dir: str | None = None, budget: int | None = None,
                  time_limit: float | None = None, population: int | None = None, sample: int | None = None,
                  initial: int | None = None, finalists: int | None = None, target: dict | None = None,
                  seed_losses=None, no_filters: bool = False, target_baselines=None, **fields) -> SearchConfig:
    """A search's configuration from a preset and what was given (None: the preset's or the default):
    ``time_limit`` in seconds (default: the preset's when ``budget`` is not given), ``seed_losses``
    None for the default warm starts (``default_seed_losses``); ``target_baselines`` a list of losses, ``"regime"``
    for the target regime's strongest known losses (``REGIME_BASELINES``) or ``"none"``, None for the
    preset's choice (a fitness function's regime is unknown: none unless given); ``fields``, any other
    ``SearchConfig`` field."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose {', '.join(sorted(PRESETS))}")
    p = dict(PRESETS[preset])
    space = space or default_space(algorithm)

    def given(value, default):
        return default if value is None else value

    fitness = fields.get("fitness", False)
    cfg = SearchConfig(
        run_dir=run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}", algorithm=algorithm, space=space,
        dataset=dataset or (FITNESS_DATASET if fitness else default_dataset()),
        budget=given(budget, p["budget"]), population=given(population, p["population"]),
        sample=given(sample, p["sample"]), initial=given(initial, max(p["initial"], population or 0)),
        children=p["children"], gp_population=given(population, p["gp_population"]),
        generations=p["generations"], seed_losses=tuple(seed_losses or ()), target=target,
        finalists=given(finalists, p["finalists"]),
        race_seeds=given(fields.pop("race_seeds", None), p["race_seeds"]),
        time_limit=time_limit if time_limit is not None else (None if budget else p.get("time_limit")),
        **fields)
    if cfg.target is None:  # the default target, with the preset's seeds
        default = {"budget": 1.0} if fitness else None
        if default is None:
            from ._target import default_target

            default = default_target(cfg.dataset)
        cfg.target = {**default, "seeds": p["target_seeds"]}
    elif "seeds" not in cfg.target:  # a target without its seeds: the preset's
        cfg.target = {**cfg.target, "seeds": p["target_seeds"]}
    if fitness and cfg.rungs is None:
        cfg.rungs = [dict(r) for r in FITNESS_RUNGS]
    if seed_losses is None:
        cfg.seed_losses = default_seed_losses(cfg)
    if target_baselines is None:  # the preset's: trained only where a target stage will train them
        target_baselines = "regime" if p["regime_baselines"] and cfg.has_target_stage and not fitness else "none"
    cfg.target_baselines = regime_target_baselines(target_baselines, cfg)
    if no_filters:
        cfg.filters = ("validity",)
    if (cfg.algorithm == "taylor" and cfg.dataset == "fashion-mnist" and preset == "quick"
            and cfg.train_size is None):  # TaylorGLO trains at one budget: keep it to minutes on a CPU
        cfg.train_size, cfg.epochs = 4000, cfg.epochs or 3
    return cfg


def open_search(cfg: SearchConfig, resume: bool = False, fitness=None, popsize: int | None = None, log=None):
    """The search of ``cfg`` (a ``Search``, or a ``TaylorSearch`` for the taylor algorithm), new or
    resumed; a resumed run takes its saved configuration, ``cfg`` giving only how it runs
    (``_runner.HOW_IT_RUNS``), its budget and time limit."""
    from ._runner import Search
    from ._taylor import TaylorSearch, is_taylor_run

    taylor = is_taylor_run(cfg.run_dir) if resume else cfg.algorithm == "taylor"
    if taylor:
        if fitness is not None:
            raise ValueError("the taylor algorithm trains at one budget with nlfs's trainer; a fitness "
                             "function needs algorithm 'gp' or 'regularized'")
        if resume:
            return TaylorSearch(cfg, resume=True, log=log)
        return TaylorSearch(cfg, popsize=popsize, log=log)
    return Search(cfg, resume=resume, log=log, fitness=fitness)


def resume_config(run_dir, budget: int | None = None, time_limit: float | None = None, workers: int = 1,
                  threads: int | None = None, executor: str = "local", ray_address: str | None = None,
                  progress: bool = True, pack: int = 1, target_baselines=None) -> SearchConfig:
    """What a resumed run is given: its directory and how it goes on (the rest is the saved run's);
    ``target_baselines`` (losses, ``"regime"``: the saved run's regime's, or None) join the run's own,
    trained in the target beside its leaders when it goes on."""
    from ._db import read_config

    added = ()
    if target_baselines is not None:
        added = regime_target_baselines(target_baselines, SearchConfig.from_dict(read_config(run_dir), strict=False))
    return SearchConfig(run_dir=str(run_dir), budget=budget or 0, workers=workers, threads=threads,
                        executor=executor, ray_address=ray_address, progress=progress, time_limit=time_limit,
                        pack=pack, target_baselines=added)


# ------------------------------------------------------------------------------------------- discover
def discover(data=None, model: str | None = None, target=None, budget: int | None = None, workers: int = 1,
             run_dir: str | Path | None = None, fitness=None, *, preset: str = "quick",
             time_limit: float | None = None, resize=None, progress: bool = True, log=None,
             **options) -> Discovery:
    """Search for a classification loss that beats cross-entropy on your task; returns a
    :class:`Discovery` (the best losses, the report; ``register()``, ``export(path)``).

    ``data``: what ``--dataset`` takes (a path, ``module:function``, a named dataset), arrays or
    tensors ``(x, y)`` (or with test, or val and test parts), a dict with ``x_train``, ``y_train`` and
    optional ``x_val``, ``y_val``, ``x_test``, ``y_test``, ``classes``, or a torch ``Dataset``; data held
    in memory is saved once to ``run_dir/data.pt`` and read from there by every worker. ``model``: a
    model name or ``module:factory`` (called with the input shape and the number of classes; default
    the surrogate CNN, an MLP on feature vectors): a name, because every worker builds its own;
    ``target``: the training you will run, a dict or ``--target``'s text (default: the whole training
    split at the dataset's default length; with ``fitness``, budget 1.0); ``resize``: ``S`` or
    ``(H, W)``, every image resized (images of different sizes need it); ``budget``: candidates
    screened at rung 0 (default: the preset's, with its time limit); ``time_limit``: seconds of
    screening; ``workers``: 1 trains in this process, more in as many worker processes; each training
    uses ``options['threads']`` torch threads (default 1, as each of the CLI's default workers).

    ``fitness``: ``f(loss, seed, budget) -> float``, your own training loop instead of nlfs's (no
    ``data`` then): ``loss`` an ``nlfs.Loss`` (an ``nn.CrossEntropyLoss``-like module), ``budget`` the
    rung's fraction of a full training (1.0 in the target), the score higher-is-better. With
    ``workers=1`` it runs in this process; with more, each worker process gets a copy pickled by value
    with cloudpickle, once. Each candidate is paired with CE, scored by ``f`` on the same seeds and
    budgets. Confirm a lead in your own loop on more seeds (``register()``, then ``nlfs.Loss(name)``):
    ``nlfs.eliminate`` and ``nlfs.transfer`` train with nlfs's trainer, not yours.

    ``options``: any ``SearchConfig`` field (``algorithm``, ``space``, ``rungs``, ``epochs``,
    ``train_size``, ``finalists``, ``race_seeds``, ``seed_losses``, ``augment``, ``grad_scale``,
    ``device``, ``seed``, ``executor``...). A ``run_dir`` that holds a run resumes it: the saved
    configuration decides, and only ``budget``, ``time_limit``, ``workers``, ``options['threads']``,
    ``options['executor']``, ``options['ray_address']``, ``options['pack']`` apply, and
    ``options['target_baselines']`` join the run's own (trained in the target as it goes on); ``data`` and
    ``fitness``, when given again, must be those it started with (other data or another function's code
    is a ValueError, before any training)."""
    from ..data import as_dataset, image_size, save_dataset
    from ._report import data_words, format_summary

    run_dir = Path(run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    resume = (run_dir / "run.db").exists()
    if fitness is not None and not callable(fitness):
        raise TypeError(f"fitness must be a function f(loss, seed, budget) -> float, got {type(fitness).__name__}")
    if fitness is not None and data is not None:
        raise ValueError("give data or fitness, not both: a fitness function trains on its own data")
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a model's name or 'module:factory' (a function in an importable module "
                        f"called as factory(input_shape, num_classes)), got {type(model).__name__}: every worker "
                        "builds its own model; or train it yourself with fitness=f(loss, seed, budget)")
    if resize is not None:
        resize = image_size(resize)
    saved_data = None
    # one thread per training, as the CLI's default workers each get: two on busy cores are many times slower
    options.setdefault("threads", 1)
    unknown = set(options) - set(SearchConfig.__dataclass_fields__) - {"population", "sample", "initial",
                                                                        "no_filters", "seed_losses"}
    if unknown:
        raise TypeError(f"discover() got unknown options {sorted(unknown)}; see nlfs.search.SearchConfig")
    if resume:
        given = {**options, **({"model": model} if model is not None else {}),
                 **({"target": target} if target is not None else {})}
        changed = changed_settings(run_dir, given)
        if changed:  # the saved configuration decides; the same script run again is no change
            raise ValueError(f"{run_dir} holds a run, resumed with its saved configuration: drop "
                             f"{', '.join(changed)} or give the values it was started with (only budget, time_limit, "
                             "workers, threads, executor, ray_address and pack may change, and target_baselines be "
                             "added), or start a new run_dir")
        cfg = resume_config(run_dir, budget, time_limit, workers, options.get("threads"),
                            options.get("executor", "local"), options.get("ray_address"), progress,
                            options.get("pack", 1), options.get("target_baselines"))
    else:
        if fitness is not None:
            options.setdefault("grad_scale", "none")
            if options["grad_scale"] != "none":
                raise ValueError("grad_scale 'ce' rescales a loss on nlfs's first batch; a fitness function's "
                                 "training is its own: use grad_scale='none'")
            dataset = FITNESS_DATASET
        elif data is None or isinstance(data, (str, Path)):
            dataset = None if data is None else str(data)
        else:  # held in memory: once to the run directory, read from there by every worker
            ds = as_dataset(data, resize=resize)
            run_dir.mkdir(parents=True, exist_ok=True)
            saved_data = save_dataset(ds, run_dir / DATA_FILE).resolve()
            dataset = str(saved_data)
        if isinstance(target, str):
            from ._target import parse_target

            target = parse_target(target)
        options.setdefault("grad_scale", "ce")
        cfg = preset_config(preset, dataset=dataset, run_dir=str(run_dir), budget=budget, time_limit=time_limit,
                            target=target, model=model or "surrogate", workers=workers, progress=progress,
                            fitness=fitness is not None, **options)
        if resize is not None and not saved_data:
            cfg.train_overrides = {**cfg.train_overrides, "resize": resize}
    try:
        search = open_search(cfg, resume=resume, fitness=fitness, log=log)
    except BaseException:
        if saved_data is not None and not (run_dir / "run.db").exists():
            saved_data.unlink(missing_ok=True)  # a refused search leaves nothing behind
        raise
    cfg = search.cfg
    if resume and data is not None:
        try:
            check_same_data(cfg, data, resize)
        except BaseException:
            search.close()
            raise
    model = "" if cfg.fitness else f" (model {data_words(cfg.dataset, cfg.model, cfg.data_root)[1]})"
    log(f"nlfs.discover: {cfg.algorithm} over the {cfg.space} space on {cfg.dataset}{model}, budget {cfg.budget} "
        f"candidates at rung 0, {cfg.workers} worker(s), run dir {cfg.run_dir}" + (" (resumed)" if resume else ""))
    summary, stopped = run_and_report(search)
    if stopped:
        log(f"nlfs.discover: time limit of {cfg.time_limit:g} s reached after {search.trainings} candidates; "
            "call discover again with the same run_dir to go on")
    return Discovery(Path(cfg.run_dir), summary, format_summary(summary, cfg.dataset))


def changed_settings(run_dir: Path, options: dict) -> list[str]:
    """The options of a call that resumes the run in ``run_dir`` that differ from its saved configuration
    (``_runner.HOW_IT_RUNS`` may differ)."""
    from ._db import read_config
    from ._runner import HOW_IT_RUNS
    from ._target import make_target, parse_target

    saved = read_config(run_dir)

    def plain(value):  # tuples and lists, as JSON saved them
        return json.loads(json.dumps(value, default=list))

    out = []
    for key, value in sorted(options.items()):
        if key in HOW_IT_RUNS:
            continue
        if key == "no_filters":
            same = bool(value) == (plain(saved.get("filters")) == ["validity"])
        elif key == "target_baselines":  # more may join a resumed run (resume_config): never a change
            continue
        elif key == "target":  # as the run saved it: checked, and with the preset's seeds unless given
            spec = parse_target(value) if isinstance(value, str) else dict(value)
            old = dict(saved.get("target") or {})
            if "seeds" not in spec:
                old.pop("seeds", None)
            same = plain(make_target(spec).to_spec()) == plain(make_target(old).to_spec()) if old else False
        else:
            same = plain(value) == plain(saved.get(key))
        if not same:
            out.append(key)
    return out


def check_same_data(cfg: SearchConfig, data, resize=None) -> None:
    """A resumed run goes on with the data it started with: other data given now stops it (a
    ValueError naming both), rather than being ignored or mixed into one ranking."""
    import torch

    from ..data import as_dataset

    again = "pass the data it started with (or none), or start a new run_dir for this data"
    if isinstance(data, (str, Path)):
        if str(data) != cfg.dataset and Path(data).resolve() != Path(cfg.dataset).resolve():
            raise ValueError(f"the run in {cfg.run_dir} searches {cfg.dataset}, not {data}: {again}")
        return
    if Path(cfg.dataset).name != DATA_FILE:
        raise ValueError(f"the run in {cfg.run_dir} searches {cfg.dataset}, not data held in memory: {again}")
    ds = as_dataset(data, resize=resize)
    saved = torch.load(cfg.dataset, weights_only=True)
    for part, x, y in (("train", ds.train_x, ds.train_y), ("val", ds.val_x, ds.val_y),
                       ("test", ds.test_x, ds.test_y)):
        old_x, old_y = saved.get(f"x_{part}"), saved.get(f"y_{part}")
        same = (x is None) == (old_x is None) and (x is None or (
            x.shape == old_x.shape and torch.equal(x, old_x) and torch.equal(y, old_y)))
        if not same:
            raise ValueError(f"the run in {cfg.run_dir} searches the data saved in {cfg.dataset}; the data given "
                             f"now differs in its {part} part: {again}")


def run_and_report(search) -> tuple[dict, bool]:
    """Run an opened search to its end (or its time limit), close it and write its reports: the summary,
    and whether the time limit stopped it. ``nlfs.discover`` and ``python -m nlfs.evolve`` both end here."""
    from ._report import write_report

    try:
        rows = search.run()
    finally:
        search.close()
    return write_report(Path(search.cfg.run_dir), rows), bool(getattr(search, "time_limit_reached", False))


@dataclass(frozen=True)
class FoundLoss:
    """One of a search's best losses: its formula, where its score was measured (``regime``: a
    screening rung, a proxy; or your fitness function at a budget), its paired difference to CE there
    in percentage points with the 95% interval (None under 2 seeds), and, if it was trained in the
    target, the same there (``held``: whether its lead held; ``known_family``: for a loss trained there,
    the catalogue loss it is at other constants, as 'GCE (q 0.5)', else ''); where the run trained known
    losses in the target (``target_baselines``), ``strongest_baseline``, the strongest of them there that
    trained on all its seeds ('' where none was trained, none finished them all, or CE stood above them
    all: ``in_target`` says which), and the difference to it, ``target_vs_strongest_pp`` with its
    interval ``target_strongest_ci_pp``."""

    name: str
    formula: str
    expression: str
    constants: dict
    scale: float
    regime: str
    vs_ce_pp: float | None
    ci_pp: tuple[float, float] | None
    lead: str
    target_regime: str | None
    target_vs_ce_pp: float | None
    target_ci_pp: tuple[float, float] | None
    in_target: str
    known_family: str = ""
    strongest_baseline: str = ""
    target_vs_strongest_pp: float | None = None
    target_strongest_ci_pp: tuple[float, float] | None = None

    @property
    def held(self) -> bool:
        return self.in_target.startswith("held")


def _pp(value):
    return None if value is None else 100 * value


def _pp_ci(ci):
    return None if not ci else (100 * ci[0], 100 * ci[1])


@dataclass
class Discovery:
    """What :func:`discover` found: ``best`` (the reported new losses: those trained in the target first,
    best there first, then the other raced leaders, then the rest by their screening fitness; a known
    loss in disguise the report shows is left out),
    ``summary`` (the run's summary.json), ``run_dir`` (run.db and the reports); ``report()`` is the
    CLI's summary; ``verdict``, its last line."""

    run_dir: Path
    summary: dict
    text: str

    @property
    def best(self) -> list[FoundLoss]:
        out = []
        for e in self.summary.get("best", []):
            if e.get("known"):  # a known loss in disguise: in the report, not among the finds
                continue
            t = e.get("target") or {}
            versus = t.get("vs_strongest") or {}
            out.append(FoundLoss(e["name"], e.get("formula") or e["expression"], e["expression"],
                                 dict(e.get("constants") or {}), float(e.get("scale") or 1.0), e.get("regime", ""),
                                 _pp(e.get("vs_ce")), _pp_ci(e.get("paired_ci")), e.get("lead", ""),
                                 t.get("regime"), _pp(t.get("paired")), _pp_ci(t.get("paired_ci")),
                                 e.get("in_target", ""), family_text(e.get("known_family")),
                                 versus.get("name") or "", _pp(versus.get("diff")), _pp_ci(versus.get("ci"))))
        return out

    @property
    def verdict(self) -> str:
        return self.summary.get("verdict", "")

    def report(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def entries(self, k: int | None = None) -> list[dict]:
        """The first ``k`` of ``best`` (default: all it shows, even after the run went on) as
        found_losses.json entries: name, expression, constants, class_reduction, scale, provenance."""
        from ..losses import stored_class_reduction

        class_reduction = stored_class_reduction(self._config())
        return [{"name": e["name"], "expression": e["expression"], "constants": dict(e.get("constants") or {}),
                 "class_reduction": class_reduction, "scale": float(e.get("scale") or 1.0),
                 "provenance": {"search_run": str(self.run_dir), "candidate": e["name"], "search_fitness": e["fitness"],
                                "measured_in": e.get("regime", ""), "in_target": e.get("in_target", "")}}
                for e in [e for e in self.summary.get("best", []) if not e.get("known")][:k]]

    def _config(self) -> dict:
        from ._db import read_run

        return read_run(self.run_dir)[1]

    def register(self, k: int | None = None, overwrite: bool = False) -> list[str]:
        """Register the first ``k`` of ``best`` (default: all) in the catalogue under their
        ``<run>#<id>`` names (``nlfs.Loss(name)`` then builds them); returns the names."""
        from ..losses import register

        names = []
        for e in self.entries(k):
            source = "; ".join(f"{key}: {v}" for key, v in (e.get("provenance") or {}).items())
            register(e["name"], e["expression"], e["class_reduction"], e.get("constants") or {},
                     source=source, scale=float(e.get("scale") or 1.0), overwrite=overwrite)
            names.append(e["name"])
        return names

    def export(self, path: str | Path, k: int | None = None) -> Path:
        """Write the first ``k`` of ``best`` (default: all): ``.json`` in found_losses.json's format
        (what ``--losses`` and ``nlfs.losses.register_file`` read); otherwise a Python module that
        registers them and defines an ``nn.Module`` class per loss (the run's best_losses.py)."""
        from .._io import atomic_write

        path = Path(path)
        if path.suffix.lower() == ".json":
            atomic_write(path, json.dumps(self.entries(k), indent=2) + "\n")
        else:
            from ..losses import stored_class_reduction
            from ._db import read_run
            from ._report import export_losses

            rows, config = read_run(self.run_dir)
            shown = {e["id"]: f"{e['regime']}; {e['in_target']}"  # the same losses as entries(k): no known one
                     for e in [e for e in self.summary.get("best", []) if not e.get("known")][:k]}
            by_id = {r["id"]: r for r in rows}
            chosen = [by_id[i] for i in shown]  # what this result shows, in its order, even after the run went on
            export_losses(rows, path, self.run_dir, len(chosen), class_reduction=stored_class_reduction(config),
                          ahead=bool(self.summary.get("ahead_of_ce")), notes=shown, chosen=chosen,
                          proxy_only=bool(self.summary.get("proxy_lead_only")))
        return path
