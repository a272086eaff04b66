"""``python -m nlfs.tune``: tune a loss's named constants on the surrogate with Optuna.

Ask-and-tell in batches (each trial one surrogate training, fitness = best validation accuracy with
the test split untouched), CMA-ES by default (GP, TPE or random on request; a single constant uses
the GP sampler, or TPE without SciPy, because CMA-ES needs two dimensions or more). The current
values are enqueued as the first trial, so the result is never worse than where it started. The
study lives in the run directory (an Optuna journal file, or any RDB URL) so ``optuna-dashboard``
can show it and a killed tuning resumes where it stopped: finished trials are never trained again,
trials that were in flight when it died are evaluated again with the same values.

    python -m nlfs.tune --loss NGL --constants alpha=0 --trials 12 --run-dir runs/tune-ngl
    python -m nlfs.tune --run-dir runs/my-search --top 3       # tune the finalists of a search run

To watch a study (live, or after the fact): ``optuna-dashboard runs/tune-ngl/tune.journal`` (installed
with nlfs; it serves http://127.0.0.1:8080, ``--host 0.0.0.0 --port N`` to change that). The file is
the study's journal, so the dashboard reads it while the tuning writes it; a TaylorGLO search's study
is ``DIR/taylor.journal``; an RDB ``--storage`` URL is passed to the dashboard as it is.

Numbers inside a found expression are lifted into named constants ``c0, c1, ...``
(:func:`lift_constants`) so they can be tuned; ``--top K`` takes the K best candidates of the run
(one with no number or constant is reported as "nothing to tune" and counted), prints the training
every trial uses, and compares each with CE trained the same way (difference in percentage points).
The tuned losses are exported to ``DIR/tuned_losses.py`` as ``<run>#<id>-tuned``, with their constants
and the gradient scale their best trial trained at (``nlfs.eliminate --tuned`` and ``nlfs.transfer
--from DIR`` read ``DIR/tuned.json``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._cli import (
    BUDGET_OPTIONS,
    ArgumentParser,
    add_known_loss_options,
    add_training_options,
    command_line,
    key_values,
    positive_float,
    positive_int,
    resume_with,
    run_main,
    training_overrides,
)
from .expr import Expr
from .search import (
    CE_EXPRESSION,
    OPTUNA_SAMPLERS,
    SCORES,
    TUNED,
    SearchConfig,
    finished_trials,
    fitness_of,
    make_sampler,
    make_search_space,
    make_storage,
    quiet_optuna,
    resume_stale_trials,
    run_jobs,
    trained_scale,
)
from .train import training_key

JOURNAL = "tune.journal"


# ---------------------------------------------------------------------------------------------------
# Lifting numeric literals into named constants.

def lift_constants(expr: Expr, prefix: str = "c", min_abs: float = 1e-6,
                   skip: tuple[float, ...] = ()) -> tuple[Expr, dict[str, float]]:
    """Replace the numeric literals of ``expr`` by named constants ``c0, c1, ...``.

    Returns ``(new_expr, {name: value})``. Equal numbers are one node (expressions are hash-consed),
    so a number that occurs several times becomes one constant. Numbers with ``|v| < min_abs``
    (the ``1e-7`` guards against division by zero or log 0) and those listed in ``skip`` stay
    literals; so do numbers equal to zero. Names already used by the expression are avoided.
    """
    taken = set(expr.constants)
    values: dict[str, float] = {}
    by_value: dict[str, str] = {}
    counter = iter(range(10**6))

    def fresh() -> str:
        while True:
            name = f"{prefix}{next(counter)}"
            if name not in taken:
                taken.add(name)
                return name

    def fn(node, args):
        if node.op != "num":
            return None
        v = float(node.value)
        if abs(v) < min_abs or v in skip:
            return None
        key = v.hex()
        if key not in by_value:
            by_value[key] = fresh()
            values[by_value[key]] = v
        return Expr.const(by_value[key])

    return expr.map_nodes(fn), values


@dataclass
class TuneResult:
    best_constants: dict
    best_fitness: float
    initial_fitness: float | None
    trials: list = field(default_factory=list)  # [{number, constants, fitness, status, reason, wall_time}]
    study_name: str = ""
    sampler: str = ""
    storage: str = ""
    # the factor on the loss its best trial trained with: the loss's own scale times the factor the
    # trainer measured (TrainConfig.grad_scale="ce"); a tuned loss is exported with it
    best_scale: float = 1.0

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


def _spec_of(loss, constants):
    from .losses import resolve_spec

    spec = resolve_spec(loss)
    values = spec.values(constants)
    if not values:
        raise ValueError(f"{spec.name}: {spec.expr} has no named constants to tune "
                         f"(use lift_constants to turn its numbers into constants)")
    return spec, {k: values[k] for k in spec.expr.constants}


def default_study_name(spec, constants: dict, train_cfg, score: str = "best") -> str:
    what = [str(spec.expr), spec.class_reduction, sorted(constants.items()), train_cfg.to_dict()]
    key = training_key(what if score == "best" else [*what, score], length=10)  # best: the names studies had
    return f"tune-{spec.name[:40]}-{key}".replace(" ", "_")


def tune(loss, constants: dict | None = None, n_trials: int = 12, batch: int = 4, sampler: str = "cmaes",
         search_space: dict | None = None, train_config=None, storage_dir: str | Path | None = None,
         storage: str | None = None, study_name: str | None = None, seed: int = 0,
         scale: float | None = None, workers: int = 1, executor=None, log=None,
         threads: int | None = None, score: str = "best") -> TuneResult:
    """Tune the named constants of ``loss`` (a catalogue name, expression, Expr or LossSpec).

    ``constants`` overrides the starting values (default: the catalogue's); ``search_space`` maps a
    constant to its ``(low, high)`` range (default ``value ± max(2|value|, 2)``, or ``± scale``).
    ``n_trials`` counts every trial of the study, those of earlier (killed) sessions included: calling
    again with the same study resumes it. ``batch`` trials are asked before any is told (and run in
    parallel with ``workers > 1``, or on a given ``executor`` from ``nlfs.search``), each training
    with ``threads`` threads (default: the cores shared among the workers). ``score``: which validation
    accuracy a trial scores (``nlfs.search.SCORES``: the best over its evaluations, or the final model's).
    """
    import dataclasses

    import optuna

    from .search import make_executor, training_payload
    from .train import TrainConfig, check_config

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    for name, value in (("n_trials", n_trials), ("batch", batch), ("workers", workers)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    quiet_optuna()
    spec, start = _spec_of(loss, constants)
    cfg = train_config or TrainConfig()
    check_config(cfg, spec, start)  # before any trial: a bad setting stops here, not in every trial

    cfg = dataclasses.replace(cfg, evaluate_test=False, progress=False)
    space = make_search_space(start, search_space, scale)
    smp, used = make_sampler(sampler, len(space), seed, x0=start if sampler == "cmaes" else None,
                             log=lambda msg: log(f"nlfs.tune: {msg}"))
    name = study_name or default_study_name(spec, start, cfg, score)
    store = make_storage(storage_dir, storage)
    study = optuna.create_study(study_name=name, storage=store, sampler=smp, direction="maximize",
                                load_if_exists=True)
    if not study.trials:
        study.set_user_attr("loss", spec.name)
        study.set_user_attr("expression", str(spec.expr))
        study.set_user_attr("initial_constants", start)
        study.set_user_attr("sampler", used)
        study.enqueue_trial(start, user_attrs={"initial": True})
    else:
        # a resumed session: a fresh random stream, so startup samples do not repeat the first session's
        # (CMA-ES keeps its own state in the study and carries on from it)
        study.sampler, used = make_sampler(sampler, len(space), seed + len(study.trials),
                                           x0=start if sampler == "cmaes" else None)
        again = resume_stale_trials(study)
        if again:
            log(f"nlfs.tune: resuming {name}: {again} interrupted trial(s) will be evaluated again")
    train_dict = cfg.to_dict()
    own = executor is None
    executor = executor or make_executor("local", workers, threads=threads)
    errors = 0
    batch_left: list = []  # trials of this batch not yet submitted
    outstanding = 0  # trials of this batch submitted, not yet told

    def next_trial():
        """A trial of the current batch; a new batch is asked only once the last is all told."""
        nonlocal outstanding
        if not batch_left and not outstanding:
            todo = n_trials - len(finished_trials(study))
            batch_left.extend(study.ask(space) for _ in range(max(0, min(batch, todo))))
        if not batch_left:
            return None
        trial = batch_left.pop(0)
        outstanding += 1
        return trial, training_payload(str(spec.expr), trial.params, spec.class_reduction, train_dict, score=score,
                                       name=spec.name, scale=spec.scale)

    try:
        for trial, out in run_jobs(executor, next_trial):  # each result is told as soon as it is in
            outstanding -= 1
            value = fitness_of(out)
            trial.set_user_attr("status", out.get("status"))
            trial.set_user_attr("reason", (out.get("reason") or "")[:500])
            trial.set_user_attr("wall_time", out.get("wall_time"))
            trial.set_user_attr("scale", trained_scale(out, spec.scale) or spec.scale)
            study.tell(trial, value)
            errors = errors + 1 if out.get("status") == "error" else 0
            if errors >= max(3, batch):  # a data/config problem, not a bad constant: stop
                raise RuntimeError(f"nlfs.tune: {errors} evaluations in a row failed; last: "
                                   f"{out.get('reason')}")
            why = ("" if out.get("status") == "ok"
                   else f" ({out.get('status')}: {out.get('reason', '')[:80]})")
            log(f"nlfs.tune: trial {trial.number} {_fmt(trial.params)} -> {value:.4f}{why}")
    finally:
        if own:
            executor.close()
    return result_of(study, start, used, store, spec.scale)


def result_of(study, start: dict, used: str = "", store=None, scale: float = 1.0) -> TuneResult:
    trials = finished_trials(study)
    rows = [{"number": t.number, "constants": dict(t.params), "fitness": t.value,
             "status": t.user_attrs.get("status"), "reason": t.user_attrs.get("reason", ""),
             "wall_time": t.user_attrs.get("wall_time"), "initial": bool(t.user_attrs.get("initial")),
             "scale": t.user_attrs.get("scale", scale)}
            for t in trials]
    initial = next((r["fitness"] for r in rows if r["initial"]), None)
    best_s = scale
    if rows:
        # ties go to the earliest trial (so the initial value wins when nothing beats it)
        best = max(rows, key=lambda r: (r["fitness"], -r["number"]))
        best_c, best_f, best_s = best["constants"], best["fitness"], best["scale"]
    else:
        best_c, best_f = dict(start), float("nan")
    return TuneResult(best_c, best_f, initial, rows, study.study_name, used, _storage_text(store), best_s)


def _storage_text(store) -> str:
    if store is None:
        return "memory"
    if isinstance(store, str):
        return store
    backend = getattr(store, "_backend", None)
    return str(getattr(backend, "_file_path", "journal"))


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())


# ---------------------------------------------------------------------------------------------------
# Finalists of a search run.

def tune_run(run_dir: str | Path, top_k: int = 3, n_trials: int = 12, batch: int = 4, sampler: str = "cmaes",
             train_config=None, seed: int = 0, scale: float | None = None, workers: int = 1,
             storage: str | None = None, log=None, novel: bool = False,
             threads: int | None = None, score: str | None = None, include_known: bool = False) -> list[dict]:
    """Tune the best ``top_k`` (unique) candidates of the search run in ``run_dir`` (``nlfs.search.
    best_candidates``): named constants are tuned as they are, numbers in an expression are lifted into
    constants; a candidate with neither is reported as "nothing to tune" and still counts among the
    ``top_k``; a catalogue loss in disguise (at its published constants) is skipped and does not count,
    as ``nlfs.eliminate`` leaves it out (``include_known`` keeps it; ``novel`` skips the run's warm
    starts as given too). Each is compared with CE trained with the same training
    (accuracy and the difference in percentage points), scored as the run scored (``score``: the run's
    ``SearchConfig.score`` unless given).
    Writes ``tuned.json``, ``tuned.md`` and ``tuned_losses.py`` (each tuned loss registered as
    ``<run>#<id>-tuned`` with the constants and gradient scale its best trial trained with)."""
    from ._io import atomic_write
    from .expr import parse
    from .losses import LossSpec, loss_label, stored_class_reduction
    from .search import best_candidates, evaluate_payload, export_losses, known_twin, read_run, training_regime
    from .train import check_config

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    run_dir = Path(run_dir)
    rows, saved = read_run(run_dir)
    class_reduction = stored_class_reduction(saved)
    run_config = SearchConfig.from_dict(saved, strict=False)
    if train_config is None:
        train_config = run_config.train_config()
    score = score or run_config.score
    check_config(train_config, "CE")
    import dataclasses

    train_config = dataclasses.replace(train_config, evaluate_test=False, progress=False)
    finalists = best_candidates(rows, len(rows))
    if not finalists:
        raise ValueError(f"{run_dir} has no trained candidate with status ok")
    trained_on = training_regime(train_config, score=score)
    log(f"nlfs.tune: tuning the best {top_k} candidates of {run_dir}; every trial trains on {trained_on}")
    ce_acc = _ce_reference(run_dir, train_config, evaluate_payload, score)
    log(f"nlfs.tune: CE with the same training: {_f(ce_acc)}")
    out = []
    for r in finalists:
        if len(out) == top_k:
            break
        twin = None if include_known else known_twin(r, train_config.grad_scale == "ce",
                                                     run_config.known_losses if novel else ())
        if twin:
            log(f"nlfs.tune: #{r['id']} {r['expression']} is {twin} in disguise; skipped (not counted)")
            continue
        name = loss_label(run_dir.name, r["id"])
        expr = parse(r["expression"])
        if expr.constants:  # named constants (a TaylorGLO or tuned row): tune those
            lifted, values = expr, {k: float((r.get("constants") or {})[k]) for k in expr.constants}
        else:  # a found expression: its numbers become constants
            lifted, values = lift_constants(expr)
        row_scale = float(r.get("scale") or 1.0)
        entry = {"id": r["id"], "name": name, "search_expression": r["expression"], "expression": str(lifted),
                 "class_reduction": class_reduction, "search_fitness": r["fitness"], "initial_constants": values,
                 "search_scale": row_scale, "trained_on": trained_on, "ce_accuracy": ce_acc}
        if not values:
            log(f"nlfs.tune: {name} {r['expression']} has no number or constant: nothing to tune")
            out.append({**entry, "nothing_to_tune": True, "initial_fitness": None, "best_constants": None,
                        "best_fitness": None, "vs_ce_pp": None, "scale": row_scale, "trials": 0, "study": None,
                        "sampler": None})
            continue
        # a fixed scale only where the trainer does not measure one itself (grad_scale="ce" measures it)
        spec = LossSpec(f"{name}-tuned", lifted, class_reduction,
                        scale=row_scale if train_config.grad_scale == "none" else 1.0)
        log(f"nlfs.tune: {name} {lifted} (search fitness {r['fitness']:.4f}), constants {_fmt(values)}")
        res = tune(spec, values, n_trials=n_trials, batch=batch, sampler=sampler, train_config=train_config,
                   storage_dir=run_dir, storage=storage,
                   study_name=f"tune-run{r['id']}" + ("" if score == "best" else f"-{score}"), seed=seed,
                   scale=scale, workers=workers, log=log, threads=threads, score=score)
        vs_ce = None if ce_acc is None else (res.best_fitness - ce_acc) * 100
        out.append({**entry, "nothing_to_tune": False, "tuned_name": f"{name}-tuned",
                    "initial_fitness": res.initial_fitness, "best_constants": res.best_constants,
                    "best_fitness": res.best_fitness, "vs_ce_pp": vs_ce, "scale": res.best_scale,
                    "trials": len(res.trials), "study": res.study_name, "sampler": res.sampler})
    atomic_write(run_dir / TUNED, json.dumps(out, indent=2))
    md = ["# Tuned finalists", "", f"Regime: {trained_on}. CE with the same training: {_f(ce_acc)}; "
          "Δ vs CE: the tuned accuracy minus CE's, in percentage points (one seed: no interval)."
          + _selection_note([o["trials"] for o in out if not o["nothing_to_tune"]]), "",
          "| name | initial | tuned | Δ vs CE, pp | scale | constants | expression |",
          "|---|---|---|---|---|---|---|"]
    for o in out:
        if o["nothing_to_tune"]:
            md.append(f"| {o['name']} | - | nothing to tune | - | {o['scale']:.4g} | - | `{o['expression']}` |")
        else:
            d = "-" if o["vs_ce_pp"] is None else f"{o['vs_ce_pp']:+.2f}"
            md.append(f"| {o['tuned_name']} | {_f(o['initial_fitness'])} | {_f(o['best_fitness'])} | {d} | "
                      f"{o['scale']:.4g} | {_fmt(o['best_constants'])} | `{o['expression']}` |")
    atomic_write(run_dir / "tuned.md", "\n".join(md) + "\n")
    pseudo = [{"id": o["id"], "name": o["tuned_name"], "expression": o["expression"],
               "constants": o["best_constants"], "fitness": o["best_fitness"], "status": "ok",
               "size": parse(o["expression"]).size, "dataset": train_config.dataset, "scale": o["scale"],
               "class_reduction": class_reduction} for o in out if not o["nothing_to_tune"]]
    export_losses(pseudo, run_dir / "tuned_losses.py", run_dir, k=len(pseudo), class_reduction=class_reduction,
                  what=f"Tuned losses of the nlfs run {run_dir}")
    return out


def _ce_reference(run_dir: Path, train_config, evaluate, score: str = "best") -> float | None:
    """CE's accuracy under the tuning's training, scored by ``score`` (one training, kept in
    ``DIR/tune_ce.json`` so a resumed tuning does not train it again)."""
    from ._io import atomic_write
    from .search import training_payload

    path, train = run_dir / "tune_ce.json", train_config.to_dict()
    try:
        saved = json.loads(path.read_text())
        if (saved.get("train") == json.loads(json.dumps(train, default=str))
                and saved.get("score", "best") == score):
            return saved.get("accuracy")
    except (OSError, ValueError):
        pass
    out = evaluate(training_payload(CE_EXPRESSION, {}, "class_sum", train, score=score, name="CE"))
    acc = out.get("fitness") if out.get("status") == "ok" else None
    atomic_write(path, json.dumps({"train": train, "score": score, "accuracy": acc}, indent=2, default=str))
    return acc


def _selection_note(trials: list[int]) -> str:
    """Why a tuned accuracy overstates the loss: it is the maximum over its trials on one seed."""
    if not trials:
        return ""
    n = f"{trials[0]} trials" if len(set(trials)) == 1 else f"its trials ({min(trials)} to {max(trials)} a loss)"
    return (f" The tuned accuracy is the best of {n} on that one seed: biased upward by the selection, and "
            "so is its Δ; confirm it on other seeds with nlfs.eliminate --tuned.")


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


# ---------------------------------------------------------------------------------------------------
# CLI

def _low_high(text: str) -> tuple[float, float]:
    """``LOW:HIGH`` -> (low, high): a ``--range`` value."""
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(text)
    return float(low), float(high)


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m nlfs.tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", default=None, help="catalogue name or expression to tune")
    ap.add_argument("--constants", action="extend", type=key_values(float),
                    help="starting values, NAME=VALUE[,NAME=VALUE] (default: the catalogue's)")
    ap.add_argument("--range", action="extend", dest="ranges", type=key_values(_low_high, "NAME=LOW:HIGH"),
                    help="search range per constant, NAME=LOW:HIGH (default: value ± max(2|value|, 2))")
    ap.add_argument("--scale", type=positive_float, default=None,
                    help="default range half-width (default: max(2|value|, 2))")
    ap.add_argument("--run-dir", default=None, help="where the study lives (and, with --top, the search run) "
                    "(default: runs/tune-<date-time>)")
    ap.add_argument("--top", type=positive_int, default=None,
                    help="tune the best K candidates of the search run in --run-dir (one with nothing to tune "
                         "is reported and counted)")
    add_known_loss_options(ap, "with --top: ")
    ap.add_argument("--storage", default=None, help="an Optuna RDB URL instead of DIR/tune.journal")
    ap.add_argument("--study", default=None, help="study name (default: derived from the loss and settings)")
    ap.add_argument("--trials", type=positive_int, default=12, help="trials per study, earlier sessions' included")
    ap.add_argument("--batch", type=positive_int, default=4, help="trials asked before any is told")
    ap.add_argument("--sampler", default="cmaes", choices=OPTUNA_SAMPLERS)
    ap.add_argument("--seed", type=int, default=0, help="sampler seed")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--score", default=None, choices=SCORES,
                    help="which validation accuracy a trial scores: best over its evaluations, or the final "
                         "model's (default: the search run's with --top, else best)")
    add_training_options(ap, BUDGET_OPTIONS,
                         unset="the search run's with --top, else nlfs.train's")
    ap.add_argument("--workers", type=positive_int, default=1)
    add_training_options(ap, ("threads",), unset="the cores shared among the workers; torch's with one worker")
    return ap


def _train_config(args, base=None):
    import dataclasses

    from .train import TrainConfig

    cfg = base or TrainConfig(dataset=args.dataset or "digits", seed=args.train_seed)
    return dataclasses.replace(cfg, evaluate_test=False, progress=False, **training_overrides(args, BUDGET_OPTIONS))


def main(argv=None) -> int:
    return run_main("nlfs.tune", _main, argv)


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top is not None and not args.run_dir:
        parser.error("--top needs --run-dir (the search run)")
    if args.top is None and not args.loss:
        parser.error("give --loss NAME (or --run-dir DIR --top K)")
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    if args.top is not None:
        base = None
        if training_overrides(args, BUDGET_OPTIONS):
            from .search import read_run

            _, saved = read_run(args.run_dir)
            base = _train_config(args, SearchConfig.from_dict(saved, strict=False).train_config())
        with resume_with(command_line("nlfs.tune", argv)):
            tune_run(args.run_dir, args.top, n_trials=args.trials, batch=args.batch, sampler=args.sampler,
                     train_config=base, seed=args.seed, scale=args.scale, workers=args.workers,
                     storage=args.storage, novel=args.novel_only, threads=args.threads, score=args.score,
                     include_known=args.include_known)
        print(Path(args.run_dir, "tuned.md").read_text(), end="")
        print(f"reports: {args.run_dir}/tuned.md, tuned.json, tuned_losses.py; study: "
              f"{args.storage or Path(args.run_dir, JOURNAL)} ({time.time() - t0:.0f} s)")
        return 0
    consts = dict(args.constants or [])
    ranges = dict(args.ranges or [])
    run_dir = args.run_dir or f"runs/tune-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.run_dir:
        argv += ["--run-dir", run_dir]
    with resume_with(command_line("nlfs.tune", argv)):
        res = tune(args.loss, consts, n_trials=args.trials, batch=args.batch, sampler=args.sampler,
                   search_space=ranges or None, train_config=_train_config(args), storage_dir=run_dir,
                   storage=args.storage, study_name=args.study, seed=args.seed, scale=args.scale,
                   workers=args.workers, threads=args.threads, score=args.score or "best")
    print(f"loss {args.loss}: initial {_f(res.initial_fitness)} -> best {_f(res.best_fitness)} with "
          f"{_fmt(res.best_constants)} ({len(res.trials)} trials, sampler {res.sampler}, "
          f"{time.time() - t0:.0f} s)")
    from .search import evaluate_payload

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    ce = _ce_reference(Path(run_dir), _train_config(args), evaluate_payload)
    vs = "-" if ce is None or res.best_fitness is None else f"{(res.best_fitness - ce) * 100:+.2f} pp"
    print(f"CE with the same training: {_f(ce)}; best vs CE: {vs} (one seed: no interval)."
          + _selection_note([len(res.trials)]))
    print(f"study {res.study_name} in {res.storage} (optuna-dashboard {res.storage})")
    Path(run_dir, f"{res.study_name}.json").write_text(json.dumps(res.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
