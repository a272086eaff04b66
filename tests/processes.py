"""Looking at processes from the tests (Linux /proc): is a process alive, which are its children."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Running or sleeping (a zombie has finished)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out |= {int(x) for x in fh.read().split()}
        except OSError:
            pass
    return out
