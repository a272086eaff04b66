"""The key of a training: what every resume store (a search's elimination table, transfer's CSV,
a tuning's study name) looks a finished training up by."""

from __future__ import annotations

import hashlib
import json


def training_key(description, length: int | None = None, algorithm: str = "sha256") -> str:
    """A stable digest of ``description``: what makes the training what it is (the loss as trained,
    by expression, constants, class reduction and scale, and the training settings), as JSON with
    dict keys sorted and other values as text. ``length`` keeps that many hex digits; ``algorithm``
    is a ``hashlib`` name (the stores written before this function keep their digests)."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.new(algorithm, text.encode()).hexdigest()[:length]
