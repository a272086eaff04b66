"""What a person wants to see after a search: the hall of fame (best per size), a PNG of fitness
over evaluations, the best losses exported as catalogue entries and nn.Module code, as LaTeX and as
standalone PyTorch, their shapes beside cross-entropy, and a summary beside cross-entropy. Formulas
are shown simplified (``nlfs.expr.simplify``) with their constants' values; ``run.db`` keeps the raw
expression."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_write
from ._runner import summary_counts


def trained_ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r.get("fitness") is not None]


def _rung(r: dict) -> int:
    return r.get("rung") or 0


def latest_rows(rows: list[dict]) -> list[dict]:
    """Each candidate's row at the highest rung it reached (fitness-reused rows stand for themselves)."""
    latest: dict[int, dict] = {}
    for r in rows:
        if r["status"] == "baseline":
            continue
        key = r.get("candidate") or r["id"]
        if key not in latest or _rung(r) >= _rung(latest[key]):
            latest[key] = r
    return list(latest.values())


def _rank(r: dict):
    """Higher rungs first (more budget, more seeds), then fitness."""
    return (-_rung(r), -r["fitness"], r["size"], r["id"])


def hall_of_fame(rows: list[dict]) -> list[dict]:
    """The best candidate of each size that beats every smaller one (a Pareto front), candidates
    compared at the highest rung they reached."""
    best_by_size: dict[int, dict] = {}
    for r in trained_ok(latest_rows(rows)):
        cur = best_by_size.get(r["size"])
        if cur is None or _rank(r) < _rank(cur):
            best_by_size[r["size"]] = r
    front, best = [], None
    for size in sorted(best_by_size):
        r = best_by_size[size]
        if best is None or _rank(r) < _rank(best):
            front.append(r)
            best = r
    return front


def top(rows: list[dict], k: int) -> list[dict]:
    """The best ``k`` candidates (highest rung first, then fitness), one per expression and constants."""
    seen, out = set(), []
    for r in sorted(trained_ok(latest_rows(rows)), key=_rank):
        key = (r["expression"], json.dumps(r.get("constants") or {}, sort_keys=True))
        if key in seen:  # one row per expression and constants (TaylorGLO differs only in these)
            continue
        seen.add(key)
        out.append(r)
        if len(out) == k:
            break
    return out


def baseline(rows: list[dict], rung: int | None = None) -> dict | None:
    """The CE baseline row (the first one at ``rung`` when given)."""
    return next((r for r in rows if r["status"] == "baseline" and (rung is None or _rung(r) == rung)), None)


def baseline_accuracy(rows: list[dict], rung: int) -> float | None:
    """CE's mean accuracy over the seeds of ``rung`` (baselines are shared by rungs of equal budget)."""
    fid = next((r.get("fidelity") for r in rows if r["status"] != "baseline" and _rung(r) == rung
                and r.get("fidelity")), None)
    accs = [r["fitness"] for r in rows if r["status"] == "baseline" and r.get("fitness") is not None
            and (fid is None or r.get("fidelity") == fid) and (fid is not None or _rung(r) == rung)]
    return sum(accs) / len(accs) if accs else None


def seed_stats(r: dict) -> dict:
    """Per-seed accuracy and paired difference to CE of a row: means, sample std, seeds."""
    import statistics

    seeds = [s for s in (r.get("result") or {}).get("seeds", []) if not s.get("diverged")]
    paired = [s["paired"] for s in seeds if s.get("paired") is not None]
    return {"seeds": len(seeds), "accuracy": r.get("accuracy", r.get("fitness")),
            "paired": statistics.fmean(paired) if paired else None,
            "paired_sd": statistics.stdev(paired) if len(paired) > 1 else None}


def chance_lead(rows: list[dict], rung: int) -> dict | None:
    """The best fitness at ``rung`` that chance alone would give: ``n`` candidates there, none truly
    different from CE, one seed's paired difference varying by the median of their per-seed sds
    (``nlfs.stats.chance_best_paired``: ``expected_best`` with candidates as noisy as CE, whose shared
    trainings cancel; ``expected_best_independent`` none shared). None without paired seeds."""
    import statistics

    from ..stats import chance_best_paired

    stats = [seed_stats(r) for r in trained_ok(latest_rows(rows)) if _rung(r) == rung]
    sds = [s["paired_sd"] for s in stats if s["paired_sd"] is not None]
    if len(stats) < 2 or not sds:
        return None
    sd, seeds = statistics.median(sds), round(statistics.median(s["seeds"] for s in stats if s["seeds"]))
    low, high = chance_best_paired(len(stats), sd, seeds)
    return {"rung": rung, "candidates": len(stats), "seeds": seeds, "seed_sd": sd,
            "expected_best": low, "expected_best_independent": high}


_TWINS: dict = {}


def catalogue_twin(r: dict, normalise: bool) -> str | None:
    """The catalogue loss a row is in disguise (same canonical form, or the same gradient
    fingerprint on the fixed probe batch, up to a factor when the run rescaled gradients)."""
    import torch

    from .. import losses
    from ..expr import parse
    from ._filters import fingerprint

    if normalise not in _TWINS:
        table = {}
        for name in losses.BUILTIN:
            spec = losses.get(name)
            expr = spec.expr.substitute(dict(spec.constants))
            table[str(expr.canonical())] = name
            try:
                table[fingerprint(expr, spec.reduction, torch.zeros(0, dtype=torch.float64),
                                  normalise=normalise)] = name
            except Exception:  # noqa: BLE001 - a catalogue loss the probe cannot take is just not matched
                pass
        _TWINS[normalise] = table
    table = _TWINS[normalise]
    if r.get("canonical") in table:
        return table[r["canonical"]]
    try:
        expr = parse(r["expression"]).substitute(dict(r.get("constants") or {}))
        return table.get(str(expr.canonical())) or table.get(
            fingerprint(expr, "class_sum", torch.zeros(0, dtype=torch.float64), normalise=normalise))
    except Exception:  # noqa: BLE001
        return None


def row_spec(r: dict, name: str, reduction: str = "class_sum"):
    """The LossSpec a row was trained as (its constants, and its scale where the row records one)."""
    import types

    from ..expr import parse
    from ..losses import LossSpec

    return LossSpec(name, parse(r["expression"]), r.get("reduction") or reduction,
                    types.MappingProxyType(dict(r.get("constants") or {})), f"nlfs run, evaluation #{r['id']}",
                    float(r.get("scale") or 1.0))


def formula(r: dict, reduction: str = "class_sum") -> str:
    """The row's loss, simplified, with its constants' values rounded for display."""
    from .._export import formula as spec_formula

    try:
        return spec_formula(row_spec(r, "loss", reduction))
    except Exception:  # noqa: BLE001 - a report never fails over one display form
        return r["expression"]


def export_takeaways(best: list[dict], run_dir: Path, reduction: str = "class_sum") -> None:
    """``best_losses.tex``, ``best_losses_standalone.py`` (plain PyTorch, LOSSES by name) and
    ``loss_shapes.png`` for the reported losses."""
    from .._export import standalone_source, to_latex
    from ..plots import plot_loss_shapes

    specs = {f"found_{i}": row_spec(r, f"found_{i}", reduction) for i, r in enumerate(best, 1)}
    notes = {k: f"Evaluation #{r['id']}, fitness {r['fitness']:.4f} on {r.get('dataset')}."
             for k, r in zip(specs, best)}
    tex = [f"% Best losses of the nlfs run {run_dir} (y: target, p: softmax of the logits).",
           "% log of anything but p, sqrt and denominators are protected: |x| floored at epsilon = 10^{-7}.", ""]
    for k, spec in specs.items():
        over = r"\frac{1}{C}\sum_c" if spec.reduction == "element_mean" else r"\sum_c"
        tex += [f"% {k}: {notes[k]}", r"\begin{equation}",
                f"  \\ell_{{\\mathrm{{{k.replace('_', '')}}}}}(y, p) = {over} \\left({to_latex(spec)}\\right)",
                r"\end{equation}", ""]
    atomic_write(run_dir / "best_losses.tex", "\n".join(tex))
    src = standalone_source({k: (spec, notes[k]) for k, spec in specs.items()},
                            title=f"Best losses of the nlfs run {run_dir}, as plain PyTorch.")
    atomic_write(run_dir / "best_losses_standalone.py", src)
    if specs:
        plot_loss_shapes(specs, run_dir / "loss_shapes.png")


def plot_fitness(rows: list[dict], path: Path, paired: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = trained_ok(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    for rung in sorted({_rung(r) for r in ok}):
        at = [r for r in ok if _rung(r) == rung]
        ax.scatter([r["id"] for r in at], [r["fitness"] for r in at], s=12 + 10 * rung, alpha=0.6,
                   label=f"rung {rung}")
    top_rung = [r for r in ok if _rung(r) == max((_rung(r) for r in ok), default=0)]
    if top_rung:
        running, best = [], float("-inf")
        for r in top_rung:
            best = max(best, r["fitness"])
            running.append(best)
        ax.step([r["id"] for r in top_rung], running, where="post", color="k", lw=1,
                label="best at the top rung")
    if paired:
        ax.axhline(0.0, color="k", ls="--", lw=1, label="cross-entropy (same seeds)")
    else:
        base = baseline(rows)
        if base and base.get("fitness") is not None:
            ax.axhline(base["fitness"], color="k", ls="--", lw=1, label="cross-entropy")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("fitness: accuracy - CE's, same seeds" if paired else "fitness (validation accuracy)")
    if ax.get_legend_handles_labels()[0]:  # a run with nothing trained has nothing to label
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export_losses(rows: list[dict], path: Path, run_dir: Path, k: int = 5, reduction: str = "class_sum") -> None:
    """A Python file that registers the best losses in the catalogue and defines nn.Modules."""
    lines = ['"""Best losses found by nlfs in ' + str(run_dir) + '. Import this module to register them."""',
             "", "import nlfs", ""]
    for i, r in enumerate(top(rows, k), 1):
        name = f"found_{run_dir.name}_{i}".replace("-", "_")
        src = f"nlfs run {run_dir}, evaluation #{r['id']}, fitness {r['fitness']:.4f} on {r['dataset']}"
        scale = float(r.get("scale") or 1.0)
        lines += [f"nlfs.losses.register({name!r}, {r['expression']!r}, reduction={reduction!r},",
                  f"                     constants={r.get('constants') or {}!r}, source={src!r},",
                  f"                     scale={scale!r}, overwrite=True)", "",
                  f"class Found{i}(nlfs.Loss):",
                  f'    """{r["expression"]}"""', "",
                  "    def __init__(self, **kwargs):",
                  f"        super().__init__({name!r}, **kwargs)", "", ""]
    atomic_write(path, "\n".join(lines).rstrip() + "\n")


def run_config(run_dir: Path) -> dict:
    path = run_dir / "run.db"
    if not path.is_file():
        return {}
    from ._db import RunDB

    db = RunDB(path, readonly=True)
    try:
        return db.get_meta("config") or {}
    finally:
        db.close()


def write_report(run_dir: str | Path, rows: list[dict], reduction: str | None = None) -> dict:
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    reduction = reduction or cfg.get("reduction") or "class_sum"
    paired = bool(cfg.get("paired", False) and cfg.get("baseline", True)) and any(
        s.get("paired") is not None for r in rows for s in (r.get("result") or {}).get("seeds", []) or [])
    normalise = cfg.get("grad_scale", "none") != "none"
    hof = hall_of_fame(rows)
    best = top(rows, 5)
    counts = summary_counts(rows)

    def entry(r):  # expression: as trained (parseable); formula: simplified, constants' values rounded
        return {**{k: r[k] for k in ("id", "expression", "fitness", "size")}, "formula": formula(r, reduction),
                "constants": r.get("constants") or {}, "rung": _rung(r), "scale": r.get("scale") or 1.0,
                "ce_accuracy": baseline_accuracy(rows, _rung(r)), "same_as": catalogue_twin(r, normalise),
                **seed_stats(r)}

    top_rung = max((_rung(r) for r in rows if r["status"] != "baseline"), default=0)
    summary = {"counts": counts, "paired": paired, "augment": cfg.get("augment", "none"),
               "grad_scale": cfg.get("grad_scale", "none"), "rungs": cfg.get("rungs"),
               "baseline_ce": baseline_accuracy(rows, top_rung),
               "chance": chance_lead(rows, top_rung) if paired else None,
               "best": [entry(r) for r in best], "hall_of_fame": [entry(r) for r in hof]}
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2))
    md = ["# Hall of fame (best per size)", "",
          f"Fitness: {'accuracy minus CE with the same seeds at the same rung' if paired else 'validation accuracy'}; "
          f"augmentation {summary['augment']}; gradient scale {summary['grad_scale']}.", "",
          "| size | rung | fitness | formula |", "|---|---|---|---|"]
    fmt = "+.4f" if paired else ".4f"
    md += [f"| {r['size']} | {_rung(r)} | {r['fitness']:{fmt}} | `{formula(r, reduction)}` |" for r in hof]
    atomic_write(run_dir / "hall_of_fame.md", "\n".join(md) + "\n")
    plot_fitness(rows, run_dir / "fitness.png", paired)
    export_losses(rows, run_dir / "best_losses.py", run_dir, reduction=reduction)
    export_takeaways(best, run_dir, reduction)
    return summary


def format_summary(summary: dict, dataset: str) -> str:
    c = summary["counts"]
    lines = [f"candidates {c['evaluated']}: trained {c['trained']} (ok {c['ok']}, diverged {c['diverged']}, "
             f"error {c['error']}); removed before training: validity {c['validity']}, duplicate "
             f"{c['duplicate']}, integrity {c['integrity']}, fingerprint {c['fingerprint']}, "
             f"rejection {c['rejection']}"]
    spent = c.get("rungs") or {}
    if spent:
        lines.append("rungs: " + "; ".join(f"{k}: {v['trained']} trained ({v['ok']} ok) in {v['seconds']:.0f} s"
                                           for k, v in sorted(spent.items())))
    lines.append(f"augmentation {summary.get('augment', 'none')}, gradient scale "
                 f"{summary.get('grad_scale', 'none')}; dataset {dataset}")
    base = summary["baseline_ce"]
    paired = summary.get("paired")
    head = "paired d vs CE (sd over seeds)" if paired else "vs CE"
    lines.append(f"{'loss':<10} {'rung':>4} {'seeds':>5} {'val acc':>8}  {head:<30} formula")
    if base is not None:
        lines.append(f"{'CE':<10} {'':>4} {'':>5} {base:>8.4f}  {'':<30} -y * log(p)")
    for i, r in enumerate(summary["best"], 1):
        acc = r.get("accuracy")
        acc = r["fitness"] if acc is None else acc
        if paired and r.get("paired") is not None:
            sd = "" if r.get("paired_sd") is None else f" ({r['paired_sd']:.4f})"
            delta = f"{r['paired']:+.4f}{sd}"
        else:
            ce = r.get("ce_accuracy", base)
            delta = "" if ce is None else f"{acc - ce:+.4f}"
        twin = f"   [= {r['same_as']} in disguise]" if r.get("same_as") else ""
        lines.append(f"{'found #' + str(i):<10} {r.get('rung', 0):>4} {r.get('seeds') or 1:>5} {acc:>8.4f}  "
                     f"{delta:<30} {r.get('formula', r['expression'])}{twin}")
    chance = summary.get("chance")
    if chance:
        lines.append(f"chance: {chance['candidates']} candidates reached rung {chance['rung']}; one seed moves a "
                     f"paired d by {chance['seed_sd']:.4f} (median sd), so among {chance['candidates']} losses no "
                     f"different from CE the best mean over {chance['seeds']} seeds would be "
                     f"{chance['expected_best']:+.4f} ({chance['expected_best_independent']:+.4f} if none of "
                     f"that noise were CE's). A lead near that is not evidence: confirm it with "
                     f"`python -m nlfs.eliminate`.")
    return "\n".join(lines)
