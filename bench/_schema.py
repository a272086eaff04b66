"""One CSV schema for every kernel benchmark result (CPU and GPU), plus a Markdown renderer."""

from __future__ import annotations

from pathlib import Path

from nlfs._io import machine_name, today, write_table

__all__ = ["KERNEL_COLUMNS", "machine_name", "today", "write_csv", "write_markdown"]

KERNEL_COLUMNS = [
    "date", "machine", "device", "dtype", "loss", "provider", "batch", "classes",
    "median_ms", "p20_ms", "p80_ms", "speedup_vs_eager", "gbps", "pct_copy_bw", "compile_s", "notes",
]


def write_csv(path: str | Path, rows: list[dict], columns: list[str] = KERNEL_COLUMNS) -> None:
    write_table(path, rows, columns, cell=lambda v: _fmt("" if v is None else v))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_markdown(path: str | Path, rows: list[dict], columns: list[str], title: str,
                   preamble: str = "") -> None:
    path = Path(path)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        lines.append("| " + " | ".join(str(_fmt(r.get(c, ""))) for c in columns) + " |")
    path.write_text("\n".join(lines) + "\n")
