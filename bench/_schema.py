"""One CSV schema for every kernel benchmark result (CPU and GPU), plus a Markdown renderer."""

from __future__ import annotations

import csv
import datetime as _dt
import platform
from pathlib import Path

KERNEL_COLUMNS = [
    "date", "machine", "device", "dtype", "loss", "provider", "batch", "classes",
    "median_ms", "p20_ms", "p80_ms", "speedup_vs_eager", "gbps", "pct_copy_bw", "compile_s", "notes",
]


def machine_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu} ({os.cpu_count()} cores)"


def today() -> str:
    return _dt.date.today().isoformat()


def write_csv(path: str | Path, rows: list[dict], columns: list[str] = KERNEL_COLUMNS) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in columns})


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
