"""What a person wants to see after a search: the hall of fame (best per size), a PNG of fitness
over evaluations, the best losses exported as catalogue entries and nn.Module code, and a summary
beside cross-entropy."""

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


def write_report(run_dir: str | Path, rows: list[dict]) -> dict:
    run_dir = Path(run_dir)
    hof = hall_of_fame(rows)
    best = top(rows, 5)
    base = baseline(rows)
    counts = summary_counts(rows)
    summary = {"counts": counts, "baseline_ce": base and base.get("fitness"),
               "best": [{k: r[k] for k in ("id", "expression", "fitness", "size")} for r in best],
               "hall_of_fame": [{k: r[k] for k in ("id", "expression", "fitness", "size")} for r in hof]}
    _atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2))
    md = ["# Hall of fame (best per size)", "", "| size | fitness | expression |", "|---|---|---|"]
    md += [f"| {r['size']} | {r['fitness']:.4f} | `{r['expression']}` |" for r in hof]
    _atomic_write(run_dir / "hall_of_fame.md", "\n".join(md) + "\n")
    plot_fitness(rows, run_dir / "fitness.png")
    export_losses(rows, run_dir / "best_losses.py", run_dir)
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
        lines.append(f"{'found #' + str(i):<12} {r['fitness']:>8.4f}  {r['expression']}{delta}")
    return "\n".join(lines)
