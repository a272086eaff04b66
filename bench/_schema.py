"""The bench's CSV files: one schema for every kernel benchmark result (CPU and GPU) with a Markdown
renderer, and the trainings CSVs of the studies, appended one training at a time (``append_row``,
``read_rows``: a line a kill cut short is no training)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from nlfs._io import csv_cell, machine_name, today, write_table

__all__ = ["KERNEL_COLUMNS", "append_row", "dataset_stem", "machine_name", "read_rows", "today", "write_csv",
           "write_markdown"]

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


# ------------------------------------------------------------------------------------- trainings CSVs
def dataset_stem(dataset: str) -> str:
    """A dataset's name as the results files spell it: ``fashion-mnist`` -> ``fashion_mnist``."""
    return dataset.replace("-", "_")


def read_rows(path: str | Path) -> list[dict]:
    """The finished trainings of a trainings CSV (none when it does not exist). A last line cut short by
    a kill (no line end, or fewer cells than the header) is not a training: it is left out, and
    ``append_row`` drops it."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:  # line ends as written: what append_row sees
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    return [r for r in csv.DictReader(io.StringIO(text, newline="")) if None not in r.values() and None not in r]


def append_row(path: str | Path, row: dict, columns: list[str], cell=csv_cell) -> None:
    """One training's ``row`` appended to the trainings CSV ``path`` and flushed to disk as it finishes:
    a header of ``columns`` first in a new file, each value through ``cell`` (``nlfs._io.csv_cell`` by
    default, other keys ignored). A line a kill cut short is dropped first; a file from before a column
    was added (its header a part of ``columns``) is rewritten once with ``columns``, the new cells empty;
    a file with other columns is refused (SystemExit), never rewritten. Processes appending to one file
    (a study's shards) take turns."""
    import fcntl

    path, columns = Path(path), list(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as turn:  # held until the row is on disk: no shard cuts another's line
        fcntl.flock(turn, fcntl.LOCK_EX)
        if path.stat().st_size:
            with path.open("rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a line cut short (the header's too): keep the whole lines before it
                    fh.seek(0)
                    fh.truncate(fh.read().rfind(b"\n") + 1)
        new = path.stat().st_size == 0
        if not new:
            with path.open() as fh:
                header = fh.readline().rstrip("\r\n").split(",")
            if header != columns:
                if not set(header) < set(columns):  # a newer file, or another study's: never rewrite it
                    raise SystemExit(f"{path}: its columns are not the study's ({', '.join(columns)})")
                write_table(path, read_rows(path), columns)
        with path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: cell(row.get(k)) for k in columns})
            fh.flush()
            os.fsync(fh.fileno())
