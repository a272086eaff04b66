"""The catalogue of published losses, and ``register`` to add any loss by string.

Every entry is an expression over ``y`` (target) and ``p`` (softmax) with its reduction and default
constants. NeuroLoss1-3 and the inverse Bessel logarithm loss are absent: their formulas appear only
in the papers' PDFs; add them with ``register`` once you have them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .expr import Expr, parse
from .expr._program import REDUCTIONS


@dataclass(frozen=True)
class LossSpec:
    name: str
    expr: Expr
    reduction: str = "class_sum"
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
        return (_spec, (self.name, self.expr, self.reduction, dict(self.constants), self.source, self.scale))

    @property
    def text(self) -> str:
        return str(self.expr)

    @property
    def scaled_expr(self) -> Expr:
        """The expression the kernels evaluate: ``scale * expr`` (``expr`` itself when scale is 1)."""
        return self.expr if self.scale == 1.0 else Expr("mul", (Expr.num(float(self.scale)), self.expr))


def _spec(name, expr, reduction, constants, source, scale) -> LossSpec:
    return LossSpec(name, expr, reduction, MappingProxyType(constants), source, scale)


_CATALOGUE: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def register(name: str, text: str | Expr, reduction: str = "class_sum",
             constants: dict[str, float] | None = None, source: str = "",
             aliases: tuple[str, ...] = (), overwrite: bool = False, scale: float = 1.0) -> LossSpec:
    """Add a loss to the catalogue from a string (or expression).

    ``reduction`` is ``class_sum`` (sum over classes, mean over samples) or ``element_mean``
    (mean over all N*C elements). ``constants`` gives a default for every named constant.
    ``scale`` multiplies the whole loss (a found loss's gradient-scale factor).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
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
    taken = key in _CATALOGUE or key in _ALIASES
    if taken and not overwrite:
        raise ValueError(f"a loss named {name!r} is already registered (pass overwrite=True)")
    spec = LossSpec(name, expr, reduction, MappingProxyType(constants), source, float(scale))
    _CATALOGUE[key] = spec
    for alias in aliases:
        _ALIASES[_key(alias)] = key
    return spec


def get(name: str) -> LossSpec:
    key = _key(name)
    key = _ALIASES.get(key, key)
    try:
        return _CATALOGUE[key]
    except KeyError:
        raise KeyError(f"no loss named {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    return [spec.name for spec in _CATALOGUE.values()]


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
register("NGL", "exp(alpha - p - p * y) - cos(cos(sin(p)))", reduction="element_mean",
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

BUILTIN: tuple[str, ...] = tuple(names())  # the published losses above, before any user registration

# Losses found by nlfs's own searches, with where they come from: nlfs/found_losses.json, written
# by the discovery campaign (bench/results/discovery_*.md holds the evidence for each).
FOUND_FILE = Path(__file__).with_name("found_losses.json")
_FOUND: dict[str, dict] = {}


def register_file(path: str | Path) -> list[str]:
    """Register every loss listed in the JSON file ``path`` (a list of {name, expression, reduction,
    constants, scale, provenance}, the format of nlfs/found_losses.json); returns their names. A
    discovery campaign's finalists are registered this way for transfer before any is shipped."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read losses from {path}: {err}") from None
    out = []
    for entry in entries:
        prov = dict(entry.get("provenance") or {})
        source = "; ".join(f"{k}: {v}" for k, v in prov.items()) or f"registered from {path.name}"
        register(entry["name"], entry["expression"], entry.get("reduction", "class_sum"),
                 entry.get("constants") or {}, source=source, scale=float(entry.get("scale", 1.0)), overwrite=True)
        out.append(entry["name"])
    return out


def load_found(path: str | Path = FOUND_FILE) -> list[str]:
    """Register the found losses listed in ``path`` (see :func:`register_file`) and remember each one's
    provenance; returns their names."""
    path = Path(path)
    if not path.is_file():
        return []
    names_ = register_file(path)
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

__all__ = ["BUILTIN", "FOUND_FILE", "LossSpec", "found", "get", "is_registered", "load_found", "names",
           "provenance", "register", "register_file"]
