"""A loss as something to read, cite and paste: its simplified formula with its constants, LaTeX,
SymPy and standalone PyTorch source.

Every function takes what ``nlfs.Loss`` takes (a catalogue name, an expression string, an ``Expr``,
a ``LossSpec``) or an ``nlfs.Loss`` itself (its current constants are used). Constants are
substituted and the expression simplified exactly (``nlfs.expr.simplify``); the loss's ``scale`` is a
factor in front when it is not 1. Display forms round numbers; exports keep them exact.
"""

from __future__ import annotations

from .expr import Expr, expr_to_latex, expr_to_sympy, latex_number, round_numbers, simplify, sympy_number
from .losses import LossSpec, resolve_spec


def resolve(loss, constants: dict[str, float] | None = None) -> tuple[LossSpec, dict[str, float]]:
    """(spec, constant values) of anything ``nlfs.Loss`` accepts, or of an ``nlfs.Loss``."""
    # an nlfs.Loss is known by what it carries: importing nlfs._module here would close a circle
    if isinstance(getattr(loss, "spec", None), LossSpec) and hasattr(loss, "constant_values"):
        return loss.spec, loss.spec.values({**loss.constant_values, **(constants or {})})
    spec = resolve_spec(loss)
    return spec, spec.values(constants)


def simplified(loss, constants: dict[str, float] | None = None, scaled: bool = False) -> Expr:
    """The loss's expression with its constants substituted, simplified exactly; ``scaled``: times
    the loss's scale (what the kernels compute)."""
    spec, values = resolve(loss, constants)
    return simplify((spec.scaled_expr if scaled else spec.expr).substitute(values))


def formula(loss, constants: dict[str, float] | None = None, digits: int | None = 4) -> str:
    """The readable formula: simplified, constants as their values (``digits`` significant digits;
    None keeps them exact), the scale as a factor when it is not 1."""
    spec, _ = resolve(loss, constants)
    e = simplified(loss, constants)
    text = str(e if digits is None else round_numbers(e, digits))
    if spec.scale != 1.0:
        factor = repr(spec.scale) if digits is None else f"{spec.scale:.{digits}g}"
        text = f"{factor} * ({text})"
    return text


def to_latex(loss, constants: dict[str, float] | None = None, digits: int | None = None) -> str:
    """LaTeX for the loss's elementwise expression (matplotlib mathtext renders it). Numbers exact
    unless ``digits`` is given; ``\\epsilon = 10^{-7}`` in the protected operators."""
    spec, _ = resolve(loss, constants)
    body = expr_to_latex(simplified(loss, constants), digits)
    if spec.scale != 1.0:
        body = f"{latex_number(spec.scale, digits)} \\left({body}\\right)"
    return body


def to_sympy(loss, constants: dict[str, float] | None = None):
    """A SymPy expression for the loss's elementwise expression over ``y`` and ``p`` (see
    ``nlfs.expr.expr_to_sympy`` for how protected operators are written), the scale as a factor."""
    spec, _ = resolve(loss, constants)
    e = expr_to_sympy(simplified(loss, constants))
    return e if spec.scale == 1.0 else sympy_number(spec.scale) * e


def _doc(spec: LossSpec, values: dict[str, float], extra: str = "") -> str:
    lines = [formula(spec, values, digits=None)]
    over = "mean over classes" if spec.class_reduction == "element_mean" else "sum over classes"
    lines.append(f"{over}; y = target, p = softmax(logits).")
    if spec.source:
        lines.append(f"Source: {spec.source}")
    if extra:
        lines.append(extra)
    return "\n\n    ".join(lines)


def standalone_source(losses, title: str = "") -> str:
    """A standalone PyTorch module (no nlfs import) defining ``LOSSES``: name -> function
    ``(logits, target, reduction="mean") -> loss`` that computes what ``nlfs.Loss(loss,
    backend="torch")`` computes, value and gradient. ``losses``: a dict name -> loss, or a list of
    losses (named by their spec), or (loss, docstring) pairs as dict values."""
    from ._standalone import module_source

    items = losses.items() if isinstance(losses, dict) else ((None, x) for x in losses)
    entries = []
    for name, item in items:
        loss, extra = item if isinstance(item, tuple) else (item, "")
        spec, values = resolve(loss)
        _refuse_module_options(loss)
        entries.append((name or spec.name, simplified(loss, scaled=True), spec.class_reduction,
                        _doc(spec, values, extra)))
    return module_source(entries, title)


def _refuse_module_options(loss) -> None:
    """The standalone source is the loss itself; nn.CrossEntropyLoss-style options of an nlfs.Loss
    (weight, ignore_index, label_smoothing) are not written into it, so say so rather than drop them."""
    used = ["weight"] if getattr(loss, "weight", None) is not None else []
    used += [k for k, default in (("ignore_index", -100), ("label_smoothing", 0.0))
             if getattr(loss, k, default) != default]
    if used:
        raise ValueError(f"standalone source does not carry the nlfs.Loss options {used}; export the loss "
                         "without them and apply them in your code")


def to_torch_source(loss, name: str | None = None) -> str:
    """Standalone PyTorch source for one loss (see ``standalone_source``)."""
    spec, _ = resolve(loss)
    return standalone_source({name or spec.name: loss})


__all__ = ["formula", "resolve", "simplified", "standalone_source", "to_latex", "to_sympy", "to_torch_source"]
