"""The target regime: the training a user will actually run, by which a search is judged in the end.

Screening rungs are short proxies; what wins in them can lose in a long training (the first discovery
campaign's finalists gained at 4 epochs on 8,192 images and lost with all the data). A target names
the real training with the budget keys of ``--rungs`` (not ``stop_epoch``: a target is a whole
training) plus the regime's own (``label_noise``, ``label_noise_kind``, ``augment``), and
``train_size=all`` for the whole training split::

    train_size=all,epochs=8,seeds=2,label_noise=0.2,augment=cutout
    train_size=all,epochs=8,label_noise=0.4,label_noise_kind=pairflip

A search's leaders are trained in it with paired seeds before the run reports, and every fitness a
report shows says whether it was measured at a screening rung (a proxy lead) or in the target. Beating
CE there is not enough to claim a loss: the regime's strongest known losses (``REGIME_BASELINES``:
label smoothing and Poly-1 on clean labels; GCE, SCE and NCE+RCE under label noise) can be trained in
the target beside CE on the same seeds (``SearchConfig.target_baselines``), and a lead holds only
against the strongest of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._rungs import BUDGET, TRAIN_KEYS, base_length, budget_fraction, with_length

REGIME_KEYS = ("label_noise", "augment", "label_noise_kind")
# Keys a target holds only when set (symmetric noise is not stored): fidelity keys of older targets stay.
_KEYED_WHEN_SET = ("label_noise_kind",)
ALL = "all"  # train_size=all: the whole training split (TrainConfig.train_size None)

# CE's plateau on the whole split (bench/results/target_curve_<dataset>_surrogate.md): the smallest
# length whose mean validation accuracy is within 0.2 pp of the best length's.
DEFAULT_TARGETS = {
    "fashion-mnist": {"train_size": ALL, "epochs": 8, "seeds": 2},
    "digits": {"train_size": ALL, "epochs": 16, "seeds": 2},
}


# The strongest known losses of a regime, at their published constants: what a loss found for it must
# beat, not only CE (the first discovery campaign's finalists beat CE and lost to these).
REGIME_BASELINES = {
    "clean": ("LabelSmoothingCE", "Poly1"),
    "noisy": ("GCE", "SCE", "NCEandRCE"),
}


def regime_baselines(label_noise: float | None) -> tuple[str, ...]:
    """The strongest known losses of a target trained with ``label_noise`` (a fraction; None or 0: clean)."""
    return REGIME_BASELINES["noisy" if label_noise else "clean"]


def regime_warm_starts(label_noise: float | None) -> tuple[str, ...]:
    """A tree search's default warm starts for a target trained with ``label_noise``: CE and the regime's
    strongest known losses, so that a search under noise starts from the losses built for it."""
    return ("CE", *regime_baselines(label_noise))


@dataclass(frozen=True)
class Target:
    """``train``: TrainConfig overrides (``train_size`` None for the whole split); ``seeds``: paired
    seeds per finalist (more when racing asks for them)."""

    train: dict
    seeds: int = 2

    @property
    def fidelity(self) -> str:
        """A key for this training budget and regime: CE baselines with equal keys are shared."""
        from ..train import training_key

        keys = [k for k in (*TRAIN_KEYS, *REGIME_KEYS) if k not in _KEYED_WHEN_SET or self.train.get(k)]
        key = {k: self.train.get(k) for k in keys}
        if BUDGET in self.train:  # a fitness function's full training (only then: older keys stay)
            key[BUDGET] = self.train[BUDGET]
        return training_key({"target": key}, length=12)

    def describe(self, unit: str = "training images", dataset: str | None = None, base=None) -> str:
        """The regime in words; ``unit``: what the data holds ("training samples" for feature vectors);
        ``dataset``: whose default epochs a target without its own length trains (named in numbers);
        ``base``: the run's TrainConfig, whose data size, label noise and augmentation a target that
        does not set its own trains with (``apply``), so they are named too."""
        t = self.train
        if BUDGET in t:
            return f"target: your fitness function, budget {t[BUDGET]:g}"
        if base is not None:
            t = {**{k: getattr(base, k) for k in ("train_size", *REGIME_KEYS) if k not in t}, **t}
        if dataset is not None:
            t = with_length(t, base_length(dataset))
        size = f"all {unit}" if t.get("train_size") is None else f"{t['train_size']} {unit}"
        length = _count(t["steps"], "step") if t.get("steps") is not None else (
            _count(t["epochs"], "epoch") if t.get("epochs") is not None else "the dataset's default epochs")
        kind = f"{t['label_noise_kind']} " if t.get("label_noise_kind") else ""
        noise = f"{t['label_noise']:.0%} {kind}label noise" if t.get("label_noise") else "clean labels"
        return f"target: {size}, {length}, {noise}, augmentation {t.get('augment') or 'none'}"

    def apply(self, train_config):
        """``train_config`` (a TrainConfig) trained in this regime: the target's images (None: the whole
        split), its length (epochs or steps, the other dropped; neither: the dataset's default epochs),
        label noise and augmentation; everything else (model, data, device, gradient scale) kept."""
        import dataclasses

        t = dict(self.train)
        for key in ("epochs", "steps"):
            t.setdefault(key, None)
        if "label_noise" in t:  # the target's noise is symmetric unless it names another kind
            t.setdefault("label_noise_kind", "symmetric")
        return dataclasses.replace(train_config, **t)

    def to_spec(self) -> dict:
        d = {k: v for k, v in self.train.items() if v is not None}
        if BUDGET in d:
            return {**d, "seeds": self.seeds}
        d["train_size"] = ALL if self.train.get("train_size") is None else self.train["train_size"]
        d["seeds"] = self.seeds
        return d


def _count(n, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def make_target(spec: dict) -> Target:
    """A target from a dict (``seeds``, TrainConfig budget fields, ``label_noise``, ``augment``), checked."""
    from ..data import AUGMENTS, LABEL_NOISE_KINDS

    spec = dict(spec)
    seeds = spec.pop("seeds", 2)
    if BUDGET in spec:  # a fitness function's target: its budget alone
        if set(spec) != {BUDGET}:
            raise ValueError(f"--target: {BUDGET} (a fitness function's) takes no other keys than seeds, "
                             f"got {sorted(set(spec) - {BUDGET})}")
        return Target({BUDGET: budget_fraction(spec[BUDGET], "--target")}, _positive_seeds(seeds))
    unknown = set(spec) - set(TRAIN_KEYS) - set(REGIME_KEYS)
    if unknown:
        raise ValueError(f"--target: unknown keys {sorted(unknown)}; allowed: seeds, "
                         f"{', '.join((*TRAIN_KEYS, *REGIME_KEYS))}")
    train: dict = {}
    for key, value in spec.items():
        if key == "train_size" and str(value).strip().lower() == ALL:
            train[key] = None
        elif key == "augment":
            if value not in AUGMENTS:
                raise ValueError(f"--target: augment must be one of {', '.join(AUGMENTS)}, got {value!r}")
            train[key] = value
        elif key == "label_noise_kind":
            if value not in LABEL_NOISE_KINDS:
                raise ValueError(f"--target: label_noise_kind must be one of {', '.join(LABEL_NOISE_KINDS)}, "
                                 f"got {value!r}")
            if value != "symmetric":  # the default is not stored (see _KEYED_WHEN_SET)
                train[key] = value
        elif key == "label_noise":
            rate = _number(key, value, float)
            if not 0 <= rate < 1:
                raise ValueError(f"--target: label_noise must be in [0, 1), got {value!r}")
            train[key] = rate
        else:
            n = _number(key, value, int)
            if n < 1:
                raise ValueError(f"--target: {key} must be a positive integer, got {value!r}")
            train[key] = n
    train.setdefault("train_size", None)
    return Target(train, _positive_seeds(seeds))


def _positive_seeds(value) -> int:
    seeds = _number("seeds", value, int)
    if seeds < 1:
        raise ValueError(f"--target: seeds must be >= 1, got {seeds}")
    return seeds


def _number(key: str, value, kind):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"--target: {key} must be {'an integer' if kind is int else 'a number'}, "
                         f"got {value!r}") from None


def parse_target(text: str) -> dict:
    """``"train_size=all,epochs=8,seeds=2"`` -> the target's spec (checked; the CLI's form)."""
    spec: dict = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--target: expected key=value, got {item!r}")
        if key.strip() in spec:
            raise ValueError(f"--target: {key.strip()} given twice")
        spec[key.strip()] = value.strip()
    if not spec:
        raise ValueError("--target: empty; e.g. train_size=all,epochs=8")
    out = make_target(spec).to_spec()
    if "seeds" not in spec:  # left to the caller: a search takes its preset's
        del out["seeds"]
    return out


def default_target(dataset: str) -> dict:
    """The dataset's default target: the whole training split for CE's plateau length (measured for
    the surrogate; elsewhere the dataset's default epochs)."""
    from ..data import canonical_name

    name = canonical_name(dataset)
    if name in DEFAULT_TARGETS:
        return dict(DEFAULT_TARGETS[name])
    return {"train_size": ALL, "seeds": 2}
