"""The losses a transfer compares: catalogue names, expressions, a run directory's hand-over; each a
``LossEntry`` that says whether it is a baseline (a loss to compare against) or a contender."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._cli import split_losses
from ..losses import resolve_spec

REFERENCE = "CE"  # every table compares with it: always trained
CATALOGUE_ALL = ("CE", "LabelSmoothingCE", "Focal", "Poly1", "Baikal", "NGL", "SCE", "TaylorGLO")


@dataclass(frozen=True)
class LossEntry:
    """One loss to compare: ``label`` (table/CSV name), ``loss`` (catalogue name or expression
    string passed to the trainer) and ``constants`` (overrides, e.g. from a search run); ``baseline``:
    a loss to compare against (a published one, or one named by ``--baselines``), not a contender."""

    label: str
    loss: str  # or any loss the trainer accepts (an nn.Module/callable) when built in Python
    constants: dict | None = None
    baseline: bool = False

    @property
    def scale(self) -> float:
        """The gradient-scale factor the loss trains with (its spec's; 1 for a callable)."""
        try:
            return float(resolve_spec(self.loss).scale)
        except Exception:  # noqa: BLE001 - a callable loss carries no scale of ours
            return 1.0

    @property
    def expression(self) -> str:
        try:
            return resolve_spec(self.loss).text
        except Exception:
            return self.loss if isinstance(self.loss, str) else ""


def parse_losses(specs: list[str] | str) -> list[LossEntry]:
    """Catalogue names and expression strings. Each string may hold several, separated by ``;`` or by
    top-level commas (commas inside parentheses belong to the expression). ``all`` expands to the
    catalogue entries with a known formula. ``label=expression`` names an expression."""
    from .. import losses as _losses

    if isinstance(specs, str):
        specs = [specs]
    entries: list[LossEntry] = []
    for spec in specs:
        for item in split_losses(spec):
            if item.lower() == "all":
                entries += [LossEntry(n, n) for n in CATALOGUE_ALL]
                continue
            label, text = item, item
            if "=" in item and item.split("=", 1)[0].strip().isidentifier():
                label, text = (s.strip() for s in item.split("=", 1))
            if _losses.is_registered(text):
                text = _losses.get(text).name
                label = text if label == item else label
            entries.append(LossEntry(label, text, baseline=text in _losses.BUILTIN))  # published: a baseline
    return entries


def entry_of(loss: dict) -> LossEntry:
    """A LossEntry for a loss in nlfs/found_losses.json's format, trained exactly as it was found: its
    name, constants, class reduction and gradient scale (a LossSpec where the scale or class reduction is not
    the default, so nothing of it is lost on the way to the trainer)."""
    from ..search import entry_spec

    spec = entry_spec(loss)
    constants = dict(spec.constants) or None
    if spec.scale == 1.0 and spec.class_reduction == "class_sum":
        return LossEntry(loss["name"], loss["expression"], constants)
    return LossEntry(loss["name"], spec, constants)


def losses_from_run(run_dir: str | Path, k: int = 3) -> list[LossEntry]:
    """The ``k`` best unique ok candidates of a search run that are no known loss in disguise
    (``nlfs.search.best_new_candidates``), named ``<run>#<id>`` as in its exports, with their stored
    constants, class reduction and gradient scale."""
    from ..losses import stored_class_reduction
    from ..search import best_new_candidates, read_run, row_name

    run_dir = Path(run_dir)
    rows, saved = read_run(run_dir)
    best = best_new_candidates(rows, saved, k)
    if not best:
        raise ValueError(f"search run {run_dir} has no successfully trained candidates other than known losses "
                         "in disguise")
    return [entry_of({"name": row_name(r, run_dir), "expression": r["expression"], "constants": r.get("constants"),
                      "class_reduction": stored_class_reduction(r, stored_class_reduction(saved)),
                      "scale": r.get("scale") or 1.0}) for r in best]


def losses_from(run_dir: str | Path, k: int = 3, log=print) -> list[LossEntry]:
    """What a run directory hands on (``nlfs.search.run_losses``): the elimination's survivors
    (``finalists.json``) when it has them, else the search's ``k`` best with tuned constants where
    ``tuned.json`` has them. Says which on ``log``."""
    from ..search import run_losses

    entries, what = run_losses(run_dir, k)
    log(f"nlfs.transfer: --from {run_dir}: {what}")
    return [entry_of(e) for e in entries]


def with_reference(entries: list[LossEntry]) -> list[LossEntry]:
    """``entries``, the first of each label kept, with CE first when it is not among them."""
    seen, out = set(), []
    for e in entries:
        if e.label in seen:
            continue
        seen.add(e.label)
        out.append(e)
    if REFERENCE not in seen:  # the table compares against CE: always train it
        out.insert(0, LossEntry(REFERENCE, REFERENCE, baseline=True))
    return out

