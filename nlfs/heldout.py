"""``python -m nlfs.heldout``: the held-out table of a discovery campaign, recomputed from the
transfer CSVs of each setting.

Every (finalist, baseline, setting) pair is compared over the seeds where both finished: the paired
mean difference in test accuracy with its 95% t-interval, the effect size d_z with an approximate
interval, the paired t-test and the Wilcoxon signed-rank test, and both p-values Holm-corrected
across *all* the pairs of the table (the family is every claim the table could make). A finalist
"beats" a baseline in a setting only when the difference is positive and the Holm-corrected t-test
p-value is below ``alpha``.

    python -m nlfs.heldout --setting arch=runs/h/arch/transfer.csv --setting noise=runs/h/noise/transfer.csv \\
        --finalists found_a,found_b --out bench/results/discovery_heldout   # baselines: CE and the regimes' strongest

Writes ``OUT.csv`` (one row per pair) and ``OUT.md``. ``table(...)`` is the same computation for
code (a test recomputes a committed report from its CSVs with it).
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from . import stats as _stats
from ._cli import ArgumentParser, fraction, run_main, split_losses
from ._io import write_table

COLUMNS = ["setting", "finalist", "baseline", "n", "finalist_mean", "baseline_mean", "mean_diff", "ci_low",
           "ci_high", "d_z", "d_z_low", "d_z_high", "wins", "losses", "p_t", "p_w", "p_t_holm", "p_w_holm",
           "beats"]


def read_accuracies(path: str | Path) -> dict[str, dict[int, float]]:
    """{loss label: {seed: test accuracy}} over the rows with status ok of a transfer CSV."""
    out: dict[str, dict[int, float]] = {}
    with Path(path).open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["status"] == "ok" and r.get("test_acc") not in (None, ""):
                out.setdefault(r["loss"], {})[int(r["seed"])] = float(r["test_acc"])
    return out


def read_regime(path: str | Path) -> str:
    """The training regime of a transfer CSV in one line (data and size, model, budget, label noise,
    augmentation, gradient scale, and the split seeds where the CSV records them), from its first row;
    older CSVs without a column say "?"."""
    from .search import data_words

    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    r = rows[0] if rows else {}

    def get(k):
        return r.get(k) if r.get(k) not in (None, "") else "?"

    kind = f" ({r['label_noise_kind']})" if r.get("label_noise_kind") else ""
    steps = r.get("steps") if r.get("steps") not in (None, "", "None") else None
    try:  # a training's epochs and steps as run (TrainResult's): the epochs, with the steps they took
        epochs = f"{float(r['epochs']):g} epochs"
    except (KeyError, TypeError, ValueError):
        epochs = None
    budget = (f"{epochs} ({steps} steps)" if epochs and steps
              else epochs or (f"{steps} steps" if steps else "? epochs"))
    unit = data_words(get("dataset"), get("model"))[0]
    return (f"{get('dataset')} ({r.get('train_size') or 'all'} {unit}), model {get('model')}, {budget}, "
            f"label noise {get('label_noise')}{kind}, augmentation {get('augment')}, "
            f"gradient scale {get('grad_scale')}{_split_words(rows)}")


def _split_words(rows: list[dict]) -> str:
    """How a transfer CSV's seeds were split: each by itself (``--split-seed per-seed``), or one split
    seed for all; nothing for CSVs written before the column."""
    splits = {(r["seed"], r["split_seed"]) for r in rows if r.get("split_seed") not in (None, "")}
    values = {v for _, v in splits}
    if len(values) > 1 and all(seed == v for seed, v in splits):
        return ", each seed its own validation split, training subset and label noise (split_seed = seed)"
    if values:
        return f", split seed {', '.join(sorted(values, key=int))} for every seed"
    return ""


def finalists_from(run_dir: str | Path, k: int = 3) -> tuple[list[str], dict[str, dict]]:
    """The names of the losses a run directory hands on (``nlfs.search.run_losses``: the elimination's
    survivors in ``finalists.json``, else the search's ``k`` best, tuned where tuned), and
    ``{name: family}`` for those that are a catalogue loss at other constants than its published ones
    (``known_family``, as the elimination recorded it or fitted now)."""
    from .search import family_record, run_losses

    entries = run_losses(run_dir, k)[0]
    families = {}
    for e in entries:
        prov = e.get("provenance") or {}
        if "known_family" in prov:
            fam = prov["known_family"]
        else:
            fam = family_record(e["expression"], e.get("constants"), e.get("class_reduction") or "class_sum")
        if fam:
            families[e["name"]] = fam
    return [e["name"] for e in entries], families


def default_baselines() -> list[str]:
    """CE and the strongest known losses of every regime (``nlfs.search.REGIME_BASELINES``)."""
    from .search import REGIME_BASELINES

    return ["CE", *dict.fromkeys(name for names in REGIME_BASELINES.values() for name in names)]


def missing_labels(settings: dict[str, dict[str, dict[int, float]]], labels: list[str]) -> list[str]:
    """The labels no setting's CSV has a finished run of (a typo, or a loss never transferred)."""
    return [lab for lab in labels if not any(lab in acc for acc in settings.values())]


def table(settings: dict[str, dict[str, dict[int, float]]], finalists: list[str], baselines: list[str],
          alpha: float = 0.05) -> list[dict]:
    """All (finalist, baseline, setting) comparisons with Holm-corrected p-values."""
    rows = []
    for setting, acc in settings.items():
        for f in finalists:
            for b in baselines:
                if f not in acc or b not in acc:
                    continue
                t = _stats.paired_by_key(acc[f], acc[b])
                keys = sorted(set(acc[f]) & set(acc[b]))
                rows.append(dict(setting=setting, finalist=f, baseline=b, n=t.n,
                                 finalist_mean=_stats.mean([acc[f][k] for k in keys]),
                                 baseline_mean=_stats.mean([acc[b][k] for k in keys]), mean_diff=t.mean_diff,
                                 ci_low=t.ci_low, ci_high=t.ci_high, d_z=t.d_z, d_z_low=t.d_z_low,
                                 d_z_high=t.d_z_high, wins=t.wins, losses=t.losses, p_t=t.p_t, p_w=t.p_w))
    for key in ("p_t", "p_w"):
        for r, adj in zip(rows, _stats.holm([r[key] for r in rows])):
            r[key + "_holm"] = adj
    for r in rows:
        r["beats"] = bool(r["mean_diff"] > 0 and math.isfinite(r["p_t_holm"]) and r["p_t_holm"] < alpha)
    return rows


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """The table's rows as ``path`` (``COLUMNS``; floats to 6 significant digits), written atomically."""
    write_table(path, rows, COLUMNS, cell=_cell)


def _cell(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def markdown(rows: list[dict], alpha: float = 0.05, regimes: dict[str, str] | None = None,
             families: dict[str, dict] | None = None, absent: dict[str, list[str]] | None = None) -> str:
    """The table; ``families``: ``{finalist: known family}`` of finalists that are a catalogue loss at other
    constants, each named under it (a win of one is that loss re-tuned, not a new loss); ``absent``:
    ``{setting: baselines}`` of a setting's regime that its CSV does not hold, each named under it (a
    win there is not one against the field)."""
    from .search import family_text

    pp = 100.0
    lines = [f"{len(rows)} comparisons; p-values Holm-corrected across all of them; a finalist beats a "
             f"baseline when the difference is positive and the corrected t-test p < {alpha}.", ""]
    if regimes:
        lines += [f"- {name}: {text}" for name, text in regimes.items()] + [""]
    lines += [
             "| setting | finalist | baseline | n | finalist % | baseline % | Δ pp [95% CI] | d_z [95% CI] | "
             "better/worse | p (t) | p (t, Holm) | p (Wilcoxon, Holm) | beats |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['finalist']} | {r['baseline']} | {r['n']} | {r['finalist_mean'] * pp:.2f} | "
            f"{r['baseline_mean'] * pp:.2f} | {r['mean_diff'] * pp:+.2f} [{r['ci_low'] * pp:+.2f}, "
            f"{r['ci_high'] * pp:+.2f}] | {r['d_z']:+.2f} [{r['d_z_low']:+.2f}, {r['d_z_high']:+.2f}] | "
            f"{r['wins']}/{r['losses']} | {_stats.format_p(r['p_t'])} | {_stats.format_p(r['p_t_holm'])} | "
            f"{_stats.format_p(r['p_w_holm'])} | {'**yes**' if r['beats'] else 'no'} |")
    wins = [r for r in rows if r["beats"]]
    lines += ["", ("Significant after correction: " + "; ".join(
        f"{r['finalist']} > {r['baseline']} ({r['setting']})" for r in wins)) if wins else
        "No finalist beats a baseline in any setting after the Holm correction."]
    lines += [f"{name} is {family_text(fam)}: a catalogue loss at other constants than its published ones, so a "
              "win of it is that known loss re-tuned, not a new loss." for name, fam in (families or {}).items()
              if any(r["finalist"] == name for r in rows)]
    lines += [f"Setting {name}: its regime's strongest known losses {', '.join(missing)} are not in its CSV, so no "
              "win there is one against the field (transfer --baselines regime trains them)."
              for name, missing in (absent or {}).items() if missing]
    return "\n".join(lines) + "\n"


def regime_absent(path: str | Path, accuracies: dict[str, dict[int, float]]) -> list[str]:
    """The strongest known losses of a transfer CSV's regime (by its label noise) it holds no finished run
    of; none named where the CSV does not record its label noise (its regime unknown, as ``read_regime``
    says "?")."""
    from .search import regime_baselines

    with Path(path).open(newline="") as fh:
        first = next(csv.DictReader(fh), {})
    try:
        noise = float(first["label_noise"])
    except (KeyError, TypeError, ValueError):
        return []
    return [name for name in regime_baselines(noise) if name not in accuracies]


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m nlfs.heldout", description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=CSV", required=True,
                    help="a setting's name and its transfer CSV; repeatable")
    ap.add_argument("--finalists", default=None, help="comma-separated loss labels of the transfer CSVs")
    ap.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                    help="the finalists a run directory hands on (DIR/finalists.json from nlfs.eliminate, "
                         "else the search's best): instead of --finalists")
    ap.add_argument("--baselines", default=",".join(default_baselines()),
                    help="comma-separated loss labels (default: CE and every regime's strongest known losses, "
                         "those the CSVs hold: transfer --from trains the regime's beside the finalists)")
    ap.add_argument("--alpha", type=fraction, default=0.05, help="significance level after the Holm correction")
    ap.add_argument("--out", required=True, help="path without suffix for OUT.csv and OUT.md")
    return ap


def main(argv=None) -> int:
    return run_main("nlfs.heldout", _main, argv)


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = {}
    for item in args.setting:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"--setting wants NAME=CSV of an existing file, got {item!r}")
        settings[name] = read_accuracies(path)
    if bool(args.finalists) == bool(args.from_dir):
        parser.error("give --finalists LABEL,... or --from DIR (one of them)")
    finalists, families = (split_losses(args.finalists), {}) if args.finalists else finalists_from(args.from_dir)
    baselines = split_losses(args.baselines)
    present = sorted({label for acc in settings.values() for label in acc})
    # the default baselines need not all be there (one must); a label given by hand must be
    checked = [("--finalists" if args.finalists else f"--from {args.from_dir}", finalists)]
    checked += [("--baselines", baselines)] if "baselines" in parser.given else []
    for option, labels in checked:
        missing = missing_labels(settings, labels)
        if missing:
            parser.error(f"{option}: no finished run of {', '.join(missing)} in the CSVs; labels there: "
                         f"{', '.join(present) or 'none'}")
    if len(missing_labels(settings, baselines)) == len(baselines):
        parser.error(f"--baselines: no finished run of any of {', '.join(baselines)} in the CSVs; labels there: "
                     f"{', '.join(present) or 'none'}")
    rows = table(settings, finalists, baselines, args.alpha)
    regimes = {name: read_regime(item.partition("=")[2]) for name, item in zip(settings, args.setting)}
    write_csv(f"{args.out}.csv", rows)
    paths = {name: item.partition("=")[2] for name, item in zip(settings, args.setting)}
    absent = {name: regime_absent(paths[name], acc) for name, acc in settings.items()}
    text = markdown(rows, args.alpha, regimes, families, absent)
    Path(f"{args.out}.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
