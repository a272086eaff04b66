"""Command-line options for the training settings, shared by the tools that train candidates."""

from __future__ import annotations

import argparse

BACKENDS = ["auto", "triton", "cpp", "torch"]


def add_training_args(ap: argparse.ArgumentParser, model: bool = True) -> None:
    """``--dataset --data-root [--model] --epochs --steps --train-size --val-size --backend --device``,
    each defaulting to None (keep the base configuration's value)."""
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--data-root", default=None)
    if model:
        ap.add_argument("--model", default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--val-size", type=int, default=None)
    ap.add_argument("--backend", default=None, choices=BACKENDS)
    ap.add_argument("--device", default=None)


def training_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields those options set (None where not given)."""
    names = ("dataset", "data_root", "model", "epochs", "steps", "train_size", "val_size", "backend", "device")
    return {k: getattr(args, k) for k in names if hasattr(args, k)}
