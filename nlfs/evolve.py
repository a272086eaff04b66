"""``python -m nlfs.evolve``: search for a classification loss that beats cross-entropy.

With no arguments: a short genetic-programming search over the gp tree space, warm-started from
cross-entropy and the strongest known losses of the target's regime (label smoothing and Poly-1 on
clean labels), on the default CPU dataset (Fashion-MNIST when installed, else
scikit-learn digits): it screens candidates for 1 minute on every core, lets the best climb the
rungs, races its leader to a confidence interval, trains it in the target regime (the whole training
split at CE's plateau: the training a user runs), and prints what it found beside cross-entropy with
the same seeds, saying where each lead was measured and whether it held in the target. ``--resume DIR``
continues a killed run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._cli import (
    ArgumentParser,
    add_pack_option,
    add_training_options,
    checked_losses,
    non_negative_int,
    positive_float,
    positive_int,
    refuse_on_resume,
    resume_with,
    run_main,
    training_overrides,
)
from .search import (
    DEFAULT_TARGETS,
    HOW_IT_RUNS,
    PRESETS,
    REGIME_BASELINES,
    SCORES,
    data_words,
    default_space,
    default_target,
    default_workers,
    format_summary,
    open_search,
    parse_rungs,
    parse_target,
    preset_config,
    regime_warm_starts,
    resume_config,
    run_and_report,
    write_report,
)


def seed_losses(text: str | None) -> tuple[str, ...] | None:
    """``--seed-losses``' text as loss names or expressions; not given: None (``default_seed_losses``)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    return tuple(checked_losses(text, "--seed-losses"))  # the search checks them too, without the option's name


def target_baselines(text: str | None):
    """``--target-baselines``' text: None (the preset's), ``"regime"``, ``"none"``, or loss names or
    expressions (each checked here, so the message names the option)."""
    if text is None or text.strip().lower() in ("regime", "none"):
        return None if text is None else text.strip().lower()
    return tuple(checked_losses(text, "--target-baselines"))


# what a resumed run may change: how it runs and how long; the run's saved configuration decides the rest
_OPTION_OF = {"ray_address": "address", "progress": "no_progress"}  # a config field's option, where named otherwise
# ... and add known losses to train in the target beside its leaders (they change no ranking)
RESUME_OPTIONS = ("budget", "time_limit", "target_baselines", *(_OPTION_OF.get(k, k) for k in HOW_IT_RUNS))


def target_spec(text: str) -> dict:
    """``--target``'s type: a checked target spec, or one line naming the problem."""
    import argparse

    try:
        return parse_target(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--target: ")) from None


def _targets_help() -> str:
    def spec(name):
        return ",".join(f"{k}={v}" for k, v in default_target(name).items() if k != "seeds")

    return "; ".join(f"{name}: {spec(name)}" for name in DEFAULT_TARGETS) + "; elsewhere: train_size=all"


def build_parser() -> ArgumentParser:
    quick, paper = PRESETS["quick"], PRESETS["paper"]
    ap = ArgumentParser(prog="python -m nlfs.evolve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--algorithm", default="gp", choices=["regularized", "gp", "taylor"],
                    help="regularized evolution | genetic programming | taylor (CMA-ES over the 8 TaylorGLO "
                         "parameters)")
    ap.add_argument("--space", default=None, help="nlfs | gp | a .toml/.yaml tree-space file "
                    "(default: nlfs for regularized, gp for gp, taylor for taylor)")
    ap.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                    help="quick: a few minutes on a CPU; paper: the papers' population sizes and budgets")
    ap.add_argument("--budget", type=positive_int, default=None,
                    help=f"candidates to train at rung 0 (default: the preset's, {quick['budget']} for quick, "
                         f"{paper['budget']} for paper)")
    ap.add_argument("--time-limit", type=positive_float, default=None, metavar="MIN",
                    help="screen no new candidate after this many minutes; those already screened finish "
                         "their rungs, and --resume goes on (default: "
                         f"{quick['time_limit'] / 60:g} with the quick preset when --budget is omitted, else "
                         "none; a resumed run keeps its own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", default=None, help="where run.db and reports go (default: runs/<date-time>)")
    ap.add_argument("--resume", metavar="DIR", default=None,
                    help="continue the run in DIR with its saved configuration (only --budget, --time-limit, "
                         "--workers, --threads, --executor, --address, --no-progress, --pack may be given)")
    ap.add_argument("--report-only", metavar="DIR", default=None,
                    help="rewrite the reports of the run in DIR from its run.db and print its summary; trains nothing")
    ap.add_argument("--population", type=positive_int, default=None, help="(default: the preset's)")
    ap.add_argument("--sample", type=positive_int, default=None, help="tournament size of regularized "
                    "evolution (default: the preset's)")
    ap.add_argument("--initial", type=positive_int, default=None,
                    help="random candidates seeding the population (default: the preset's)")
    add_training_options(ap, ("dataset", "data_root", "resize", "model", "epochs", "steps", "train_size", "val_size",
                              "device", "backend", "augment", "grad_scale", "label_noise", "label_noise_kind",
                              "threads"),
                         defaults=dict(model="surrogate", device="auto", backend="auto", augment="none",
                                       grad_scale="ce"),
                         unset={"dataset": "fashion-mnist if installed, else digits",
                                "epochs": "the rungs'", "steps": "the rungs'", "train_size": "the rungs'",
                                "val_size": "the rungs'",
                                "threads": "the cores shared among the workers; torch's with one worker"},
                         helps={"augment": "training augmentation for every candidate and baseline "
                                           "(mixup/cutmix: soft targets)",
                                "grad_scale": "ce: rescale every candidate to cross-entropy's mean |dL/dlogits| "
                                              "on its first batch (the factor is recorded and exported); none: "
                                              "train losses as written",
                                "label_noise": "fraction of training labels corrupted in every screening training "
                                               "(validation stays clean); the target keeps it unless its spec "
                                               "names its own (default: none)"})
    ap.add_argument("--workers", type=positive_int, default=None,
                    help="local worker processes (default: one per core on a CPU, up to 8; one on a GPU)")
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    add_pack_option(ap)
    ap.add_argument("--no-filters", action="store_true", help="train every candidate (no cheap filters)")
    ap.add_argument("--seed-losses", default=None, metavar="A,B,...",
                    help="warm start: catalogue names or expressions (separated by ';' or by commas outside "
                         "parentheses) put, with small edits of each, into the first population (default in "
                         "tree spaces: CE and the strongest known losses of the target's regime, "
                         f"{','.join(regime_warm_starts(None))} on clean labels, "
                         f"{','.join(regime_warm_starts(0.4))} under label noise; 'none' for random starts; the "
                         "nlfs space starts at random); an expression that starts with '-' takes the = form: "
                         "--seed-losses='-y*log(p)'")
    ap.add_argument("--seed-mutants", type=non_negative_int, default=3, help="small edits of each seed loss")
    ap.add_argument("--warm-starts-compete", action="store_true",
                    help="let a seed loss that is not a catalogue loss be a leader as given (raced and trained "
                         "in the target), to check your own candidates there; by default the leaders are new "
                         "losses, and a seed loss as given stays a baseline; a catalogue loss (CE among them) "
                         "never leads")
    ap.add_argument("--rungs", default=None, metavar="SPEC",
                    help="screening rungs, e.g. 'train_size=2048,epochs=1;epochs=2,seeds=3' (default: the "
                         "dataset's, from the fidelity study; one rung when --epochs/--steps/--train-size "
                         "is given); stop_epoch=K trains a rung's schedule only through epoch K; "
                         "resize=S (or HxW) trains it on images resized to that side")
    ap.add_argument("--eta", type=positive_int, default=3, help="each rung promotes its top 1/eta")
    ap.add_argument("--target", type=target_spec, default=None, metavar="SPEC",
                    help="the training a user will run, in which the leaders are checked at the end: the "
                         "keys of --rungs plus label_noise, label_noise_kind and augment, train_size=all for the whole "
                         "split, "
                         "e.g. 'train_size=all,epochs=8,seeds=2' (default: the whole split at CE's plateau, "
                         f"{_targets_help()}; seeds: the preset's, {quick['target_seeds']} for quick, "
                         f"{paper['target_seeds']} for paper)")
    ap.add_argument("--target-baselines", default=None, metavar="A,B,...|regime|none",
                    help="known losses (catalogue names or expressions) trained in the target beside CE on the "
                         "same seeds: a leader's lead holds only against the strongest of them; 'regime': the "
                         "target regime's strongest known losses (clean labels: "
                         f"{','.join(REGIME_BASELINES['clean'])}; label noise: {','.join(REGIME_BASELINES['noisy'])})"
                         "; default: the preset's, none for quick (its one target seed shows a sign only), "
                         "regime for paper); with --resume, they join a run's own and train in its target")
    ap.add_argument("--finalists", type=non_negative_int, default=None, metavar="N",
                    help="leaders raced at the last rung and trained in the target (0: neither; default: "
                         f"the preset's, {quick['finalists']} for quick, {paper['finalists']} for paper)")
    ap.add_argument("--race-seeds", type=non_negative_int, default=None, metavar="N",
                    help="racing: a leader gets 2 more paired seeds at the last rung at a time until the 95%% "
                         "interval of its difference to CE excludes 0 or it has N seeds (N at most the last "
                         f"rung's seeds: no racing; default: the preset's, {quick['race_seeds']} for quick, "
                         f"{paper['race_seeds']} for paper)")
    ap.add_argument("--score", default="best", choices=SCORES,
                    help="which validation accuracy a training scores, at every rung and in the target: best, "
                         "over its evaluations (what early stopping on the validation split keeps), or final, the "
                         "last model's (what you ship without early stopping; under label noise a loss can peak "
                         "early, then fit the noise) (default: best)")
    ap.add_argument("--unpaired", action="store_true",
                    help="fitness is plain accuracy, not the paired difference to CE with the same seeds")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def config_from_args(args):
    """The SearchConfig of a new run from the parsed arguments (``preset_config``)."""
    space = args.space or default_space(args.algorithm)
    return preset_config(
        args.preset, algorithm=args.algorithm, space=space, dataset=args.dataset, run_dir=args.run_dir,
        budget=args.budget, time_limit=None if args.time_limit is None else 60 * args.time_limit,
        population=args.population, sample=args.sample, initial=args.initial, finalists=args.finalists,
        target=args.target, seed_losses=seed_losses(args.seed_losses), no_filters=args.no_filters,
        backend=args.backend, seed=args.seed, model=args.model, epochs=args.epochs, steps=args.steps,
        train_size=args.train_size, val_size=args.val_size, data_root=args.data_root, device=args.device,
        workers=args.workers, threads=args.threads, executor=args.executor, ray_address=args.address,
        pack=args.pack, progress=not args.no_progress, augment=args.augment, grad_scale=args.grad_scale, eta=args.eta,
        paired=not args.unpaired, score=args.score, rungs=parse_rungs(args.rungs) if args.rungs else None,
        seed_mutants=3 if args.seed_mutants is None else args.seed_mutants, race_seeds=args.race_seeds,
        warm_starts_compete=args.warm_starts_compete, target_baselines=target_baselines(args.target_baselines),
        train_overrides=training_overrides(args, ("label_noise", "label_noise_kind", "resize")))


def main(argv=None) -> int:
    return run_main("nlfs.evolve", _main, argv)


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report_only:
        refuse_on_resume(parser, (), "report_only")
        return report_only(args.report_only)
    if args.resume:
        refuse_on_resume(parser, RESUME_OPTIONS)
    if args.workers is None:
        args.workers = default_workers(args.device)
    if args.resume:
        search = open_search(resume_config(args.resume, args.budget, None if args.time_limit is None else
                                           60 * args.time_limit, args.workers, args.threads, args.executor,
                                           args.address, not args.no_progress, args.pack,
                                           target_baselines(args.target_baselines)), resume=True)
    else:
        search = open_search(config_from_args(args), popsize=args.population)
    cfg = search.cfg
    resume = f"python -m nlfs.evolve --resume {cfg.run_dir}"
    unit, model = data_words(cfg.dataset, cfg.model, cfg.data_root)  # the report's words for the data and model
    print(f"nlfs.evolve: {cfg.algorithm} over the {cfg.space} space on {cfg.dataset} "
          f"({model}, backend {cfg.backend}, augment {cfg.augment}, gradient scale {cfg.grad_scale}), "
          f"budget {cfg.budget} candidates at rung 0, {cfg.workers} worker(s), run dir {cfg.run_dir}"
          + (" (resumed)" if args.resume else ""), file=sys.stderr)
    for rung in getattr(search, "rungs", ()):
        print(f"  {rung.describe(cfg.base_length())}", file=sys.stderr)
    if getattr(search, "rungs", ()) and cfg.has_target_stage:
        race = (f"raced to a 95% interval or {cfg.race_seeds} seeds, then " if cfg.racing else "")
        target = search.target.describe(unit, cfg.dataset, cfg.train_config())
        beside = f", beside {', '.join(cfg.target_baselines)} on the same seeds" if cfg.target_baselines else ""
        print(f"  then the {cfg.finalists} leader(s): {race}trained in the {target}, "
              f"{search.target.seeds} seed(s), paired with CE{beside}", file=sys.stderr)
    with resume_with(resume):
        summary, stopped = run_and_report(search)
    if stopped:
        print(f"nlfs.evolve: time limit of {cfg.time_limit / 60:g} min reached after {search.trainings} "
              f"candidates; resume with: {resume}", file=sys.stderr)
    print(format_summary(summary, cfg.dataset))
    print(f"reports in {cfg.run_dir}: hall_of_fame.md, summary.json, fitness.png, loss_shapes.png, "
          "best_losses.py (registers them), best_losses_standalone.py (plain PyTorch), best_losses.tex; run.db")
    return 0


def report_only(run_dir: str) -> int:
    """Rewrite a run's reports from its run.db (after an nlfs upgrade, or of a run killed before it
    wrote them) and print its summary."""
    from .search import read_run

    rows, config = read_run(run_dir)
    print(format_summary(write_report(Path(run_dir), rows), config.get("dataset", "?")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
