"""Packed training: K (loss, init seed, learning rate) members of one configuration trained as one
network (``nlfs.models.PackedSurrogate``), so a GPU runs K small trainings with the kernel launches of one.

Why grouped convolutions rather than ``torch.func`` stacking (``functional_call`` + ``vmap``): the
members' losses are nlfs kernels (C++/Triton autograd functions) that do not batch under ``vmap``,
BatchNorm's running statistics are in-place buffer updates that ``vmap`` needs special handling
for, and a plain module with one (K, P) parameter tensor compiles (``torch.compile``, CUDA graphs)
like the single model. Grouped convolutions keep the members exactly independent: no operation mixes
two members' channels, so each member computes what it computes alone.

Seeds: ``cfg.seed`` sets the data order and augmentation, shared by all members (every member reads
the same batches in the same order: CE as a member is paired with the others for free); each
member's init seed (``seeds``) sets its initial weights. A member is the same training as
``train(loss, dataclasses.replace(cfg, init_seed=seed, lr=lr))``, to float tolerance.

Per member: its loss (fused nlfs kernel as ``train`` uses it), learning rate, ``grad_scale="ce"``
factor (measured on its own first-batch logits), divergence rule (``train``'s): a member that
diverges gets its failed result and leaves the pack (removed; in a compiled pack zeroed in place, so
the pack keeps its shape and is not recompiled); the others go on unchanged. The
optimizer is ``train``'s (SGD with Nesterov momentum, Adam, AdamW) written once over the (K, P)
parameter rows with a (K, 1) learning-rate column. Precision: ``train``'s (bf16 autocast on CUDA,
fp32 on CPU unless ``amp="bf16"``); fp16 with a loss scaler (GPUs without bf16) is not packed: a
shared scaler would couple the members.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from .._module import Loss
from ..models import PackedSurrogate, SurrogateNet, make_model
from ._config import TrainConfig, TrainResult
from ._errors import ConfigError, TrainingError
from ._loop import (
    _autocast,
    _check_collapse,
    _count_correct,
    _describe,
    _Failed,
    _LossWatch,
    _setup,
    _sync,
    _weights_digest,
    lr_factor,
    make_loss,
    rescale_to_ce,
    train,
)


def train_packed(losses, cfg: TrainConfig | None = None, seeds=None, lrs=None, constants=None,
                 **overrides) -> list[TrainResult]:
    """Train ``len(losses)`` members in one packed network; -> one :class:`TrainResult` per member,
    in order.

    ``losses``: what ``train`` takes, one per member. ``seeds``: each member's init seed (default:
    ``cfg.init_seed``, else ``cfg.seed``, for all); ``cfg.seed`` is the shared data order. ``lrs``:
    each member's learning rate (default ``cfg.lr``). ``constants``: one dict for all members or a
    list of one per member. Keyword ``overrides`` replace config fields. Only the ``surrogate``
    model packs. A member's ``wall_time`` is its share of the pack's time (the pack's wall time over
    its members), so the shares add up to the device time used."""
    cfg = TrainConfig() if cfg is None else cfg
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    cfg = cfg.resolved()
    losses = list(losses)
    k = len(losses)
    if k < 1:
        raise ValueError("train_packed needs at least one loss")
    seed0 = cfg.seed if cfg.init_seed is None else cfg.init_seed
    seeds = [seed0] * k if seeds is None else [int(s) for s in seeds]
    lrs = [cfg.lr] * k if lrs is None else [float(v) for v in lrs]
    consts = constants if isinstance(constants, (list, tuple)) else [constants] * k
    for name, v in (("seeds", seeds), ("lrs", lrs), ("constants", consts)):
        if len(v) != k:
            raise ValueError(f"train_packed: {len(v)} {name} for {k} losses")
    if not cfg.threads:
        return _train_packed(losses, cfg, seeds, lrs, consts)
    old = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        return _train_packed(losses, cfg, seeds, lrs, consts)
    finally:
        torch.set_num_threads(old)


def train_grid(losses, cfg: TrainConfig | None = None, seeds=(0,), constants=None, pack: int = 1,
               stop_on_divergence: bool = True) -> list[list[TrainResult]]:
    """Train every loss with every seed: -> ``results[i]`` the list of loss ``i``'s results, one per seed
    trained. Seed ``s`` is a training's ``seed`` (data order) and init seed, as ``train`` has it, so a
    result is ``train(loss, replace(cfg, seed=s))`` whatever ``pack``. ``pack`` > 1 trains the losses
    of one seed in packs of up to that many (``train_packed``: a GPU feature; on the CPU packing is
    slower, see ``bench/packed_training.py``); 1 trains them one at a time. ``stop_on_divergence``: a
    loss that diverges at one seed is not trained at the later ones (its list is shorter).
    ``constants``: one dict for all losses or a list of one per loss. The grid of a search's rung
    (candidates x paired seeds), of transfer and of elimination (seeds x losses)."""
    cfg = TrainConfig() if cfg is None else cfg
    losses = list(losses)
    consts = constants if isinstance(constants, (list, tuple)) else [constants] * len(losses)
    if len(consts) != len(losses):
        raise ValueError(f"train_grid: {len(consts)} constants for {len(losses)} losses")
    if int(pack) < 1:
        raise ValueError(f"train_grid: pack must be at least 1, got {pack}")
    results: list[list[TrainResult]] = [[] for _ in losses]
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, seed=int(seed), init_seed=None)
        todo = [i for i in range(len(losses))
                if not (stop_on_divergence and results[i] and results[i][-1].diverged)]
        for at in range(0, len(todo), int(pack)):
            group = todo[at:at + int(pack)]
            if len(group) == 1:
                out = [train(losses[group[0]], run_cfg, constants=consts[group[0]])]
            else:
                out = train_packed([losses[i] for i in group], run_cfg, constants=[consts[i] for i in group])
            for i, r in zip(group, out):
                results[i].append(r)
    return results


class _PackedOptimizer:
    """``train``'s optimizer (``nlfs.train._loop._optimizer``: SGD with Nesterov momentum and weight
    decay, Adam, AdamW) over a (K, P) parameter, with a (K, 1) float64 learning-rate column: the same
    arithmetic as ``torch.optim`` per member."""

    def __init__(self, cfg: TrainConfig, flat: torch.Tensor):
        self.kind, self.momentum, self.wd = cfg.optimizer, cfg.momentum, cfg.weight_decay
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def step(self, p: torch.Tensor, lr: torch.Tensor) -> None:
        g = p.grad
        self.steps += 1
        if self.kind == "sgd":
            if self.wd:
                g = g.add(p, alpha=self.wd)
            if self.momentum:
                buf = self.state.get("buf")
                if buf is None:
                    buf = self.state["buf"] = g.clone()
                else:
                    buf.mul_(self.momentum).add_(g)
                g = g.add(buf, alpha=self.momentum)  # Nesterov
            p.sub_(g * lr.to(p.dtype))
            return
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam(W) defaults, as train uses them
        wd = self.wd if self.kind == "adamw" else 0.0
        if wd:
            p.mul_((1 - lr * wd).to(p.dtype))
        if "avg" not in self.state:
            self.state["avg"], self.state["sq"] = torch.zeros_like(p), torch.zeros_like(p)
        avg, sq = self.state["avg"], self.state["sq"]
        avg.lerp_(g, 1 - beta1)
        sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1, bc2_sqrt = 1 - beta1 ** self.steps, (1 - beta2 ** self.steps) ** 0.5
        denom = (sq.sqrt() / bc2_sqrt).add_(eps)
        p.sub_((avg / denom) * (lr / bc1).to(p.dtype))

    def select(self, rows: torch.Tensor) -> None:
        self.state = {name: t[rows].clone() for name, t in self.state.items()}

    def retire(self, rows: torch.Tensor) -> None:
        for t in self.state.values():
            t[rows] = 0.0


_COMPILED: dict[tuple, tuple[PackedSurrogate, nn.Module, float]] = {}


def _packed_net(cfg: TrainConfig, run, members: list[SurrogateNet]):
    """-> (packed module, module to call, compile seconds). With ``compile=True`` the compiled pack is
    kept per configuration and K for the whole process (fresh weights copied in, as ``train`` does)."""
    device, ds = run.device, run.ds
    fresh = PackedSurrogate(members).to(device)
    if not cfg.compile:
        return fresh, fresh, 0.0
    key = (len(members), ds.shape, ds.num_classes, str(device), run.channels_last, run.amp, run.bs,
           cfg.eval_batch_size)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0].k == len(members):
        hit[0].load_state_dict(fresh.state_dict())
        return hit[0], hit[1], 0.0
    packed, compiled = fresh, torch.compile(fresh)
    saved = {n: t.detach().clone() for n, t in packed.state_dict().items()}
    fmt = torch.channels_last if run.channels_last else torch.contiguous_format
    t0 = time.perf_counter()
    packed.train()
    with _autocast(device, run.amp):  # compile the train and eval graphs now, not inside a timed run
        out = compiled(torch.randn(run.bs, *ds.shape, device=device).contiguous(memory_format=fmt))
    out.float().sum().backward()
    packed.eval()
    with torch.no_grad(), _autocast(device, run.amp):
        for n in (cfg.eval_batch_size, max(1, cfg.eval_batch_size // 2 + 1)):
            compiled(torch.randn(n, *ds.shape, device=device).contiguous(memory_format=fmt))
    packed.train()
    packed.flat.grad = None
    packed.load_state_dict(saved)
    _sync(device)
    hit = (packed, compiled, time.perf_counter() - t0)
    _COMPILED[key] = hit
    return hit


def _train_packed(losses, cfg: TrainConfig, seeds: list[int], lrs: list[float], consts) -> list[TrainResult]:
    run = _setup(cfg)
    device, amp, ds, splits, augment = run.device, run.amp, run.ds, run.splits, run.augment
    bs, spe, total, n_train = run.bs, run.spe, run.total, len(splits.train)
    if run.first != 0 or run.last != total or cfg.save_checkpoint:
        raise ConfigError("train_packed trains whole schedules: start_step, stop_step, stop_epoch and save_checkpoint "
                          "are for one training at a time (nlfs.train.train)")
    if amp == "fp16":
        raise ConfigError("train_packed: fp16 needs a loss scaler, which would couple the members; use "
                          "amp='bf16' or 'off' (or train one at a time with nlfs.train.train)")
    k = len(losses)

    fns, names, texts, backends = [], [], [], []
    for loss, c in zip(losses, consts):
        try:
            fn, name, text = make_loss(loss, cfg.backend, c)
            backend = fn.kernel_for(device)[0].name if isinstance(fn, Loss) else "custom"
        except Exception as err:
            raise ConfigError(f"loss {_describe(loss)[0]!r} could not be built: {type(err).__name__}: {err}") from err
        if isinstance(fn, nn.Module) and not isinstance(fn, Loss):
            fn.to(device)
        if cfg.grad_scale != "none" and not isinstance(fn, Loss):
            raise ValueError("grad_scale needs an nlfs loss (a name, expression or nlfs.Loss), "
                             f"not {type(fn).__name__}")
        fns.append(fn)
        names.append(name)
        texts.append(text)
        backends.append(backend)

    members, digests = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        m = make_model(cfg.model, ds.shape, ds.num_classes, cfg.checkpoint, cfg.dropout)
        if not isinstance(m, SurrogateNet):
            raise ConfigError(f"train_packed packs the surrogate CNN only, not model {cfg.model!r}: "
                              "train it one at a time (nlfs.train.train)")
        members.append(m)
        digests.append(_weights_digest(m))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    packed, net, compile_time = _packed_net(cfg, run, members)
    packed.train()
    opt = _PackedOptimizer(cfg, packed.flat)
    lr_base = torch.tensor(lrs, dtype=torch.float64, device=device).view(k, 1)
    shuffle = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)
    order_acc = torch.zeros((), dtype=torch.int64, device=device)
    cpu_logits = device.type == "cpu"

    alive: list[int | None] = list(range(k))  # member index of each row of the pack (None: retired)

    def live() -> list[tuple[int, int]]:
        return [(r, i) for r, i in enumerate(alive) if i is not None]

    watches = [_LossWatch(cfg.explode_factor) for _ in range(k)]
    history: list[list] = [[] for _ in range(k)]
    val_acc, best_val, factors = [0.0] * k, [0.0] * k, [1.0] * k
    epoch_stats: list[tuple[float, float] | None] = [None] * k
    results: list[TrainResult | None] = [None] * k
    base = run.base

    window = torch.zeros(k, dtype=torch.float32, device=device)
    epoch_loss = torch.zeros(k, dtype=torch.float64, device=device)
    epoch_correct = torch.zeros(k, dtype=torch.int64, device=device)
    epoch_steps = step = 0
    vals = None

    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not cfg.progress, delay=2.0, unit="step", leave=False,
               desc=f"pack of {k} {ds.name}/{cfg.model}")

    def elapsed() -> float:
        _sync(device)
        return time.perf_counter() - t0

    def fail(row: int, reason: str, wall: float, loss_now: float | None) -> None:
        i = alive[row]
        results[i] = TrainResult(**dict(
            base, val_acc=val_acc[i], best_val_acc=best_val[i], test_acc=None, final_train_loss=loss_now,
            train_acc=None, loss=names[i], loss_text=texts[i], backend=backends[i], diverged=True,
            reason=reason, steps=step, epochs=step / spe, wall_time=wall / k, compile_time=compile_time,
            history=history[i], lr=lrs[i], grad_scale_factor=factors[i],
            order_digest=f"{digests[i]}-{order_acc.item() & (2**63 - 1):x}"))

    def drop(failed: dict[int, str]) -> None:
        nonlocal window, epoch_loss, epoch_correct, lr_base, alive, vals
        wall = elapsed()
        now = [None] * len(alive) if vals is None else vals.tolist()
        for row, reason in failed.items():
            fail(row, reason, wall, now[row])
        if cfg.compile:
            # A compiled pack keeps its shape (a new K would recompile it): the failed rows are
            # retired, their weights and state zeroed (nothing non-finite left in the network) and
            # their learning rate 0; their compute is wasted until the pack ends.
            rows = torch.tensor(list(failed), dtype=torch.long, device=device)
            packed.retire(list(failed))
            opt.retire(rows)
            lr_base[rows] = 0.0
            for row in failed:
                alive[row] = None
            return
        keep = [r for r in range(len(alive)) if r not in failed]
        alive = [alive[r] for r in keep]
        if not keep:
            return
        rows = torch.tensor(keep, dtype=torch.long, device=device)
        packed.select(keep)
        opt.select(rows)
        window, epoch_loss, epoch_correct, lr_base = window[rows], epoch_loss[rows], epoch_correct[rows], lr_base[rows]
        if vals is not None:
            vals = vals[rows]

    _sync(device)
    t0 = time.perf_counter()
    try:
        while step < total and live():
            order = splits.train[torch.randperm(n_train, device=device, generator=shuffle)]
            epoch_loss.zero_()
            epoch_correct.zero_()
            epoch_steps = 0
            for b in range(spe):
                gi = order[b * bs:(b + 1) * bs]
                order_acc.mul_(1_000_003).add_(gi.sum() + gi[0] * 7919)
                x, target = augment(splits.images[gi], splits.labels[gi])
                if run.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    logits = net(x)  # (K, B, C)
                if cpu_logits:
                    logits = logits.float()
                if step == 0 and cfg.grad_scale == "ce":
                    for r, i in live():
                        fns[i], factors[i] = rescale_to_ce(fns[i], logits[r].detach(), target)
                values = []
                for r, i in enumerate(alive):
                    if i is None:  # retired
                        values.append(torch.zeros((), device=device))
                        continue
                    try:
                        value = fns[i](logits[r], target)
                        if not isinstance(value, torch.Tensor):
                            raise TypeError(f"the loss returned {type(value).__name__}, not a tensor")
                    except Exception as err:
                        raise TrainingError(f"the loss {names[i]!r} raised {type(err).__name__} at step {step}: "
                                            f"{err}") from err
                    values.append(value.mean() if value.dim() else value)
                vals = torch.stack(values)
                packed.flat.grad = None
                try:
                    vals.sum().backward()
                except Exception as err:
                    raise TrainingError(f"the backward pass of a loss raised {type(err).__name__} at step "
                                        f"{step}: {err}") from err
                opt.step(packed.flat, lr_base * lr_factor(step, total, run.warmup, cfg.schedule))
                vals = vals.detach().float()
                window += vals
                epoch_loss += vals
                hard = target if target.dim() == 1 else target.argmax(1)
                epoch_correct += (logits.detach().argmax(-1) == hard).sum(-1)
                epoch_steps += 1
                step += 1
                bar.update(1)
                failed: dict[int, str] = {}
                if step % run.check_every == 0 or step == total:
                    means = window.tolist()
                    window.zero_()
                    for r, i in live():
                        try:
                            watches[i].check(means[r] / ((step - 1) % run.check_every + 1), step)
                        except _Failed as err:
                            failed[r] = str(err)
                if step % run.eval_every == 0 or step == total:
                    correct, finite = _count_correct(net, packed, splits, splits.val, augment, device, amp,
                                                     run.channels_last, cfg.eval_batch_size)
                    correct, finite = correct.tolist(), finite.tolist()
                    for r, i in live():
                        if r in failed:
                            continue
                        if not finite[r]:
                            failed[r] = "non-finite logits at evaluation"
                            continue
                        val_acc[i] = correct[r] / max(1, len(splits.val))
                        history[i].append((step, val_acc[i]))
                        try:
                            _check_collapse(best_val[i], val_acc[i], ds.num_classes, step)
                        except _Failed as err:
                            failed[r] = str(err)
                        best_val[i] = max(best_val[i], val_acc[i])
                if failed:
                    drop(failed)
                    if not live():
                        break
                if step >= total:
                    break
            if epoch_steps and live():
                el, ec = epoch_loss.tolist(), epoch_correct.tolist()
                for r, i in live():
                    epoch_stats[i] = (el[r] / epoch_steps, ec[r] / (epoch_steps * bs))
    finally:
        bar.close()
    if live() and splits.test is not None:
        correct, finite = _count_correct(net, packed, splits, splits.test, augment, device, amp,
                                         run.channels_last, cfg.eval_batch_size)
        correct, finite = correct.tolist(), finite.tolist()
        test_acc = {i: correct[r] / max(1, len(splits.test)) for r, i in live() if finite[r]}
        bad = {r: "non-finite logits at evaluation" for r, _ in live() if not finite[r]}
        if bad:
            drop(bad)
    else:
        test_acc = {}
    wall = elapsed()
    order = f"{order_acc.item() & (2**63 - 1):x}"
    for _, i in live():
        final_loss, train_acc = epoch_stats[i] if epoch_stats[i] is not None else (None, None)
        results[i] = TrainResult(**dict(
            base, val_acc=val_acc[i], best_val_acc=best_val[i], test_acc=test_acc.get(i),
            final_train_loss=final_loss, train_acc=train_acc, steps=step, epochs=step / spe,
            wall_time=wall / k, loss=names[i], loss_text=texts[i], backend=backends[i],
            compile_time=compile_time, history=history[i], lr=lrs[i], grad_scale_factor=factors[i],
            order_digest=f"{digests[i]}-{order}"))
    return results

