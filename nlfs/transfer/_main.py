"""``python -m nlfs.transfer``: its options, presets and baselines turned into a ``run_transfer`` call."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .._cli import (
    PER_SEED,
    TRAINING_OPTIONS,
    ArgumentParser,
    add_pack_option,
    add_split_seed_option,
    add_training_options,
    checked_losses,
    command_line,
    non_negative_int,
    parse_seeds,
    positive_float,
    positive_int,
    resume_with,
    run_main,
    seeds_list,
    training_overrides,
)
from ._entries import LossEntry, losses_from, losses_from_run, parse_losses
from ._grid import MAX_ADDED
from ._presets import PRESETS
from ._run import build_config, run_transfer


def _preset(name: str) -> str:
    if name not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {name!r}; see --list-presets")
    return name


def _grid(text: str) -> list[float]:
    values = [positive_float(x) for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected learning rates A,B,..., got {text!r}")
    return values


_DEFAULTS = dict(dataset="digits", model="surrogate", augment="none", seeds=5)


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m nlfs.transfer", description="Transfer evaluation: train every (loss, seed) "
                        "pair under one configuration and compare each loss with cross-entropy over the same seeds.")
    ap.add_argument("--preset", type=_preset, help="named settings (see --list-presets); explicit options "
                    "override them")
    ap.add_argument("--list-presets", action="store_true")
    ap.add_argument("--losses", action="append", default=[],
                    help="catalogue names / expressions, separated by ';' or top-level commas ('all' = the "
                         "catalogue); repeatable (default: the preset's, else CE)")
    ap.add_argument("--loss", action="append", default=[], help="one loss (name or expression); repeatable")
    ap.add_argument("--losses-file", action="append", default=[], metavar="JSON",
                    help="register the losses in this file (the format of nlfs/found_losses.json: name, "
                         "expression, constants, scale) so --losses can name them; repeatable")
    ap.add_argument("--from-run", action="append", default=[], help="a search run directory (DIR/run.db)")
    ap.add_argument("--from", action="append", default=[], dest="from_dir", metavar="DIR",
                    help="what a run directory hands on: the survivors of nlfs.eliminate (DIR/finalists.json) "
                         "when it has them, else the search's --top best (tuned constants from DIR/tuned.json)")
    ap.add_argument("--top", type=positive_int, default=3, help="how many best candidates per --from-run")
    ap.add_argument("--baselines", default=None, metavar="A,B,...|regime|none",
                    help="published losses trained beside the others, the strongest of which every other loss is "
                         "compared with: 'regime' for the strongest known losses of the training's regime ("
                         + "; ".join(f"{k} labels: {','.join(v)}" for k, v in _regime_table().items())
                         + "), 'none', or names/expressions (default: regime with --from/--from-run, "
                         "else none)")
    ap.add_argument("--seeds", type=seeds_list, default=None,
                    help=f"N (seeds 0..N-1) or a list '0,1,5-7' (default: the preset's, else {_DEFAULTS['seeds']})")
    ap.add_argument("--out", required=False, help="output directory")
    ap.add_argument("--name", default="transfer", help="file stem of the CSV/MD/PNG in --out")
    add_training_options(ap, [n for n in TRAINING_OPTIONS if n != "split_seed"],
                         unset={"dataset": f"the preset's, else {_DEFAULTS['dataset']}",
                                    "model": f"the preset's, else {_DEFAULTS['model']}",
                                    "augment": f"the preset's, else {_DEFAULTS['augment']}",
                                    **{k: "the preset's, else nlfs.train's" for k in TRAINING_OPTIONS
                                       if k not in ("dataset", "model", "augment", "threads")},
                                    "threads": "the preset's; with several workers one core's share each"})
    add_split_seed_option(ap, "0")
    ap.add_argument("--workers", type=positive_int, default=1,
                    help="trainings at once, each in its own process (with --threads 1: up to one per core)")
    add_pack_option(ap, "losses of one seed (and learning rate)")
    ap.add_argument("--retry-errors", action="store_true", help="retrain pairs whose trainer raised")
    ap.add_argument("--lr-grid", type=_grid, default=None, metavar="A,B,...",
                    help="give every loss (CE included) its learning rate from this grid, chosen by the final "
                         "model's validation accuracy (the test split is read only by the final runs)")
    ap.add_argument("--lr-widen", type=non_negative_int, default=MAX_ADDED, metavar="N",
                    help="points a grid may grow by, one past an edge whenever the choice lands there, so "
                         "that no loss's rate (or tuned constant) is an edge of its grid (0: the grid as given)")
    ap.add_argument("--lr-by", choices=("final", "peak"), default="final",
                    help="choose by the final model's validation accuracy, the model the test runs test "
                         "(default), or by the best epoch's (peak: how learning rates were chosen before)")
    ap.add_argument("--tune-baselines", action="store_true",
                    help="with --lr-grid: tune each baseline's constant (label smoothing's a, Poly-1's epsilon, "
                         "Focal's gamma, GCE's q) like the learning rate, each value with its own rate, so that "
                         "a found loss (whose constants were searched) meets baselines tuned as far")
    ap.add_argument("--lr-seeds", type=seeds_list, default=None,
                    help="seeds for the learning-rate choice and --tune-baselines (default: the first 2)")
    ap.add_argument("--note", default="", help="a paragraph placed at the top of the Markdown")
    ap.add_argument("--no-plot", action="store_true")
    return ap


def _regime_table() -> dict:
    from ..search import REGIME_BASELINES

    return REGIME_BASELINES


def baselines_of(text: str | None, verifying: bool, label_noise: float) -> list[str]:
    """``--baselines`` as loss texts: ``regime`` (the default when ``verifying`` losses from a run) the
    strongest known losses of a training with ``label_noise``; ``none`` (else the default) none."""
    from ..search import regime_baselines

    choice = ("regime" if verifying else "none") if text is None else text.strip()
    if choice.lower() in ("none", ""):
        return []
    if choice.lower() == "regime":
        return list(regime_baselines(label_noise))
    return checked_losses(choice, "--baselines")


def _list_presets() -> str:
    lines = []
    for name, p in PRESETS.items():
        budget = f"{p.get('epochs')} ep" + (f", train_size {p['train_size']}" if p.get("train_size") else "")
        lines.append(f"{name:<32} {p['model']:<18} {p['dataset']:<14} {p['augment']:<12} {budget}; "
                     f"{p.get('seeds')} seeds; losses {','.join(p['losses'])}\n{'':<32} {p.get('note', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_main("nlfs.transfer", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        print(_list_presets())
        return 0
    if not args.out:
        parser.error("--out is required")
    if args.tune_baselines and not args.lr_grid:  # a constant is tuned with its own learning rate
        parser.error("--tune-baselines needs --lr-grid")
    settings: dict = dict(_DEFAULTS)
    if args.preset:
        settings.update(PRESETS[args.preset])
    settings.update(training_overrides(args))
    split_per_seed = settings.get("split_seed") == PER_SEED
    if split_per_seed:
        del settings["split_seed"]
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.workers > 1 and not settings.get("threads"):  # one core's share each, not all cores each
        settings["threads"] = max(1, (os.cpu_count() or 1) // args.workers)
    seeds = settings["seeds"] if isinstance(settings["seeds"], list) else parse_seeds(settings["seeds"])
    from .. import losses as _losses

    from_file = []
    for path in args.losses_file:  # the file given defines its names for this run
        from_file += _losses.register_file(path, overwrite=True)
    entries: list[LossEntry] = []
    if args.losses or args.loss:
        entries += parse_losses(args.losses + args.loss)
    elif from_file:
        entries += parse_losses(from_file)
    elif not args.from_run and not args.from_dir:
        entries += parse_losses(";".join(settings.get("losses", ["CE"])))
    for run in args.from_run:
        entries += losses_from_run(run, args.top)
    for run in args.from_dir:
        entries += losses_from(run, args.top)
    entries += [dataclasses.replace(e, baseline=True) for e in parse_losses(  # named as baselines: never contenders
        baselines_of(args.baselines, bool(args.from_run or args.from_dir), float(settings.get("label_noise") or 0.0)))]
    if settings.get("threads"):
        import torch

        torch.set_num_threads(int(settings["threads"]))
    cfg = build_config(settings)
    argv_ = list(sys.argv[1:] if argv is None else argv)
    resume = command_line("nlfs.transfer", argv_)
    if "--note" in argv_[:-1]:  # the note is printed above the table: do not repeat it here
        argv_[argv_.index("--note") + 1] = "..."
    command = "python -m nlfs.transfer " + " ".join(
        a if a and all(c.isalnum() or c in "-_=./,:" for c in a) else repr(a) for a in argv_)
    setup = (f"Preset `{args.preset}`: {settings.get('note', '')}",) if args.preset else ()
    with resume_with(resume):
        rows = run_transfer(entries, cfg, seeds, args.out, args.name, args.retry_errors, command=command,
                            note=args.note or "", plot=not args.no_plot, setup=setup, lr_grid=args.lr_grid,
                            lr_seeds=args.lr_seeds, workers=args.workers, split_per_seed=split_per_seed,
                            pack=args.pack, lr_widen=args.lr_widen, tune_baselines=args.tune_baselines,
                            lr_by=args.lr_by)
    print((Path(args.out) / f"{args.name}.md").read_text())
    return 0 if rows else 1


