"""Loss-shape plots: how a loss treats the target class and the others, beside cross-entropy.

Four panels over p in (0, 1): the loss's elementwise term at the target class (y = 1) and at a
non-target class (y = 0), and its derivative with respect to that probability. Each curve is the
term's contribution to the per-sample loss, the loss's scale included (an ``element_mean`` loss's
term is divided by the number of classes). ``log(p)`` and ``z`` are read as ``log(p)`` (logits up to
a shift). Values follow the ops table's protected rules, in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._export import formula, resolve, simplified

PANELS = ("loss at the target class (y = 1)", "loss at a non-target class (y = 0)",
          "dloss/dp at the target class (y = 1)", "dloss/dp at a non-target class (y = 0)")


def shape(loss, p: np.ndarray, y: float, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(term, d term / d p) of ``loss`` at target value ``y`` over the probabilities ``p``."""
    import torch

    from .expr import MAXV, OPS, TorchMath

    spec, _ = resolve(loss)
    expr = simplified(loss, scaled=True)
    over_classes = sorted({n.op for n in expr.nodes() if n.op not in OPS and n.args})
    if over_classes:
        raise ValueError(f"{spec.name}: {', '.join(over_classes)} sums over a row's classes, so the loss has no "
                         "shape as a function of one class's p and y to plot")
    m = TorchMath()
    pt = torch.tensor(np.asarray(p, dtype=np.float64), requires_grad=True)
    leaves = {"p": pt, "y": torch.full_like(pt, float(y)), "C": torch.full_like(pt, float(num_classes)),
              "z": torch.log(pt)}
    vals: dict = {}
    for node in expr.nodes():
        if node.op == "num":
            v = torch.full_like(pt, node.value)
        elif node.op == "log" and node.args[0].op == "p":
            v = torch.log(pt)  # exact log-softmax, read at p
        elif not node.args:
            v = leaves[node.op]
        else:
            spec_op = OPS[node.op]
            v = spec_op.forward(m, *[vals[a] for a in node.args])
            if not spec_op.bounded:
                v = v.clamp(-MAXV, MAXV)
        vals[node] = v
    out = vals[expr]
    if spec.class_reduction == "element_mean":
        out = out / num_classes
    grad = torch.autograd.grad(out.sum(), pt, allow_unused=True)[0] if out.requires_grad else None
    value = out.detach().expand_as(pt).numpy().copy()
    return value, (np.zeros_like(value) if grad is None else grad.numpy().copy())


def _robust_limits(ax) -> None:
    ys = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    ys = ys[np.isfinite(ys)]
    if ys.size == 0:
        return
    lo, hi = np.percentile(ys, [3, 100])
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo > 100.0:  # a loss on a scale of its own (a pdiv by 0, say): log scale past +-1
        ax.set_yscale("symlog", linthresh=1.0)
        return
    pad = 0.08 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + pad)


def _label(name: str, loss, width: int = 70) -> str:
    text = f"{name}: {formula(loss)}"
    return text if len(text) <= width else text[:width - 3] + "..."


def plot_loss_shapes(losses, path: str | Path | None = None, ce: bool = True, num_classes: int = 10,
                     points: int = 400):
    """Plot the shapes of ``losses`` (a dict name -> loss, or a list of anything ``nlfs.Loss``
    takes) beside cross-entropy; write a PNG to ``path`` when given. Returns the matplotlib Figure:
    four panels (see ``PANELS``), one curve per loss in each."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(losses.items()) if isinstance(losses, dict) else [(resolve(x)[0].name, x) for x in losses]
    if ce:
        items = [("CE", "CE")] + items
    p = np.linspace(0.0, 1.0, points + 2)[1:-1]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for k, (name, loss) in enumerate(items):
        style = dict(color="k", ls="--", lw=1.2) if ce and k == 0 else dict(color=f"C{k}", lw=1.5)
        for col, y in enumerate((1.0, 0.0)):
            value, grad = shape(loss, p, y, num_classes)
            axes[0, col].plot(p, value, label=_label(name, loss), **style)
            axes[1, col].plot(p, grad, **style)
    for ax, title in zip(axes.flat, PANELS):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat:
        _robust_limits(ax)  # CE's -1/p would flatten every other curve
    for ax in axes[1]:
        ax.set_xlabel("p (softmax probability of that class)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=1, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.02 + 0.027 * len(items), 1, 1))
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


__all__ = ["PANELS", "plot_loss_shapes", "shape"]
