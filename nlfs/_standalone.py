"""Standalone PyTorch source for losses: plain torch, no nlfs import.

Each op a loss uses becomes a small function whose body is the op's maths from the ops table, spelled
in torch (``nlfs.expr._emit.SymMath``), wrapped as the torch backend evaluates it: numbers become
tensors, an unbounded op's value is clamped to +-1e10 and every value's adjoint is clamped likewise.
So a loss computes what ``nlfs.Loss(spec, backend="torch")`` computes, value and gradient. A loss is
a function ``(logits, target, reduction="mean")``; ``target`` holds class indices (N,) or class
probabilities (N, C).
"""

from __future__ import annotations

import keyword

from .expr import CLASS_OPS, MAXV, OPS, Expr, Sym, SymMath, forward_src

_TORCH = {
    "abs": "torch.abs({0})", "sign": "torch.sign({0})", "exp": "torch.exp({0})", "log": "torch.log({0})",
    "log1p": "torch.log1p({0})", "sqrt": "torch.sqrt({0})", "sin": "torch.sin({0})", "cos": "torch.cos({0})",
    "tanh": "torch.tanh({0})", "sinh": "torch.sinh({0})", "asinh": "torch.asinh({0})",
    "atan": "torch.atan({0})", "erf": "torch.special.erf({0})", "erfc": "torch.special.erfc({0})",
    "sigmoid": "torch.sigmoid({0})", "i0": "torch.special.i0({0})", "i0e": "torch.special.i0e({0})",
    "i1": "torch.special.i1({0})", "i1e": "torch.special.i1e({0})",
    "maximum": "_maximum({0}, {1})", "minimum": "_minimum({0}, {1})", "where": "_where({0}, {1}, {2})",
    "sum_classes": "{0}.sum(dim=-1, keepdim=True).expand_as({0})",
}
_BUILTINS = {"abs", "max", "min", "pow"}


class _TorchSource(SymMath):
    def __init__(self):
        super().__init__(_TORCH, literal=repr)

    def clamp(self, x, lo, hi):  # torch.clamp, as the backend's TorchMath: its gradient rule at the bounds
        lo_s = "None" if lo is None else self.lift(lo).src
        hi_s = "None" if hi is None else self.lift(hi).src
        return Sym(f"torch.clamp({self.lift(x).src}, {lo_s}, {hi_s})", self)


def helper_name(op: str) -> str:
    return op + "_" if op in _BUILTINS or keyword.iskeyword(op) else op


def op_source(op: str) -> str:
    """``def`` of the helper for one op of the table."""
    spec = OPS.get(op) or CLASS_OPS[op]
    params = ["a", "b"] if spec.arity == 2 else ["x"]
    body = forward_src(_TorchSource(), op, params)
    doc = spec.doc.replace('"', "'")
    return (f"@_op(bounded={spec.bounded})\ndef {helper_name(op)}({', '.join(params)}):\n"
            f'    """{doc}"""\n    return {body}\n')


_PRELUDE = '''import torch

MAXV = {maxv!r}  # every value and every adjoint is clamped to +-MAXV (no NaN or Inf for finite input)


def _limit(dtype):
    return min(MAXV, torch.finfo(dtype).max)


def _clamp_grad(g):
    lim = _limit(g.dtype)
    return g.clamp(-lim, lim)


def _track(v):
    if v.requires_grad:
        v.register_hook(_clamp_grad)
    return v


def _op(bounded):
    """Numbers become tensors; an unbounded op's value is clamped; the adjoint is clamped."""
    def wrap(fn):
        def op(*args):
            ref = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if ref is None:
                ref = torch.zeros(())
            args = [a if isinstance(a, torch.Tensor) else torch.full_like(ref, a) for a in args]
            v = fn(*args)
            if not bounded:
                lim = _limit(v.dtype)
                v = v.clamp(-lim, lim)
            return _track(v)
        op.__name__, op.__doc__ = fn.__name__, fn.__doc__
        return op
    return wrap


def _where(c, a, b):
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = torch.full_like(c, a, dtype=torch.get_default_dtype()) if c.dtype == torch.bool else a
    return torch.where(c, a, b)


def _maximum(a, b):
    if not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return torch.maximum(a, b)


def _minimum(a, b):
    if not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return torch.minimum(a, b)


def _leaves(logits, target):
    """(y, p, log_p, z, C): targets as probabilities; softmax and exact log-softmax of the logits, in
    float32 (float64 logits stay float64)."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.to(dtype)
    n, c = z.shape
    if target.dim() == 1:
        y = torch.nn.functional.one_hot(target.long(), c).to(dtype)
    else:
        y = target.to(dtype)
    p = _track(torch.softmax(z, dim=1))
    log_p = _track(torch.log_softmax(z, dim=1))
    return y, p, log_p, _track(z.view_as(z)), torch.full_like(z, float(c))


def _reduce(f, z, over_classes, reduction):
    if not isinstance(f, torch.Tensor) or f.shape != z.shape:  # a loss that is a constant
        f = torch.as_tensor(f, dtype=z.dtype, device=z.device).expand_as(z)
    if z.requires_grad and not f.requires_grad:  # a loss that does not depend on the logits: gradient 0
        f = f + 0.0 * z
    rows = f.mean(dim=1) if over_classes == "element_mean" else f.sum(dim=1)
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows
'''


def _identifier(name: str, taken: set[str]) -> str:
    from .losses import python_name  # the function is named as best_losses.py names the loss's class

    ident = python_name(name)
    base, k = ident, 2
    while ident in taken:
        ident, k = f"{base}_{k}", k + 1
    taken.add(ident)
    return ident


def _body(expr: Expr) -> tuple[list[str], str]:
    """(lines binding shared subexpressions, the expression's source)."""
    parents: dict[Expr, int] = {}
    for node in expr.nodes():
        for a in node.args:
            parents[a] = parents.get(a, 0) + 1
    src: dict[Expr, str] = {}
    lines: list[str] = []
    for node in expr.nodes():
        if node.op == "log" and node.args[0].op == "p":
            src[node] = "log_p"  # lowering evaluates log(p) as exact log-softmax
            continue
        if node.op == "num":
            src[node] = repr(node.value)
            continue
        if node.op == "const":
            raise ValueError(f"substitute the value of constant {node.value!r} first")
        if not node.args:
            src[node] = node.op
            continue
        text = f"{helper_name(node.op)}({', '.join(src[a] for a in node.args)})"
        if parents.get(node, 0) > 1 and node is not expr:
            lines.append(f"    t{len(lines)} = {text}")
            text = f"t{len(lines) - 1}"
        src[node] = text
    return lines, src[expr]


def module_source(losses: list[tuple[str, Expr, str, str]], title: str = "") -> str:
    """A standalone module defining ``LOSSES``: name -> function. ``losses``: (name, expression with
    every constant substituted and the scale folded in, class reduction, docstring)."""
    used = sorted({n.op for _, e, _, _ in losses for n in e.nodes()  # log(p) is log_p
                   if (n.op in OPS or n.op in CLASS_OPS) and not (n.op == "log" and n.args[0].op == "p")})
    out = [f'"""{title or "Losses exported by nlfs."}\n\nPlain PyTorch, no nlfs needed. LOSSES maps each '
           "loss's name to a function\n(logits, target, reduction='mean') -> loss; target holds class "
           'indices (N,) or\nclass probabilities (N, C). The protected rules of the ops used are '
           'written out below."""', "", _PRELUDE.format(maxv=MAXV)]
    out += ["", "# ---- the ops these losses use, as nlfs's ops table defines them ----", ""]
    out += [op_source(op) + "\n" for op in used]
    out += ["# ---- the losses ----", ""]
    taken = {helper_name(op) for op in OPS | CLASS_OPS} | {"torch", "MAXV", "LOSSES", "y", "p", "z", "C", "log_p"}
    names: list[tuple[str, str]] = []
    for name, expr, class_reduction, doc in losses:
        fn = _identifier(name, taken)
        names.append((name, fn))
        lines, text = _body(expr)
        doc = doc.replace("\\", "\\\\").replace('"""', "'''")
        out += [f"def {fn}(logits, target, reduction=\"mean\"):", f'    """{doc}"""',
                "    y, p, log_p, z, C = _leaves(logits, target)", *lines, f"    f = {text}",
                f"    return _reduce(f, z, {class_reduction!r}, reduction)", "", ""]
    out.append("LOSSES = {" + ", ".join(f"{n!r}: {fn}" for n, fn in names) + "}")
    return "\n".join(out) + "\n"


__all__ = ["helper_name", "module_source", "op_source"]
