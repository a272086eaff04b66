"""The training loop: whole dataset on the device, batches as index slices, loss outside the model.

Memory format: channels_last on every device (on the CPU it beat contiguous tensors for every model
``bench/memory_format.py`` times). Precision: on CUDA, bf16 autocast (fp16 + GradScaler where bf16 is
unsupported). On CPU the default is fp32, although bf16 autocast trains faster on a CPU with native
bf16 such as this project's (the ``sequential`` rows of bench/results/packed_training_cpu.md): search
compares losses by small accuracy differences and bf16 adds noise (and is slower on CPUs without native
bf16); ``amp="bf16"`` opts in. The loss itself always gets fp32 logits on CPU.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .._module import Loss
from ..data import Augment, load_dataset, make_splits, with_label_noise
from ..losses import resolve_spec
from ..models import make_model
from ._config import TrainConfig, TrainResult
from ._errors import ConfigError, TrainingError


class _Failed(Exception):
    """Internal: stop training, report a failed evaluation with this reason."""


# ---------------------------------------------------------------- device / precision
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------- loss
def make_loss(loss, backend: str = "auto", constants: dict | None = None):
    """-> (callable, name, text). ``loss``: an ``nlfs.Loss``, a catalogue name or expression string,
    an ``Expr``/``LossSpec``, or any ``nn.Module``/callable ``(logits, target) -> scalar``."""
    if isinstance(loss, Loss):
        if constants:
            loss.set_constants(**constants)
        return loss, loss.spec.name, loss.spec.text
    if isinstance(loss, (nn.Module,)) or (callable(loss) and not isinstance(loss, str)):
        name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
        return loss, str(name), ""
    fn = Loss(loss, backend=backend, constants=constants)
    return fn, fn.spec.name, fn.spec.text


def _describe(loss) -> tuple[str, str]:
    try:
        spec = resolve_spec(loss)
        return spec.name, spec.text
    except Exception:
        return (loss if isinstance(loss, str) else type(loss).__name__), ""


def gradient_magnitude(loss_fn, logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean |dL/dlogits| of ``loss_fn`` at ``logits`` (float64 on the host; no model involved)."""
    z = logits.detach().double().cpu().requires_grad_(True)
    value = loss_fn(z, target.cpu())
    (grad,) = torch.autograd.grad(value.mean() if value.dim() else value, z)
    return float(grad.abs().mean())


def rescale_to_ce(loss_fn: Loss, logits: torch.Tensor, target: torch.Tensor,
                  bounds: tuple[float, float] = (1e-3, 1e3)) -> tuple[Loss, float]:
    """``loss_fn`` multiplied by the factor that gives it cross-entropy's mean |dL/dlogits| at these
    logits (a fair learning rate for a loss whose gradient is 10x smaller than CE's), and the factor.
    The factor is clamped to ``bounds``; a loss with no finite gradient keeps factor 1 (it fails
    on its own in training)."""
    ce = gradient_magnitude(nn.CrossEntropyLoss(), logits, target)
    own = gradient_magnitude(Loss(loss_fn.spec, backend="torch", constants=loss_fn.constant_values),
                             logits, target)
    if not (math.isfinite(own) and own > 0 and math.isfinite(ce)):
        return loss_fn, 1.0
    factor = min(max(ce / own, bounds[0]), bounds[1])
    import dataclasses

    spec = dataclasses.replace(loss_fn.spec, scale=loss_fn.spec.scale * factor)
    scaled = Loss(spec, backend=loss_fn.backend_name, reduction=loss_fn.reduction,
                  constants=loss_fn.constant_values)
    return scaled, factor


def _weights_digest(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------- model cache (torch.compile)
_COMPILED: dict[tuple, tuple[nn.Module, nn.Module, float]] = {}


def _model_for(cfg: TrainConfig, ds, device: torch.device, channels_last: bool, amp: str, bs: int):
    """-> (module to train, module to call, compile seconds). The model is initialised from the
    global RNG (seeded by the caller). With ``compile=True`` one compiled module per configuration is
    kept for the whole process: each run copies its fresh initial weights into it, so the network is
    compiled (and warmed up) once, and changing the loss never recompiles it."""
    fresh = make_model(cfg.model, ds.shape, ds.num_classes, cfg.checkpoint, cfg.dropout)
    channels_last = channels_last and not ds.features
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if not cfg.compile:
        model = fresh.to(device=device, memory_format=fmt)
        return model, model, 0.0
    key = (cfg.model.lower(), ds.shape, ds.num_classes, str(device), channels_last,
           cfg.dropout, cfg.checkpoint, amp, bs, cfg.eval_batch_size)
    hit = _COMPILED.get(key)
    if hit is None:
        model = fresh.to(device=device, memory_format=fmt)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        # Warm-up: compile the train (forward + backward) and eval graphs now, not inside a timed run.
        x = torch.randn(bs, *ds.shape, device=device).contiguous(memory_format=fmt)
        model.train()
        with _autocast(device, amp):
            out = compiled(x)
        out.float().sum().backward()
        model.eval()
        with torch.no_grad(), _autocast(device, amp):
            # two sizes: the full evaluation batch and a ragged last one (compiled dynamic once)
            for n in (cfg.eval_batch_size, max(1, cfg.eval_batch_size // 2 + 1)):
                compiled(torch.randn(n, *ds.shape, device=device).contiguous(memory_format=fmt))
        model.zero_grad(set_to_none=True)
        _sync(device)
        hit = (model, compiled, time.perf_counter() - t0)
        _COMPILED[key] = hit
        model.load_state_dict(fresh.state_dict())
        return hit
    model, compiled, _ = hit
    model.load_state_dict(fresh.state_dict())  # in place: the compiled graph stays valid
    return model, compiled, 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- schedule
def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr)


# ---------------------------------------------------------------- evaluation
# On the CPU a larger evaluation batch runs slower per image (its activations leave the cache) and gives
# the same logits (float rounding aside), so evaluation there goes in slices of at most this many images.
CPU_EVAL_BATCH = 256

@torch.no_grad()
def evaluate(net: nn.Module, model: nn.Module, splits, idx: torch.Tensor, augment: Augment,
             device: torch.device, amp: str, channels_last: bool, batch: int = 1024) -> float:
    """Accuracy on the images ``splits.images[idx]`` (one host sync). Raises ``_Failed`` on
    non-finite logits."""
    correct, finite = _count_correct(net, model, splits, idx, augment, device, amp, channels_last, batch)
    if not bool(finite):
        raise _Failed("non-finite logits at evaluation")
    return correct.item() / max(1, len(idx))


@torch.no_grad()
def _count_correct(net: nn.Module, model: nn.Module, splits, idx: torch.Tensor, augment: Augment,
                   device: torch.device, amp: str, channels_last: bool, batch: int):
    """-> (correct predictions, all logits finite) as device tensors; per member, shape (K,), when
    ``net`` returns a pack's (K, B, C) logits, scalars for (B, C)."""
    if device.type == "cpu" and net is model:  # not compiled (a compiled net keeps the sizes it was built for)
        batch = min(batch, CPU_EVAL_BATCH)
    model.eval()
    correct = bad = None
    for i in range(0, len(idx), batch):
        gi = idx[i:i + batch]
        x = augment.eval(splits.images[gi])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = net(x)
        b = ~torch.isfinite(logits).flatten(-2).all(-1)
        c = (logits.argmax(-1) == splits.labels[gi]).sum(-1)
        bad, correct = (b, c) if bad is None else (bad | b, correct + c)
    model.train()
    if correct is None:  # no images: nothing wrong, nothing right
        return torch.zeros((), dtype=torch.int64, device=device), torch.ones((), dtype=torch.bool, device=device)
    return correct, ~bad


# ---------------------------------------------------------------- divergence rule
class _LossWatch:
    """The divergence rule on the training loss, fed the mean loss since the last check: NaN/Inf, or
    |loss| above ``explode_factor`` x max(|first checked loss|, 1) three checks running (one spiky
    batch is not a divergence). ``check`` raises ``_Failed`` with the reason."""

    def __init__(self, explode_factor: float):
        self.explode_factor = explode_factor
        self.first: float | None = None
        self.high = 0

    def check(self, s: float, step: int) -> None:
        if not math.isfinite(s):
            raise _Failed(f"loss is {'NaN' if math.isnan(s) else 'Inf'} by step {step}")
        if self.first is None:
            self.first = s
        elif abs(s) > self.explode_factor * max(abs(self.first), 1.0):
            self.high += 1
            if self.high >= 3:
                raise _Failed(f"loss exploded to {s:.4g} by step {step} (first {self.first:.4g})")
        else:
            self.high = 0


def _check_collapse(best_val: float, val_acc: float, num_classes: int, step: int) -> None:
    """Raise ``_Failed`` when validation accuracy fell from well above chance back to chance."""
    chance = 1.0 / num_classes
    if best_val >= chance + 0.3 and val_acc <= 1.5 * chance:
        raise _Failed(f"validation accuracy collapsed from {best_val:.3f} to {val_acc:.3f} by step {step}")


# ---------------------------------------------------------------- train
def train(loss="CE", cfg: TrainConfig | None = None, constants: dict | None = None,
          **overrides) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` with ``loss`` and return a :class:`TrainResult`.

    ``loss`` is a catalogue name (``"NGL"``), an expression string, a ``LossSpec``/``Expr``, an
    ``nlfs.Loss`` or any ``(logits, target) -> scalar`` callable. ``constants`` overrides the loss's
    constants. Keyword ``overrides`` replace config fields (``train("CE", epochs=2)``).

    A numerical failure of the loss (NaN/Inf or exploding loss, collapsed accuracy) gives
    ``diverged=True`` with ``reason``; it never raises for that. Everything else raises: a loss that
    cannot be built or whose backend is missing (:class:`ConfigError`), an exception from the loss
    during training (:class:`TrainingError`), data and configuration errors.
    """
    cfg = TrainConfig() if cfg is None else cfg
    if overrides:
        import dataclasses

        cfg = dataclasses.replace(cfg, **overrides)
    cfg = cfg.resolved()
    if not cfg.threads:
        return _train(loss, cfg, constants)
    old = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        return _train(loss, cfg, constants)
    finally:
        torch.set_num_threads(old)


@dataclass
class _Setup:
    """What a training needs before its model: device, precision, data, splits, budget, augmentation
    and the result fields they fix (``base``); one for ``train`` and ``train_packed``."""

    device: torch.device
    amp: str
    channels_last: bool
    ds: object
    splits: object
    bs: int
    spe: int
    total: int
    first: int  # this run's phase of the schedule: steps first..last of total
    last: int
    warmup: int
    eval_every: int
    check_every: int
    augment: Augment
    base: dict


def _setup(cfg: TrainConfig) -> _Setup:
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    channels_last = True if cfg.channels_last is None else cfg.channels_last

    ds = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.resize)
    channels_last = channels_last and not ds.features
    splits = make_splits(ds, cfg.val_size, cfg.train_size, cfg.split_seed, device, cfg.evaluate_test)
    splits = with_label_noise(splits, cfg.label_noise, ds.num_classes, cfg.split_seed, cfg.label_noise_kind)
    n_train = len(splits.train)
    bs = min(cfg.batch_size, n_train)
    spe = n_train // bs  # drop the ragged last batch: no tiny BatchNorm batches
    total = cfg.steps if cfg.steps is not None else cfg.epochs * spe
    if total < 1:
        raise ValueError("the budget gives no training steps (epochs/steps too small)")
    # this run's phase of the schedule
    first = cfg.start_step
    last = min(total, cfg.stop_step or total, total if cfg.stop_epoch is None else cfg.stop_epoch * spe)
    if first >= last:
        end = "" if cfg.stop_epoch is None else f" (stop_epoch {cfg.stop_epoch} ends it at step {last})"
        raise ValueError(f"start_step {first} leaves no steps of a {total}-step budget{end}")
    eval_every = cfg.eval_every or spe
    check_every = cfg.check_every or (1 if device.type == "cpu" else 25)
    warmup = max(1, int(round(cfg.warmup * total)) if cfg.warmup < 1 else int(cfg.warmup))
    warmup = min(warmup, total)

    augment = Augment(cfg.augment, ds.mean, ds.std, ds.num_classes, ds.shape[-1], device, cfg.seed,
                      features=ds.features, **cfg.augment_params)

    base = dict(steps=0, epochs=0.0, wall_time=0.0, device=str(device), dataset=ds.name, model=cfg.model,
                augment=augment.name, seed=cfg.seed, train_size=n_train, val_size=len(splits.val),
                test_size=0 if splits.test is None else len(splits.test), batch_size=bs, lr=cfg.lr,
                optimizer=cfg.optimizer, amp=amp, compiled=cfg.compile, data_source=ds.source)
    return _Setup(device, amp, channels_last, ds, splits, bs, spe, total, first, last, warmup, eval_every,
                  check_every, augment, base)


def _train(loss, cfg: TrainConfig, constants: dict | None) -> TrainResult:
    run = _setup(cfg)
    device, amp, channels_last, ds, splits, augment = (run.device, run.amp, run.channels_last, run.ds,
                                                        run.splits, run.augment)
    bs, spe, total, warmup, base = run.bs, run.spe, run.total, run.warmup, run.base
    first, last = run.first, run.last
    eval_every, check_every, n_train = run.eval_every, run.check_every, len(splits.train)

    def failed(reason, name, text, backend, **kw):
        fields = dict(base, val_acc=0.0, best_val_acc=0.0, test_acc=None, final_train_loss=None,
                      train_acc=None, loss=name, loss_text=text, backend=backend, diverged=True,
                      reason=reason)
        fields.update(kw)
        return TrainResult(**fields)

    # The loss: a failure to build it or to find its backend is a configuration error, not a
    # divergence (it would fail for every seed and every setting alike).
    try:
        loss_fn, loss_name, loss_text = make_loss(loss, cfg.backend, constants)
        backend_name = loss_fn.kernel_for(device)[0].name if isinstance(loss_fn, Loss) else "custom"
    except Exception as err:
        name, _ = _describe(loss)
        raise ConfigError(f"loss {name!r} could not be built: {type(err).__name__}: {err}") from err
    if isinstance(loss_fn, nn.Module) and not isinstance(loss_fn, Loss):
        loss_fn.to(device)  # a custom module's own parameters/buffers; nlfs.Loss keeps its constants
        # on the CPU on purpose (backends read them on the host), so it is not moved.

    if cfg.grad_scale != "none" and not isinstance(loss_fn, Loss):
        raise ValueError("grad_scale needs an nlfs loss (a name, expression or nlfs.Loss), "
                         f"not {type(loss_fn).__name__}")
    torch.manual_seed(cfg.seed if cfg.init_seed is None else cfg.init_seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, net, compile_time = _model_for(cfg, ds, device, channels_last, amp, bs)
    digest = _weights_digest(model)
    order_acc = torch.zeros((), dtype=torch.int64, device=device)
    grad_factor = 1.0
    model.train()
    opt = _optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if (amp == "fp16" and device.type == "cuda") else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(first + s, total, warmup, cfg.schedule))
    shuffle = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)
    for _ in range(first // spe):  # the epochs before this phase: their data order, not trained
        torch.randperm(n_train, device=device, generator=shuffle)
    skip = first % spe  # batches of the first epoch already trained
    cpu_logits = device.type == "cpu"

    from tqdm.auto import tqdm

    bar = tqdm(total=last - first, disable=not cfg.progress, delay=2.0, unit="step", leave=False,
               desc=f"{loss_name} {ds.name}/{cfg.model}")
    history: list = []
    val_acc = best_val = 0.0
    reason = ""
    watch = _LossWatch(cfg.explode_factor)
    window = torch.zeros((), dtype=torch.float32, device=device)  # loss sum since the last check
    epoch_loss = torch.zeros((), dtype=torch.float64, device=device)
    epoch_correct = torch.zeros((), dtype=torch.int64, device=device)
    epoch_steps = 0
    last_epoch_loss = last_epoch_acc = None
    step = first
    in_window = 0  # steps since the last check
    v = None  # the last training loss (a 0-d tensor)
    _sync(device)
    t0 = time.perf_counter()
    try:
        while step < last:
            order = splits.train[torch.randperm(n_train, device=device, generator=shuffle)]
            epoch_loss.zero_()
            epoch_correct.zero_()
            epoch_steps = 0
            for b in range(skip, spe):
                gi = order[b * bs:(b + 1) * bs]
                order_acc.mul_(1_000_003).add_(gi.sum() + gi[0] * 7919)  # wraps in int64, stays on device
                x, target = augment(splits.images[gi], splits.labels[gi])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    logits = net(x)
                if cpu_logits:
                    logits = logits.float()
                if step == first and cfg.grad_scale == "ce":
                    loss_fn, grad_factor = rescale_to_ce(loss_fn, logits.detach(), target)
                try:
                    value = loss_fn(logits, target)
                    if not isinstance(value, torch.Tensor):
                        raise TypeError(f"the loss returned {type(value).__name__}, not a tensor")
                    if value.dim():
                        value = value.mean()
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(value).backward()
                    else:
                        value.backward()
                except _Failed:
                    raise
                except Exception as err:
                    raise TrainingError(f"the loss raised {type(err).__name__} at step {step}: {err}") from err
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                v = value.detach().float()
                window += v
                epoch_loss += v
                hard = target if target.dim() == 1 else target.argmax(1)
                epoch_correct += (logits.detach().argmax(1) == hard).sum()
                epoch_steps += 1
                step += 1
                in_window += 1
                bar.update(1)
                if step % check_every == 0 or step == last:
                    s = window.item() / in_window
                    window.zero_()
                    in_window = 0
                    watch.check(s, step)
                if step % eval_every == 0 or step == last:
                    val_acc = evaluate(net, model, splits, splits.val, augment, device, amp, channels_last,
                                       cfg.eval_batch_size)
                    history.append((step, val_acc))
                    _check_collapse(best_val, val_acc, ds.num_classes, step)
                    best_val = max(best_val, val_acc)
                    bar.set_postfix(loss=f"{v.item():.4g}", val=f"{val_acc:.3f}")
                if step >= last:
                    break
            skip = 0
            if epoch_steps:
                last_epoch_loss = epoch_loss.item() / epoch_steps
                last_epoch_acc = epoch_correct.item() / (epoch_steps * bs)
    except _Failed as err:
        reason = str(err)
    finally:
        bar.close()
    test_acc = None
    if not reason and splits.test is not None:
        try:
            test_acc = evaluate(net, model, splits, splits.test, augment, device, amp, channels_last,
                                cfg.eval_batch_size)
        except _Failed as err:
            reason = str(err)
    _sync(device)
    wall = time.perf_counter() - t0
    base.update(grad_scale_factor=grad_factor, order_digest=f"{digest}-{order_acc.item() & (2**63 - 1):x}")
    if reason:
        return failed(reason, loss_name, loss_text, backend_name, val_acc=val_acc, best_val_acc=best_val,
                      final_train_loss=v.item() if v is not None else None, steps=step - first,
                      epochs=(step - first) / spe, wall_time=wall,
                      compile_time=compile_time, history=history)
    if cfg.save_checkpoint:
        torch.save(model.state_dict(), cfg.save_checkpoint)
    if epoch_steps and epoch_steps < spe:  # steps budget ended mid-epoch
        last_epoch_loss = epoch_loss.item() / epoch_steps
        last_epoch_acc = epoch_correct.item() / (epoch_steps * bs)
    return TrainResult(**dict(base, val_acc=val_acc, best_val_acc=best_val, test_acc=test_acc,
                              final_train_loss=last_epoch_loss, train_acc=last_epoch_acc, steps=step - first,
                              epochs=(step - first) / spe, wall_time=wall, loss=loss_name, loss_text=loss_text,
                              backend=backend_name, compile_time=compile_time, history=history))
