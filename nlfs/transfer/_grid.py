"""Choosing a setting (a learning rate, a loss's constant) from a grid whose edges are not chosen: the
grid grows by one point past an edge whenever the best value lands there, until the best is interior."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

MAX_ADDED = 4  # points added to a grid at most: a choice still on an edge then is reported as such


def grid_choice(scores: Mapping[float, float], start: Iterable[float], limit: float = math.inf,
                max_added: int = MAX_ADDED, prefer: float | None = None) -> tuple[float | None, list[float]]:
    """``(chosen, to_train)``: the best value of the grid that starts at ``start``, widened by one point
    (half the smallest, twice the largest) whenever the best lands on an edge, until it is interior;
    ``to_train`` lists the grid's values without a score yet (then ``chosen`` is None). ``scores``
    maps a value to its mean validation accuracy; ties go to the value nearest ``prefer`` (in log; default
    the starting grid's middle). Widening stops at ``max_added`` points or where twice the largest would
    reach ``limit``: the choice then stays on its edge (``on_edge`` says so). A grid of one value is
    that value: there is no edge to widen past."""
    chosen, todo, _ = widened_grid(scores, start, limit, max_added, prefer)
    return chosen, todo


def widened_grid(scores: Mapping[float, float], start: Iterable[float], limit: float = math.inf,
                 max_added: int = MAX_ADDED,
                 prefer: float | None = None) -> tuple[float | None, list[float], list[float]]:
    """``grid_choice``'s ``(chosen, to_train)`` and the grid it chose from (``start`` and the points
    added): what a report lists as tried, leaving out scores of other grids."""
    grid = sorted(set(start))
    middle = prefer or math.sqrt(grid[0] * grid[-1])
    while True:
        todo = [v for v in grid if v not in scores]
        if todo:
            return None, todo, grid
        best = max(grid, key=lambda v: (scores[v], -abs(math.log(v / middle))))
        if len(grid) == 1 or len(grid) - len(set(start)) >= max_added:
            return best, [], grid
        if best == grid[0]:
            grid.insert(0, best / 2)
        elif best == grid[-1] and best * 2 < limit:
            grid.append(best * 2)
        else:
            return best, [], grid


def on_edge(value: float, tried: Iterable[float]) -> bool:
    """Whether ``value`` is the smallest or the largest of the values ``tried``."""
    tried = list(tried)
    return value in (min(tried), max(tried))


# A published loss's one constant, tuned like the learning rate when a transfer tunes its baselines:
# (constant, starting grid, the bound a widened grid stays below). Around each paper's value; the losses
# with two constants (SCE, NCE+RCE) keep their authors' published settings.
CONSTANT_GRIDS: dict[str, tuple[str, tuple[float, ...], float]] = {
    "LabelSmoothingCE": ("a", (0.05, 0.1, 0.2), 1.0),  # a = 1 would spread every label evenly
    "Poly1": ("epsilon", (1.0, 2.0, 4.0), math.inf),
    "Focal": ("gamma", (1.0, 2.0, 4.0), math.inf),
    "GCE": ("q", (0.5, 0.7, 1.0), 1.0),  # q = 1 is MAE: the grid widens downwards only
}
