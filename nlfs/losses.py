"""The catalogue of published losses, and ``register`` to add any loss by string.

Every entry is an expression over ``y`` (target) and ``p`` (softmax) with its class reduction and default
constants. NCE+RCE also sums over the classes inside the loss (``sum_classes``); ``elementwise()`` lists
the others. NeuroLoss1-3 and the inverse
Bessel logarithm loss are absent: their formulas appear only in the papers' PDFs; add them with
``register`` once you have them.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .expr import CLASS_REDUCTIONS, Expr, parse


@dataclass(frozen=True)
class LossSpec:
    name: str
    expr: Expr
    class_reduction: str = "class_sum"  # how f(y, p) combines over classes: class_sum | element_mean
    constants: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""
    # A positive factor on the whole loss (so on its gradient): a search that puts candidates on
    # cross-entropy's gradient scale records it here, so the loss a user builds is the one trained.
    scale: float = 1.0

    def __post_init__(self):
        import math

        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"loss {self.name!r}: scale must be a finite positive number, got {self.scale!r}")

    def __reduce__(self):
        # MappingProxyType does not pickle; a spec must, to reach worker processes (transfer --workers)
        return (_spec, (self.name, self.expr, self.class_reduction, dict(self.constants), self.source, self.scale))

    @property
    def text(self) -> str:
        return str(self.expr)

    @property
    def over_classes(self) -> bool:
        """Whether the loss sums over classes inside (NCE's ``sum_classes``): the fused kernels then
        evaluate whole rows at a time and are never target-specialised."""
        from .expr import CLASS_OPS

        return any(n.op in CLASS_OPS for n in self.expr.nodes())

    def values(self, overrides: dict | None = None) -> dict[str, float]:
        """The constants' values: the spec's, with ``overrides`` in their place. A name the expression
        does not hold, or a constant left without a value, is a ValueError naming it."""
        out = dict(self.constants)
        for k, v in (overrides or {}).items():
            if k not in self.expr.constants:
                raise ValueError(f"constant {k!r} does not occur in {self.expr}")
            out[k] = float(v)
        missing = [k for k in self.expr.constants if k not in out]
        if missing:
            raise ValueError(f"no value for constants {missing} of {self.expr}; pass constants={{...}}")
        return out

    @property
    def scaled_expr(self) -> Expr:
        """The expression the kernels evaluate: ``scale * expr`` (``expr`` itself when scale is 1)."""
        return self.expr if self.scale == 1.0 else Expr("mul", (Expr.num(float(self.scale)), self.expr))


def _spec(name, expr, class_reduction, constants, source, scale) -> LossSpec:
    return LossSpec(name, expr, class_reduction, MappingProxyType(constants), source, scale)


_CATALOGUE: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    """Case, dashes, inner spaces and surrounding whitespace do not tell names apart."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(name: str, text: str | Expr, class_reduction: str = "class_sum",
             constants: dict[str, float] | None = None, source: str = "",
             aliases: tuple[str, ...] = (), overwrite: bool = False, scale: float = 1.0,
             *, reduction: str | None = None) -> LossSpec:
    """Add a loss to the catalogue from a string (or expression).

    ``class_reduction`` is ``class_sum`` (sum over classes, mean over samples) or ``element_mean``
    (mean over all N*C elements). ``constants`` gives a default for every named constant.
    ``scale`` multiplies the whole loss (a found loss's gradient-scale factor). ``reduction`` is the
    old name of ``class_reduction`` (as in the exports of older runs): accepted with a DeprecationWarning.
    """
    if reduction is not None:
        warnings.warn("register(..., reduction=...) is deprecated: the class reduction is now called "
                      "class_reduction", DeprecationWarning, stacklevel=2)
        class_reduction = reduction
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}, got {class_reduction!r}")
    expr = parse(text) if isinstance(text, str) else text
    if not isinstance(expr, Expr):
        raise TypeError(f"text must be a string or Expr, got {type(text).__name__}")
    constants = {k: float(v) for k, v in (constants or {}).items()}
    missing = set(expr.constants) - set(constants)
    if missing:
        raise ValueError(f"loss {name!r}: no default value for constants {sorted(missing)}")
    unused = set(constants) - set(expr.constants)
    if unused:
        raise ValueError(f"loss {name!r}: constants {sorted(unused)} do not occur in {expr}")
    key = _key(name)
    spec = LossSpec(name, expr, class_reduction, MappingProxyType(constants), source, float(scale))
    taken = _CATALOGUE.get(_ALIASES.get(key, key))
    if taken is not None and not overwrite:
        if same_loss(taken, spec):
            return taken  # importing the same export twice registers nothing new
        raise ValueError(f"a different loss named {name!r} is already registered ({taken.expr}, scale "
                         f"{taken.scale:g}); pick another name or pass overwrite=True")
    _CATALOGUE[key] = spec
    _ALIASES.pop(key, None)  # a name that was another loss's alias now names this one
    for alias in aliases:
        _ALIASES[_key(alias)] = key
    return spec


def same_loss(a: LossSpec, b: LossSpec) -> bool:
    """The same loss as trained: expression, class reduction, constants and scale."""
    return (str(a.expr) == str(b.expr) and a.class_reduction == b.class_reduction
            and dict(a.constants) == dict(b.constants) and float(a.scale) == float(b.scale))


def registered_entries(names) -> list[dict]:
    """The losses among ``names`` (catalogue names or expressions) registered beyond the published ones
    (or over one of them),
    one entry per loss in nlfs/found_losses.json's format with the names it was given as ``aliases``: a
    search saves them with its run, so that another process reading or resuming it knows them."""
    out: dict[str, dict] = {}
    for text in dict.fromkeys(names):
        if not is_registered(text):
            continue
        spec = get(text)
        published = _PUBLISHED.get(_key(spec.name))
        if published is not None and same_loss(spec, published):
            continue  # every process knows it; a published name the user overwrote is saved like any other
        e = out.setdefault(spec.name, {"name": spec.name, "expression": spec.text, "aliases": [],
                                       "class_reduction": spec.class_reduction, "constants": dict(spec.constants),
                                       "scale": spec.scale})
        if _key(text) != _key(spec.name) and text not in e["aliases"]:
            e["aliases"].append(text)
    return list(out.values())


def register_entries(entries, refuse_other: bool = False) -> None:
    """Register a saved run's losses (``registered_entries``) where this process lacks them or their
    aliases; nothing registered here changes meaning. A name (or alias) that means another loss here is
    left as it is, or with ``refuse_other`` (a resumed search would train a loss its run never did) a
    ValueError naming both."""
    for e in entries:
        saved = _spec(e["name"], parse(e["expression"]), e["class_reduction"], e.get("constants") or {},
                      "registered by the run that saved it", float(e.get("scale", 1.0)))
        for name in (e["name"], *(e.get("aliases") or ())):
            here = get(name) if is_registered(name) else None
            if here is None:
                if name == e["name"]:
                    register(name, saved.expr, saved.class_reduction, dict(saved.constants), source=saved.source,
                             scale=saved.scale)
                else:  # an alias of the run's loss, as registered above or already here
                    _ALIASES[_key(name)] = _ALIASES.get(_key(e["name"]), _key(e["name"]))
            elif not same_loss(here, saved):
                if refuse_other:
                    raise ValueError(f"the run's loss {name!r} is {saved.text} (constants {dict(saved.constants)}, "
                                     f"scale {saved.scale:g}); here that name means another ({here.text}, "
                                     f"constants {dict(here.constants)}, scale {here.scale:g}): register the "
                                     "run's under that name (nlfs.losses.register; overwrite=True over a "
                                     "published one) in the process that resumes it")
                if name == e["name"]:
                    break  # its aliases cannot point at a loss this process does not hold under that name


def stored_class_reduction(entry: Mapping, default: str = "class_sum") -> str:
    """The class reduction a stored loss, payload or configuration names: its ``class_reduction``, or
    ``reduction`` as files written before the rename call it, or ``default``."""
    return entry.get("class_reduction") or entry.get("reduction") or default


def unknown_loss(name: str) -> str:
    """``unknown loss 'NGLL'; did you mean NGL?``: the closest catalogue names (or aliases)."""
    known = {_key(n): n for n in names()} | {a: _CATALOGUE[k].name for a, k in _ALIASES.items()}
    close = difflib.get_close_matches(_key(name), list(known), n=3, cutoff=0.6)
    hint = ", ".join(dict.fromkeys(known[c] for c in close))
    known_ = f"known: {', '.join(names())}"
    return f"unknown loss {name!r}; did you mean {hint}? ({known_})" if hint else f"unknown loss {name!r}; {known_}"



class UnknownLossError(KeyError, ValueError):
    """A loss name that is not in the catalogue (a KeyError for ``get``, a ValueError for ``Loss``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def get(name: str) -> LossSpec:
    key = _key(name)
    key = _ALIASES.get(key, key)
    try:
        return _CATALOGUE[key]
    except KeyError:
        raise UnknownLossError(unknown_loss(name)) from None


_VARIABLES = ("y", "p", "z", "C")


def resolve_spec(loss, class_reduction: str | None = None) -> LossSpec:
    """A catalogue name, an expression string, an Expr or a LossSpec -> LossSpec. A bare word that is
    neither a catalogue name nor a variable (``NGLL``) is an unknown loss, not an expression made of
    one constant."""
    if isinstance(loss, LossSpec):
        spec = loss
    elif isinstance(loss, Expr):
        spec = LossSpec(str(loss), loss)
    elif isinstance(loss, str):
        if is_registered(loss):
            spec = get(loss)
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", loss.strip()) and loss.strip() not in _VARIABLES:
            raise UnknownLossError(unknown_loss(loss))
        else:
            spec = LossSpec(loss, parse(loss))
    else:
        raise TypeError(f"loss must be a name, an expression string, an Expr or a LossSpec, "
                        f"got {type(loss).__name__}")
    if class_reduction is not None and class_reduction != spec.class_reduction:
        spec = LossSpec(spec.name, spec.expr, class_reduction, spec.constants, spec.source, spec.scale)
    return spec


# One name per loss: a search candidate is ``<run>#<id>`` (a tuned one ``<run>#<id>-tuned``) in every
# report, table and export, and registered under that name; Python needs an identifier for a class.
def loss_label(run: str, candidate_id, tuned: bool = False) -> str:
    """The name of evaluation ``candidate_id`` of the search run named ``run`` (a run directory's name)."""
    return f"{run}#{candidate_id}" + ("-tuned" if tuned else "")


def python_name(label: str) -> str:
    """A Python identifier derived from a loss name, deterministically (``disc-nlfs#1603`` ->
    ``disc_nlfs_1603``; a leading digit gets ``loss_``)."""
    import keyword

    ident = re.sub(r"\W+", "_", label).strip("_") or "loss"
    return ident if ident[0].isalpha() and not keyword.iskeyword(ident) else f"loss_{ident}"


def names() -> list[str]:
    return [spec.name for spec in _CATALOGUE.values()]


def elementwise() -> list[str]:
    """The catalogue's names less the losses over classes: those whose value at a class reads only that class."""
    return [spec.name for spec in _CATALOGUE.values() if not spec.over_classes]


def is_registered(name: str) -> bool:
    key = _key(name)
    return key in _CATALOGUE or key in _ALIASES


register("CE", "-y * log(p)", source="standard cross-entropy",
         aliases=("cross_entropy", "crossentropy"))
register("LabelSmoothingCE", "-((1 - a) * y + a / C) * log(p)", constants={"a": 0.1},
         source="standard; Szegedy et al. 2016", aliases=("label_smoothed_ce", "ls_ce", "label_smoothing"))
register("Focal", "-y * (1 - p) ** gamma * log(p)", constants={"gamma": 2.0},
         source="Lin et al. 2017, arXiv 1708.02002", aliases=("focal_loss",))
register("Poly1", "-y * log(p) + epsilon * y * (1 - p)", constants={"epsilon": 2.0},
         source="Leng et al. 2022, arXiv 2204.12511", aliases=("poly_1", "poly"))
register("Baikal", "-(log(p + 1e-7) - y / (p + 1e-7))",
         source="Gonzalez & Miikkulainen, GLO, arXiv 1905.11528 "
                "(OUStudent/NeuralLossFunctionEvolution final_loss_testing.py)")
register("NGL", "exp(alpha - p - p * y) - cos(cos(sin(p)))", class_reduction="element_mean",
         constants={"alpha": 2.4092},
         source="Akhmedova & Koerber 2024, arXiv 2404.12948 "
                "(ZKI-PH-ImageAnalysis/Next-Generation-Loss NGL_torch.py)",
         aliases=("next_generation_loss",))
register("SCE", "a * -y * log(p) + b * -p * log(max(min(y, 1), 0.0001))",
         constants={"a": 0.1, "b": 1.0}, source="Wang et al. 2019, arXiv 1908.06112",
         aliases=("symmetric_ce",))
register("TaylorGLO",
         "t2 * (y - t1) + t3 / 2 * (y - t1)**2 + t4 / 6 * (y - t1)**3 + t5 * (p - t0) * (y - t1)"
         " + t6 / 2 * (p - t0) * (y - t1)**2 + t7 / 2 * (p - t0)**2 * (y - t1)",
         # Defaults give -y*p (reward the true-class probability); a search or nlfs.tune sets them.
         constants={"t0": 0.0, "t1": 0.0, "t2": 0.0, "t3": 0.0, "t4": 0.0, "t5": -1.0, "t6": 0.0,
                    "t7": 0.0},
         source="Gonzalez & Miikkulainen, arXiv 2002.00059; 8-parameter form as in "
                "Decadz/Evolved-Model-Agnostic-Loss source/representation/tp.py",
         aliases=("taylor",))
# Robust losses of the noisy-label literature (baselines of discovery campaign 2). Each is written over
# y so it sums to the paper's per-sample form for one-hot targets: sum_k y_k * g(p_k) = g(p_t).
# GCE's p**q is exp(q*log(p)): log(p) is exact log-softmax, so no eps floor meets tiny p.
register("GCE", "y * (1 - exp(q * log(p))) / q", constants={"q": 0.7},
         source="Zhang & Sabuncu 2018, arXiv 1805.07836: (1 - p_t**q) / q, q = 0.7; "
                "HanxunH/Active-Passive-Losses loss.py GeneralizedCrossEntropy",
         aliases=("generalized_ce", "generalised_ce"))
register("MAE", "abs(y - p)",
         source="Ghosh, Kumar & Sastry 2017, arXiv 1712.09482: ||e_y - p||_1 = 2 - 2*p_t "
                "(twice Active-Passive-Losses' MAELoss, 1 - p_t)",
         aliases=("mean_absolute_error",))
register("TaylorCE", "y * ((1 - p) + (1 - p) ** 2 / 2)",
         source="Feng et al. 2020, IJCAI, 'Can cross entropy loss be robust to label noise?': "
                "sum_{i=1..t} (1 - p_t)**i / i, t = 2",
         aliases=("taylor_ce", "t_ce"))
# NCE = CE / sum_k(-log p_k): the denominator sums over the classes (sum_classes).
register("NCEandRCE",
         "a * -y * log(p) / sum_classes(-log(p)) + b * -p * log(max(min(y, 1), 0.0001))",
         constants={"a": 1.0, "b": 1.0},
         source="Ma et al. 2020, arXiv 2006.13554 (Active Passive Losses): a*NCE + b*RCE, NCE = CE / "
                "sum_k(-log p_k), RCE as in SCE, a = b = 1 (CIFAR-10); HanxunH/Active-Passive-Losses loss.py "
                "NCEandRCE",
         aliases=("nce_rce", "nce+rce", "apl_nce_rce"))

BUILTIN: tuple[str, ...] = tuple(names())  # the published losses above, before any user registration
_PUBLISHED: dict[str, LossSpec] = {_key(n): get(n) for n in BUILTIN}  # as published, should one be overwritten

# Losses found by nlfs's own searches, with where they come from: nlfs/found_losses.json, written
# by the discovery campaign (bench/results/discovery_*.md holds the evidence for each).
FOUND_FILE = Path(__file__).with_name("found_losses.json")
_FOUND: dict[str, dict] = {}


def read_losses_file(path: str | Path) -> list[dict]:
    """The losses a file lists, as entries in the format of nlfs/found_losses.json ({name, expression,
    class_reduction, constants, scale, provenance}; files of older runs say ``reduction``). Also read: a
    survivors file (``finalists.json``, that format), an elimination's ``elimination.json`` (its survivors)
    and a tuning's ``tuned.json`` (each tuned loss under ``<run>#<id>-tuned``). Anything else: a
    ValueError in one line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read losses from {path}: {err}") from None
    run = path.resolve().parent.name
    if isinstance(data, dict) and isinstance(data.get("survivors"), list):  # elimination.json
        data = [{"name": s.get("name") or _survivor_label(s, run), "expression": s["expression"],
                 "constants": s.get("constants") or {}, "class_reduction": stored_class_reduction(s),
                 "scale": s.get("scale", 1.0), "provenance": {"elimination": str(path)}}
                for s in data["survivors"] if isinstance(s, dict) and "expression" in s]
    elif isinstance(data, list) and data and all(isinstance(t, dict) and "best_constants" in t for t in data):
        data = [{"name": t.get("tuned_name") or loss_label(run, t["id"], tuned=True), "expression": t["expression"],
                 "constants": t["best_constants"], "class_reduction": stored_class_reduction(t),
                 "scale": t.get("scale", 1.0), "provenance": {"tuned": str(path)}}
                for t in data if t.get("best_constants") is not None and t.get("expression")]
    ok = isinstance(data, list) and all(isinstance(e, dict) and "name" in e and "expression" in e for e in data)
    if not ok:
        raise ValueError(f"{path} is not a list of losses (name, expression, constants, scale: the format of "
                         "nlfs/found_losses.json, a finalists.json, an elimination.json or a tuned.json)")
    return data


def _survivor_label(s: dict, run: str) -> str:
    label = str(s.get("label") or f"#{s.get('id')}")
    return label if not label.startswith("#") else f"{run}{label}"


def register_file(path: str | Path, overwrite: bool = False) -> list[str]:
    """Register every loss listed in the JSON file ``path`` (see :func:`read_losses_file` for the
    formats); returns their names. A discovery campaign's finalists are registered this way for transfer
    before any is shipped. A different loss already registered under one of the names is refused unless
    ``overwrite``."""
    path = Path(path)
    out = []
    for entry in read_losses_file(path):
        prov = dict(entry.get("provenance") or {})
        source = "; ".join(f"{k}: {v}" for k, v in prov.items()) or f"registered from {path.name}"
        register(entry["name"], entry["expression"], stored_class_reduction(entry),
                 entry.get("constants") or {}, source=source, scale=float(entry.get("scale", 1.0)),
                 overwrite=overwrite)
        out.append(entry["name"])
    return out


def load_found(path: str | Path = FOUND_FILE) -> list[str]:
    """Register the found losses listed in ``path`` (see :func:`register_file`) and remember each one's
    provenance; returns their names."""
    path = Path(path)
    if not path.is_file():
        return []
    names_ = register_file(path, overwrite=True)
    for entry in json.loads(path.read_text()):
        _FOUND[_key(entry["name"])] = dict(entry.get("provenance") or {})
    return names_


def found() -> list[str]:
    """Names of the losses nlfs's searches found (``nlfs.Loss(name)`` builds each with its constants
    and gradient scale); ``provenance(name)`` says where each comes from."""
    return [get(k).name for k in _FOUND]


def provenance(name: str) -> dict:
    """The search run, settings and results table behind a found loss."""
    key = _ALIASES.get(_key(name), _key(name))
    if key not in _FOUND:
        raise KeyError(f"{name!r} is not a found loss; found: {', '.join(found()) or 'none yet'}")
    return dict(_FOUND[key])


load_found()

__all__ = ["BUILTIN", "FOUND_FILE", "LossSpec", "UnknownLossError", "elementwise", "found", "get", "is_registered",
           "load_found",
           "loss_label", "names", "provenance", "python_name", "read_losses_file", "register", "register_entries",
           "register_file", "registered_entries", "resolve_spec", "same_loss", "unknown_loss"]
