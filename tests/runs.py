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


def drawn_split(cfg) -> tuple[list[int], list[int]]:
    """What the trainer's setup draws from a TrainConfig's split seed (as ``nlfs.train`` does): the
    training subset's indices and those of its labels the label noise flipped."""
    from nlfs.data import load_dataset, make_splits, with_label_noise

    cfg = cfg.resolved()  # the dataset's defaults filled in, as the trainer trains it
    ds = load_dataset(cfg.dataset, cfg.data_root)
    clean = make_splits(ds, cfg.val_size, cfg.train_size, cfg.split_seed, "cpu", False)
    noisy = with_label_noise(clean, cfg.label_noise, ds.num_classes, cfg.split_seed, cfg.label_noise_kind)
    train = clean.train.tolist()
    return sorted(train), sorted(i for i in train if noisy.labels[i] != clean.labels[i])
