"""What a person wants to see after a search: the hall of fame (best per size), a PNG of fitness
over evaluations, the best losses exported as catalogue entries and nn.Module code, as LaTeX and as
standalone PyTorch, their shapes beside cross-entropy, and a summary beside cross-entropy. Formulas
are shown simplified (``nlfs.expr.simplify``) with their constants' values; ``run.db`` keeps the raw
expression."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ._runner import summary_counts


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def trained_ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r.get("fitness") is not None]


def hall_of_fame(rows: list[dict]) -> list[dict]:
    """The best candidate of each size whose fitness beats every smaller one (a Pareto front)."""
    best_by_size: dict[int, dict] = {}
    for r in trained_ok(rows):
        cur = best_by_size.get(r["size"])
        if cur is None or r["fitness"] > cur["fitness"]:
            best_by_size[r["size"]] = r
    front, best = [], float("-inf")
    for size in sorted(best_by_size):
        r = best_by_size[size]
        if r["fitness"] > best:
            front.append(r)
            best = r["fitness"]
    return front


def top(rows: list[dict], k: int) -> list[dict]:
    seen, out = set(), []
    for r in sorted(trained_ok(rows), key=lambda r: (-r["fitness"], r["size"], r["id"])):
        key = (r["expression"], json.dumps(r.get("constants") or {}, sort_keys=True))
        if key in seen:  # one row per expression and constants (TaylorGLO differs only in these)
            continue
        seen.add(key)
        out.append(r)
        if len(out) == k:
            break
    return out


def baseline(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["status"] == "baseline"), None)


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


def run_reduction(run_dir: Path) -> str:
    """The class reduction the run trained with (its saved configuration), class_sum by default."""
    path = run_dir / "run.db"
    if not path.is_file():
        return "class_sum"
    from ._db import RunDB

    db = RunDB(path)
    try:
        return (db.get_meta("config") or {}).get("reduction") or "class_sum"
    finally:
        db.close()


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
    _atomic_write(run_dir / "best_losses.tex", "\n".join(tex))
    src = standalone_source({k: (spec, notes[k]) for k, spec in specs.items()},
                            title=f"Best losses of the nlfs run {run_dir}, as plain PyTorch.")
    _atomic_write(run_dir / "best_losses_standalone.py", src)
    if specs:
        plot_loss_shapes(specs, run_dir / "loss_shapes.png")


def plot_fitness(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("fitness") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    if ok:
        xs = [r["id"] for r in ok]
        ys = [r["fitness"] for r in ok]
        ax.scatter(xs, ys, s=12, alpha=0.6, label="candidate")
        running, best = [], float("-inf")
        for y in ys:
            best = max(best, y)
            running.append(best)
        ax.step(xs, running, where="post", color="C1", label="best so far")
    base = baseline(rows)
    if base and base.get("fitness") is not None:
        ax.axhline(base["fitness"], color="k", ls="--", lw=1, label="cross-entropy")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("fitness (validation accuracy)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export_losses(rows: list[dict], path: Path, run_dir: Path, k: int = 5) -> None:
    """A Python file that registers the best losses in the catalogue and defines nn.Modules."""
    lines = ['"""Best losses found by nlfs in ' + str(run_dir) + '. Import this module to register them."""',
             "", "import nlfs", ""]
    for i, r in enumerate(top(rows, k), 1):
        name = f"found_{run_dir.name}_{i}".replace("-", "_")
        src = f"nlfs run {run_dir}, evaluation #{r['id']}, fitness {r['fitness']:.4f} on {r['dataset']}"
        lines += [f"nlfs.losses.register({name!r}, {r['expression']!r}, reduction='class_sum',",
                  f"                     constants={r.get('constants') or {}!r}, source={src!r},",
                  "                     overwrite=True)", "",
                  f"class Found{i}(nlfs.Loss):",
                  f'    """{r["expression"]}"""', "",
                  "    def __init__(self, **kwargs):",
                  f"        super().__init__({name!r}, **kwargs)", "", ""]
    _atomic_write(path, "\n".join(lines).rstrip() + "\n")


def write_report(run_dir: str | Path, rows: list[dict], reduction: str | None = None) -> dict:
    run_dir = Path(run_dir)
    reduction = reduction or run_reduction(run_dir)
    hof = hall_of_fame(rows)
    best = top(rows, 5)
    base = baseline(rows)
    counts = summary_counts(rows)

    def entry(r):  # expression: as trained (parseable); formula: simplified, constants' values rounded
        return {**{k: r[k] for k in ("id", "expression", "fitness", "size")}, "formula": formula(r, reduction),
                "constants": r.get("constants") or {}}

    summary = {"counts": counts, "baseline_ce": base and base.get("fitness"),
               "best": [entry(r) for r in best], "hall_of_fame": [entry(r) for r in hof]}
    _atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2))
    md = ["# Hall of fame (best per size)", "", "| size | fitness | formula |", "|---|---|---|"]
    md += [f"| {r['size']} | {r['fitness']:.4f} | `{formula(r, reduction)}` |" for r in hof]
    _atomic_write(run_dir / "hall_of_fame.md", "\n".join(md) + "\n")
    plot_fitness(rows, run_dir / "fitness.png")
    export_losses(rows, run_dir / "best_losses.py", run_dir)
    export_takeaways(best, run_dir, reduction)
    return summary


def format_summary(summary: dict, dataset: str) -> str:
    c = summary["counts"]
    lines = [f"candidates {c['evaluated']}: trained {c['trained']} (ok {c['ok']}, diverged {c['diverged']}, "
             f"error {c['error']}); removed before training: validity {c['validity']}, duplicate "
             f"{c['duplicate']}, integrity {c['integrity']}, fingerprint {c['fingerprint']}, "
             f"rejection {c['rejection']}"]
    base = summary["baseline_ce"]
    lines.append(f"{'loss':<12} {'val acc':>8}  expression   (dataset: {dataset})")
    if base is not None:
        lines.append(f"{'CE':<12} {base:>8.4f}  -y * log(p)")
    for i, r in enumerate(summary["best"], 1):
        delta = "" if base is None else f" ({r['fitness'] - base:+.4f} vs CE)"
        lines.append(f"{'found #' + str(i):<12} {r['fitness']:>8.4f}  {r.get('formula', r['expression'])}{delta}")
    return "\n".join(lines)
