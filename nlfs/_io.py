"""Run-directory I/O: atomic text and CSV writes (a run killed mid-write never leaves a truncated
file), and the machine and date every report is stamped with."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import platform
import uuid
from pathlib import Path

__all__ = ["atomic_write", "csv_cell", "machine_name", "today", "write_table"]


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename. The file gets mode 0644 less
    the umask, as ``open`` would give it (not a temporary file's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def csv_cell(v):
    """A CSV cell: None and non-finite floats empty, floats exactly (``repr``), dicts as JSON."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def write_table(path: str | Path, rows: list[dict], columns: list[str], cell=csv_cell) -> None:
    """Rewrite the CSV ``path`` atomically: a header of ``columns``, then one line per row (other keys
    ignored, each value through ``cell``)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: cell(r.get(k)) for k in columns})
    atomic_write(path, buf.getvalue())


def machine_name() -> str:
    """The GPU's name when there is one, else the CPU model and its core count."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA setup still has a CPU to name
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def today() -> str:
    """The date, ISO format (YYYY-MM-DD)."""
    return datetime.date.today().isoformat()
