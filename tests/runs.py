"""Helpers that several test files share, in one copy each (``tests/test_layout.py`` refuses a helper
function copied into a second test file): running a search to its end, reading a CSV a tool wrote."""

from __future__ import annotations

import csv


def run_search(cfg, executor=None, resume: bool = False) -> list[dict]:
    """Run (``resume``: continue) the search ``cfg`` to its end on ``executor`` (None: the one its
    configuration names) and return its rows; the run directory is closed either way."""
    from nlfs.search import Search

    search = Search(cfg, resume=resume)
    try:
        return search.run(executor=executor)
    finally:
        search.close()


def csv_rows(path) -> list[dict]:
    """The rows of a CSV file, as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
