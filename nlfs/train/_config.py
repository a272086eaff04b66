"""``TrainConfig`` (what to run) and ``TrainResult`` (what came out), with per-dataset defaults."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Per-dataset defaults, chosen so a surrogate run with CE trains well on a small CPU: digits in
# seconds, Fashion-MNIST in well under a minute on 10,000 training images (times and accuracies:
# bench/results/target_curve_digits_surrogate.md, bench/results/surrogate_cpu.md). CIFAR values follow
# the usual SGD recipes.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=8, batch_size=64, val_size=300, lr=0.1, adam_lr=3e-3),
    "fashion-mnist": dict(epochs=3, batch_size=128, val_size=5000, lr=0.1, adam_lr=2e-3),
    "cifar10": dict(epochs=10, batch_size=256, val_size=5000, lr=0.2, adam_lr=2e-3),
    "cifar100": dict(epochs=15, batch_size=256, val_size=5000, lr=0.2, adam_lr=2e-3),
}

# A user's data (a directory, a .npz/.pt file, module:function): small batches and more epochs so a
# table of a few hundred rows still takes a few hundred steps; val_size None is USER_VAL_FRACTION.
USER_DATA_DEFAULTS: dict[str, Any] = dict(epochs=20, batch_size=32, val_size=None, lr=0.05, adam_lr=1e-3)


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The training defaults of ``dataset`` (a name or a user's data): ``DATASET_DEFAULTS`` for the
    named ones, ``USER_DATA_DEFAULTS`` otherwise."""
    from ..data import canonical_name

    return dict(DATASET_DEFAULTS.get(canonical_name(dataset), USER_DATA_DEFAULTS))


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "constant")
AMPS = ("auto", "off", "bf16", "fp16")
GRAD_SCALES = ("none", "ce")


@dataclass
class TrainConfig:
    """One training run. ``None`` means "the dataset's default" (see ``DATASET_DEFAULTS``).

    ``dataset``: a name (``digits``, ``fashion-mnist``, ``cifar10``, ``cifar100``) or a user's data: an
    ImageFolder directory, a ``.npz``/``.pt`` file or ``module:function`` (``nlfs.data.as_dataset``);
    ``resize`` (H, W) resizes its images. ``model``: a name from ``nlfs.models.MODELS`` or
    ``module:factory``; ``surrogate`` (the default) is the small default model of the data: the
    surrogate CNN for images, the MLP for feature vectors.

    Budget: ``steps`` (optimizer steps) overrides ``epochs``. ``evaluate_test=False`` keeps the test
    split untouched (no test tensors indexed, no test accuracy): use it for search fitness.
    ``split_seed`` fixes the train/validation split independently of ``seed`` (model init, shuffling,
    augmentation) so different seeds are compared on the same split. The split seed decides the
    validation images, which ``train_size`` training images are used and the label noise drawn on them;
    ``seed`` decides none of these. Same split seed, same subset and same noisy labels; a campaign that
    wants each test seed to draw its own subset and noise sets ``split_seed`` per seed (e.g. equal to
    ``seed``). An official test part never depends on either; digits, which has none, draws its 360 test
    images with the split seed too. ``init_seed`` (None: ``seed``)
    sets the model's initialisation alone, ``seed`` then only the data order and augmentation: the
    members of a packed training (``train_packed``) share one data order and differ in ``init_seed``.
    """

    dataset: str = "digits"
    model: str = "surrogate"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    lr: float | None = None
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adam | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | linear | constant, after warm-up
    warmup: float = 0.1  # < 1: fraction of the steps; >= 1: a number of steps
    augment: str = "none"  # none | flipcrop | cutout | mixup | cutmix | randaugment | autoaugment
    augment_params: dict = field(default_factory=dict)  # e.g. {"mixup_alpha": 0.4, "ra_magnitude": 5}
    grad_scale: str = "none"  # none | ce: rescale the loss to CE's mean |dL/dlogits| on the first batch
    label_noise: float = 0.0  # the fraction of training labels corrupted (validation and test stay clean)
    # symmetric | pairflip | asymmetric (nlfs.data.with_label_noise); drawn with split_seed
    label_noise_kind: str = "symmetric"
    seed: int = 0
    split_seed: int = 0
    init_seed: int | None = None  # None: seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    backend: str = "auto"  # nlfs loss backend: auto | torch | cpp | triton
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU) | off | bf16 | fp16
    compile: bool = False  # torch.compile the model once per process (cached by config)
    channels_last: bool | None = None  # None: on (faster on CPU too: bench/memory_format.py)
    data_root: str | None = None
    download: bool = False  # CIFAR only: fetch with torchvision when missing
    evaluate_test: bool = True
    progress: bool = False
    checkpoint: str | None = None  # local state dict to fine-tune from
    dropout: float | None = None  # model's own default when None
    eval_every: int | None = None  # steps between validation passes (default: once per epoch)
    eval_batch_size: int = 1024
    explode_factor: float = 1e4  # diverged if |loss| > explode_factor * max(|first loss|, 1) 3 checks running
    check_every: int | None = None  # steps between NaN/explosion checks (default 1 on CPU, 25 on CUDA)
    threads: int | None = None  # CPU: torch threads for this run (restored after); None leaves torch's
    # setting. On a shared/oversubscribed CPU use 1 per worker: OpenMP threads competing for busy cores
    # slow a run many times over.
    resize: tuple[int, int] | None = None  # (H, W): resize every image (a user's folder of mixed sizes)
    # One phase of a longer schedule (the late-phase proxy: CE to a step, a candidate from there). The
    # schedule stays that of the whole budget; the run trains its steps start_step..stop_step, data
    # order continued, optimizer state (momentum) fresh; grad_scale="ce" rescales at the run's first step.
    start_step: int = 0
    stop_step: int | None = None  # None: the end of the budget
    # The same, counted in epochs (a rung does not know its data's steps per epoch): the schedule of
    # ``epochs`` (or ``steps``) trained only through the end of epoch stop_epoch (a learning-curve proxy).
    stop_epoch: int | None = None  # None: the end of the budget
    save_checkpoint: str | None = None  # write the model's state dict here when the run ends (not if diverged)

    def resolved(self) -> TrainConfig:
        """A copy with the dataset defaults filled in (dataset name canonicalised: a user's data as an
        absolute path; its ``surrogate`` model the MLP when it holds feature vectors). A user's data is
        loaded (once per process) to see what it holds."""
        from ..data import DATASETS, canonical_name, image_size

        name = canonical_name(self.dataset)
        d = dataset_defaults(name)
        resize = None if self.resize is None else image_size(self.resize)
        model = self.model
        if name not in DATASETS and model == "surrogate":
            from ..data import load_dataset

            if load_dataset(name, self.data_root, resize=resize).features:
                model = "mlp"
        opt = self.optimizer.lower()
        if opt not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.amp not in AMPS:
            raise ValueError(f"amp must be one of {AMPS}, got {self.amp!r}")
        if self.grad_scale not in GRAD_SCALES:
            raise ValueError(f"grad_scale must be one of {GRAD_SCALES}, got {self.grad_scale!r}")
        from ..data import check_label_noise

        check_label_noise(self.label_noise, self.label_noise_kind, name)
        if self.start_step < 0 or (self.stop_step is not None and self.stop_step <= self.start_step):
            raise ValueError(f"need 0 <= start_step < stop_step, got start_step={self.start_step}, "
                             f"stop_step={self.stop_step}")
        epochs = d["epochs"] if self.epochs is None else self.epochs
        if self.stop_epoch is not None:
            if self.stop_epoch < 1:
                raise ValueError(f"stop_epoch must be >= 1 (train the schedule through the end of that epoch), "
                                 f"got {self.stop_epoch}")
            if self.steps is None and self.stop_epoch >= epochs:
                raise ValueError(f"stop_epoch={self.stop_epoch} with epochs={epochs} changes nothing: the schedule "
                                 f"ends at epoch {epochs}; give a smaller stop_epoch or leave it out")
        return dataclasses.replace(
            self, dataset=name, optimizer=opt, model=model, resize=resize, epochs=epochs,
            batch_size=d["batch_size"] if self.batch_size is None else self.batch_size,
            val_size=d["val_size"] if self.val_size is None else self.val_size,
            lr=(d["lr"] if opt == "sgd" else d["adam_lr"]) if self.lr is None else self.lr)

    def to_dict(self) -> dict:
        """The fields as a dict; fields added after training keys were first recorded (``resize``,
        ``init_seed``, the phase fields, ``label_noise_kind``) only when set, so older keys stay the same."""
        d = dataclasses.asdict(self)
        for name, unset in _KEYLESS_DEFAULTS.items():
            if d[name] == unset:
                del d[name]
        return d


# Fields added after training keys were first recorded: left out of to_dict() at these values.
_KEYLESS_DEFAULTS = dict(resize=None, init_seed=None, start_step=0, stop_step=None, save_checkpoint=None,
                         label_noise_kind="symmetric", stop_epoch=None)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@dataclass
class TrainResult:
    """The record of one run. A failed run has ``diverged=True`` and ``reason`` saying why (NaN/Inf
    or exploding loss, accuracy collapse, an exception raised by the loss); its accuracies are
    those measured before the failure (0.0 if none was) and ``test_acc`` is None."""

    val_acc: float
    best_val_acc: float
    test_acc: float | None
    final_train_loss: float | None
    train_acc: float | None
    steps: int
    epochs: float
    wall_time: float  # seconds, data already loaded; excludes the compile warm-up
    device: str
    dataset: str
    model: str
    augment: str
    seed: int
    loss: str  # name
    loss_text: str  # expression ("" for a custom callable)
    backend: str
    diverged: bool = False
    reason: str = ""
    train_size: int = 0
    val_size: int = 0
    test_size: int = 0
    batch_size: int = 0
    lr: float = 0.0
    optimizer: str = ""
    amp: str = "off"
    compiled: bool = False
    compile_time: float = 0.0
    data_source: str = ""
    history: list = field(default_factory=list)  # [(step, val_acc), ...]
    grad_scale_factor: float = 1.0  # the factor the loss was multiplied by (TrainConfig.grad_scale="ce")
    # A digest of every batch's sample indices and of the model's initial weights: two runs with
    # equal digests saw the same initialisation and the same data in the same order (paired seeds).
    order_digest: str = ""

    @property
    def failed(self) -> bool:
        return self.diverged

    def to_dict(self) -> dict:
        """JSON-serialisable (non-finite floats become None)."""
        return _clean(dataclasses.asdict(self))
