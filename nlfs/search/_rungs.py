"""Multi-fidelity screening: the rungs a candidate climbs and the rule that promotes it.

A rung is a training budget (any ``TrainConfig`` fields: ``train_size``, ``epochs``, ``steps``,
``val_size``, ``batch_size``) and a number of seeds; ``stop_epoch`` reads it early: the schedule of its
``epochs`` trained only through that epoch (a learning-curve proxy of a longer training); ``resize``
trains it on images resized to a lower resolution (side or HxW). Every
candidate that passes the filters is trained at rung 0; when it finishes rung ``k`` it is promoted to
rung ``k + 1`` if its fitness is in the top ``1/eta`` of the candidates that finished rung ``k`` so far
(Optuna's successive-halving rule, ``SuccessiveHalvingPruner``: with fewer than ``eta`` finished, only
a new best is promoted).

Why not Optuna's pruner itself: its rung bookkeeping lives in an Optuna storage, which cannot share
``run.db``'s single transaction per record, so a kill between the two writes could train a
candidate twice at a rung or lose a promotion; and the value compared here is a paired mean over
several seeds, known only when a whole rung has finished. The rule is a few lines; the state is
the ``rung`` column of ``evaluations``.

Rungs with the same training budget share seeds: a rung that only adds seeds trains just the new
ones and reuses the results of the rung below.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_KEYS = ("train_size", "epochs", "steps", "val_size", "batch_size")
# A search scored by the user's own training (``nlfs.discover(fitness=f)``) knows one budget: the
# fraction of a full training its function is asked to run.
BUDGET = "budget"
# The rung's schedule trained only through the end of this epoch (TrainConfig.stop_epoch).
STOP_EPOCH = "stop_epoch"
# The rung's images resized to this side (or (H, W)): a lower-resolution proxy (TrainConfig.resize).
RESIZE = "resize"

# Fashion-MNIST's last rung is the one the target study chose (bench/results/target_fidelity_fashion_mnist.md,
# its rule fixed before the data was complete): one epoch on the whole split, one seed, the cheapest proxy
# that ranks near-CE losses like the target once the target's own seed noise is allowed for. The first two
# rungs are the earlier fidelity study's cheap filters (bench/results/fidelity_fashion_mnist.md); the target
# study measures how well they tell near-CE losses from the rest. Digits keeps that study's shape.
DEFAULT_RUNGS = {
    "fashion-mnist": ({"train_size": 4096, "epochs": 1, "val_size": 1000, "seeds": 1},
                      {"train_size": 4096, "epochs": 2, "val_size": 2000, "seeds": 1},
                      {"train_size": None, "epochs": 1, "val_size": 5000, "seeds": 1}),
    "digits": ({"epochs": 2, "seeds": 1}, {"epochs": 8, "seeds": 1}, {"epochs": 8, "seeds": 3}),
}


@dataclass(frozen=True)
class Rung:
    index: int
    train: dict  # TrainConfig overrides
    seeds: int

    @property
    def fidelity(self) -> str:
        """A key for the training budget alone: rungs (and CE baselines) with equal keys share seeds."""
        from ..train import training_key

        key = {k: self.train.get(k) for k in TRAIN_KEYS}
        if self.train.get(BUDGET) is not None:  # only then: the fidelities of runs without it stay
            key[BUDGET] = self.train[BUDGET]
        for extra in (STOP_EPOCH, RESIZE):  # likewise: a rung without them keeps its key
            if self.train.get(extra) is not None:
                key[extra] = self.train[extra]
        return training_key(key, length=12)

    def describe(self, base: dict | None = None) -> str:
        """The rung in words; ``base``: the search's own length (``base_length``), named where the rung
        sets none (it trains that length)."""
        train = with_length(self.train, base)
        ordered = {k: train[k] for k in (*TRAIN_KEYS, BUDGET, RESIZE, STOP_EPOCH) if k in train}
        return f"rung {self.index}: {budget_text(ordered, '=')}, {self.seeds} seed(s)"


def base_length(dataset: str, epochs: int | None = None, steps: int | None = None) -> dict:
    """The length a training without its own epochs or steps runs: ``steps``, else ``epochs``, else the
    dataset's default epochs (``nlfs.train.dataset_defaults``); {} for a dataset it cannot name."""
    from ..train import dataset_defaults

    if steps:
        return {"steps": steps}
    try:
        return {"epochs": epochs or dataset_defaults(dataset)["epochs"]}
    except ValueError:  # a report of a run whose configuration is missing or from elsewhere
        return {}


def with_length(train: dict, base: dict | None) -> dict:
    """``train`` with ``base``'s length where it sets neither epochs nor steps (a budget, a fitness
    function's, has no length): for words, never for keys."""
    if not base or BUDGET in train or train.get("epochs") is not None or train.get("steps") is not None:
        return train
    return {**train, **base}


def stop_epoch_words(train: dict) -> str | None:
    """A rung's ``stop_epoch`` in words ("trained for the first 1 of 8 epochs of its schedule"); None
    without one."""
    k = train.get(STOP_EPOCH)
    if k is None:
        return None
    if train.get("steps") is not None:
        return f"trained for the first {k} epoch(s) of its {train['steps']}-step schedule"
    if train.get("epochs") is not None:
        return f"trained for the first {k} of {train['epochs']} epochs of its schedule"
    return f"trained for the first {k} epoch(s) of its schedule"


def resize_words(train: dict) -> str | None:
    """A rung's ``resize`` in words ("images at 14x14"); None without one."""
    value = train.get(RESIZE)
    if value is None:
        return None
    sides = [value] if isinstance(value, int) else list(value)
    return f"images at {sides[0]}x{sides[-1]}"


def budget_text(spec: dict, sep: str = " ") -> str:
    """A rung spec's budget in words, in its order: ``key{sep}value`` for every key set (``train_size``
    set to None says "all": the whole split, not the default), then its ``resize`` and ``stop_epoch``
    in words, comma-separated; ``seeds`` left out; "the base budget" when it sets none."""
    words = [f"{k}{sep}{'all' if k == 'train_size' and v is None else v}" for k, v in spec.items()
             if k not in ("seeds", STOP_EPOCH, RESIZE) and (v is not None or k == "train_size")]
    words += [w for w in (resize_words(spec), stop_epoch_words(spec)) if w]
    return ", ".join(words) or "the base budget"


def make_rungs(specs) -> tuple[Rung, ...]:
    """Rungs from a list of dicts (``seeds``, TrainConfig budget fields, ``stop_epoch``), checked."""
    if not specs:
        raise ValueError("a search needs at least one rung")
    rungs = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        seeds = int(spec.pop("seeds", 1))
        unknown = set(spec) - set(TRAIN_KEYS) - {BUDGET, STOP_EPOCH, RESIZE}
        if unknown:
            raise ValueError(f"rung {i}: unknown keys {sorted(unknown)}; allowed: seeds, {', '.join(TRAIN_KEYS)}, "
                             f"{STOP_EPOCH}, {RESIZE} ({BUDGET} with a fitness function)")
        if STOP_EPOCH in spec:
            spec[STOP_EPOCH] = _stop_epoch(spec, f"rung {i}")
        if RESIZE in spec:
            spec[RESIZE] = _resize(spec, f"rung {i}")
        if BUDGET in spec:
            spec[BUDGET] = budget_fraction(spec[BUDGET], f"rung {i}")
        if seeds < 1:
            raise ValueError(f"rung {i}: seeds must be >= 1, got {seeds}")
        rungs.append(Rung(i, spec, seeds))
    return tuple(rungs)


def _stop_epoch(spec: dict, where: str) -> int:
    """A rung's ``stop_epoch``: a positive integer below its ``epochs`` (when it names them without
    ``steps``: the whole schedule would change nothing). Against the dataset's default epochs it is
    checked with the training configuration (``TrainConfig.resolved``)."""
    value = spec[STOP_EPOCH]
    if BUDGET in spec:
        raise ValueError(f"{where}: {STOP_EPOCH} is for nlfs's trainings, not a fitness function's {BUDGET}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {STOP_EPOCH} must be a positive integer (the last epoch trained), got {value!r}")
    epochs = spec.get("epochs")
    if spec.get("steps") is None and epochs is not None and value >= epochs:
        raise ValueError(f"{where}: {STOP_EPOCH}={value} with epochs={epochs} changes nothing (the schedule ends "
                         f"at epoch {epochs}); give a smaller {STOP_EPOCH} or leave it out")
    return value


def _resize(spec: dict, where: str) -> tuple[int, int]:
    """A rung's ``resize``: a side or (H, W), positive integers, kept as a list-free (H, W) tuple."""
    value = spec[RESIZE]
    if BUDGET in spec:
        raise ValueError(f"{where}: {RESIZE} is for nlfs's trainings, not a fitness function's {BUDGET}")
    from ..data import image_size

    try:
        return image_size(value)
    except ValueError:
        raise ValueError(f"{where}: {RESIZE} must be a positive side or (H, W), e.g. 14 or 14x14, "
                         f"got {value!r}") from None


def budget_fraction(value, where: str) -> float:
    """A fitness function's budget: a number in (0, 1], the fraction of a full training."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {BUDGET} must be a number in (0, 1], got {value!r}") from None
    if not 0 < fraction <= 1:
        raise ValueError(f"{where}: {BUDGET} must be in (0, 1] (a fraction of a full training), got {value!r}")
    return fraction


def default_rungs(dataset: str) -> list[dict]:
    from ..data import canonical_name

    name = canonical_name(dataset)
    if name in DEFAULT_RUNGS:
        return [dict(r) for r in DEFAULT_RUNGS[name]]
    # Elsewhere: a quarter of the dataset's default epochs, then the default, then 3 seeds of it.
    from ..train import dataset_defaults

    epochs = dataset_defaults(name)["epochs"]
    return [{"epochs": max(1, epochs // 4), "seeds": 1}, {"epochs": epochs, "seeds": 1},
            {"epochs": epochs, "seeds": 3}]


def promoted(value: float, finished: list[float], eta: int) -> bool:
    """Optuna's successive-halving rule: is ``value`` (one of ``finished``) in their top 1/eta?"""
    ranked = sorted(finished, reverse=True)
    idx = max(len(ranked) // eta - 1, 0)
    return value >= ranked[idx]


def parse_rungs(text: str) -> list[dict]:
    """``"train_size=2048,epochs=1,seeds=1;train_size=all,epochs=1;epochs=8,resize=14x14"`` -> rung dicts
    (the CLI's form; ``train_size=all``: the whole training split)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        spec = {}
        for item in filter(None, (i.strip() for i in part.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--rungs: expected key=value, got {item!r} in {part!r}")
            key, value = key.strip(), value.strip()
            if key == "train_size" and value.lower() == "all":
                spec[key] = None  # the whole training split
                continue
            try:
                spec[key] = ([int(v) for v in value.lower().split("x")] if key == RESIZE and "x" in value.lower()
                             else int(value))
            except ValueError:
                raise ValueError(f"--rungs: {key} must be an integer"
                                 + (" or HxW" if key == RESIZE else "") + f", got {value!r} in {part!r}") from None
        out.append(spec)
    make_rungs(out)
    return out
