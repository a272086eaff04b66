"""The command-line toolkit every nlfs tool uses.

- ``ArgumentParser``: ``--help`` shows each option's default; a bad argument is one line
  (``nlfs.tool: error: ...``) and exit status 2, before any work.
- Argument types that refuse bad values up front: ``positive_int``, ``positive_float``, ...
- The training options, generated from ``TrainConfig``: ``add_training_options`` and
  ``training_overrides`` (one table of which fields are options, their types, choices and help).
- ``split_losses`` (a loss list; ``checked_losses`` checks each, naming the option), ``parse_seeds``
  (a seed count or list) and ``key_values``
  (``NAME=VALUE,...`` options, each bad item named with its option).
- ``add_pack_option``: ``--pack K``, trainings of one budget packed into one network (a GPU feature).
- ``run_main``: a configuration error is ``prog: error: ...`` and exit 2; Ctrl-C or SIGTERM is one
  line, ``prog: interrupted; resume with: ...`` (the command a tool names with ``resume_with``), and
  exit 130.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import signal
import sys
import typing

__all__ = ["BUDGET_OPTIONS", "PER_SEED", "TRAINING_OPTIONS", "ArgumentParser", "Interrupted", "add_known_loss_options",
           "add_pack_option", "add_split_seed_option", "add_training_options", "checked_losses", "command_line",
           "fraction",
           "image_size", "key_values", "non_negative_float", "non_negative_int", "parse_seeds",
           "positive_float", "positive_int", "refuse_on_resume", "resume_with", "run_main", "seeds_list",
           "split_losses", "split_seed_choice", "tool_name", "train_defaults", "training_overrides"]


# ------------------------------------------------------------------------------------ argument types
def _number(conv, text, test, what):
    try:
        value = conv(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not test(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text) -> int:
    return _number(int, text, lambda v: v > 0, "a whole number of at least 1")


def non_negative_int(text) -> int:
    return _number(int, text, lambda v: v >= 0, "a whole number of at least 0")


def positive_float(text) -> float:
    return _number(float, text, lambda v: v > 0 and v != float("inf"), "a number above 0")


def non_negative_float(text) -> float:
    return _number(float, text, lambda v: 0 <= v < float("inf"), "a number of at least 0")


def fraction(text) -> float:
    return _number(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def split_losses(text: str) -> list[str]:
    """A list of loss names or expressions: separated by ``;`` or by commas outside parentheses
    (``max(p, y),CE;NGL`` is three losses, ``max(p, y)`` stays whole)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == ";" or (ch == "," and depth <= 0):
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def checked_losses(text: str, option: str) -> list[str]:
    """An option's list of losses (``split_losses``), each a catalogue name or an expression, checked
    here so that a bad one is named with its option (``--seed-losses: 'NGLL': unknown loss ...``)."""
    from .losses import resolve_spec

    out = split_losses(text)
    for loss in out:
        try:
            resolve_spec(loss)
        except ValueError as err:
            raise ValueError(f"{option}: {loss!r}: {err}") from None
    return out


def parse_seeds(text) -> list[int]:
    """Seeds from a count ``N`` (seeds 0..N-1) or a list ``0,1,5-7`` (a single seed: ``3,`` or ``3-3``)."""
    text = str(text).strip()
    if "," not in text and "-" not in text:
        count = int(text)
        if count < 1:
            raise ValueError(f"a seed count must be at least 1, got {count}")
        return list(range(count))
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        if first < 0 or last < first:
            raise ValueError(f"bad seed range {part!r}: want A-B with 0 <= A <= B")
        out += [s for s in range(first, last + 1) if s not in out]
    if not out:
        raise ValueError(f"no seeds in {text!r}")
    return out


def seeds_list(text) -> list[int]:
    """``parse_seeds`` as an argparse type."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a seed count N or a list like 0,1,5-7 ({err})") from None


def key_values(convert: typing.Callable = str, form: str = "NAME=VALUE") -> typing.Callable[[str], list]:
    """An argparse type for ``NAME=VALUE[,NAME=VALUE...]``: the ``(name, convert(value))`` pairs of one
    argument, for ``action="extend"`` (``dict(args.x or [])`` then holds every occurrence, a later one
    winning). A bad item (no ``=``, no name, a value ``convert`` refuses with ValueError) is an error
    naming the option and the item: ``argument --range: expected NAME=LOW:HIGH, got 'a=1'`` (``form``)."""

    def parse(text: str) -> list:
        out = []
        for item in str(text).split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            try:
                if not sep or not name.strip():
                    raise ValueError(item)
                out.append((name.strip(), convert(value.strip())))
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {form}, got {item!r}") from None
        return out

    return parse


# -------------------------------------------------------------------------------------------- parser
def _shows_default(action) -> bool:
    default = action.default
    switch = isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction))
    return (bool(action.option_strings) and not switch and default is not None and default is not False
            and default not in ([], "", argparse.SUPPRESS))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says its default or the
    option has none (None: the tool or the saved run decides, and its help says how)."""

    def _format_action(self, action):
        if not action.help and _shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if _shows_default(action) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def tool_name(prog: str) -> str:
    """``python -m nlfs.evolve`` -> ``nlfs.evolve``."""
    return prog.removeprefix("python -m ")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults in ``--help``, one-line errors, and ``given``: the destinations the
    command line set explicitly (after ``parse_args``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.given: set[str] = set()

    def error(self, message):
        if message.endswith("expected one argument"):  # argparse reads a value like -y*log(p) as an option
            message += " (a value that starts with '-' takes the = form: --option=VALUE)"
        print(f"{tool_name(self.prog)}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        self.given = self._explicit(sys.argv[1:] if args is None else list(args))
        return ns

    def _explicit(self, argv) -> set[str]:
        defaults = [(a, a.default) for a in self._actions]
        saved = dict(self._defaults)
        try:
            for a, _ in defaults:
                a.default = argparse.SUPPRESS
            self._defaults.clear()
            return set(vars(super().parse_known_args(argv)[0]))
        finally:
            for a, d in defaults:
                a.default = d
            self._defaults.update(saved)

    def option_of(self, dest: str) -> str:
        action = next(a for a in self._actions if a.dest == dest)
        return max(action.option_strings, key=len)


def refuse_on_resume(parser: ArgumentParser, allowed: typing.Iterable[str], resume: str = "resume") -> None:
    """With ``--resume``, every option other than ``allowed`` (how the run goes on: workers, budget,
    ...) is refused by name: the run's saved configuration decides what it trains."""
    keep = set(allowed) | {resume}
    extra = [d for d in parser.given if d not in keep]
    if extra:
        opts = [parser.option_of(d) for d in sorted(extra, key=lambda d: parser.option_of(d))]
        parser.error(f"{parser.option_of(resume)} continues a saved run: the run's saved configuration "
                     f"decides; drop {', '.join(opts)}")


# ------------------------------------------------------------------------------ the training options
def _dataset(text: str) -> str:
    from .data import DatasetError, canonical_name

    try:
        canonical_name(text)
    except (ValueError, DatasetError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def image_size(text) -> tuple[int, int]:
    """``H`` or ``H,W`` (also ``HxW``) -> (H, W) (``nlfs.data.image_size``, as an option's type)."""
    from .data import image_size as size_of

    try:
        return size_of(str(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H or H,W (positive pixels), got {text!r}") from None


@dataclasses.dataclass(frozen=True)
class _Option:
    type: typing.Callable | None
    help: str
    choices: tuple | None = None
    metavar: str | None = None


def _training_table() -> dict[str, _Option]:
    """TrainConfig field -> its command-line option. The order is the order in ``--help``."""
    from .backends import NAMES as BACKENDS
    from .data import AUGMENTS, DATASETS, LABEL_NOISE_KINDS
    from .models import MODELS
    from .train import AMPS, GRAD_SCALES, OPTIMIZERS, SCHEDULES

    return {
        "dataset": _Option(_dataset, f"one of {', '.join(DATASETS)}; or your data: an ImageFolder directory "
                                     "(DIR/<class>/<image>, or with train/ val/ test/), a .npz/.pt file with "
                                     "x_train, y_train [, x_val, y_val, x_test, y_test], or module:function "
                                     "returning them"),
        "data_root": _Option(str, "directory holding the dataset files", metavar="DIR"),
        "resize": _Option(image_size, "resize every image to H x W (images of different sizes need it)",
                          metavar="H[,W]"),
        "model": _Option(str, f"one of {', '.join(MODELS)}, wrn-D-K, or module:factory (called as "
                              "factory(input_shape, num_classes), returning an nn.Module); on feature "
                              "vectors, surrogate is the mlp"),
        "epochs": _Option(positive_int, "training epochs"),
        "steps": _Option(positive_int, "optimizer steps (overrides --epochs)"),
        "batch_size": _Option(positive_int, "training batch size"),
        "train_size": _Option(positive_int, "training images used (a subset of the training split)"),
        "val_size": _Option(positive_int, "validation images (your data: 20%% of each class when unset)"),
        "lr": _Option(positive_float, "learning rate"),
        "optimizer": _Option(str, "sgd is Nesterov momentum", OPTIMIZERS),
        "weight_decay": _Option(non_negative_float, "weight decay"),
        "schedule": _Option(str, "learning-rate schedule after warm-up", SCHEDULES),
        "augment": _Option(str, "training augmentation (mixup/cutmix: soft targets)", AUGMENTS),
        "grad_scale": _Option(str, "ce: rescale the loss to cross-entropy's mean |dL/dlogits| on the first "
                                   "batch (the factor is recorded); none: train the loss as written",
                              GRAD_SCALES),
        "label_noise": _Option(fraction, "fraction of training labels corrupted, drawn with the split seed "
                                         "(validation and test stay clean)"),
        "label_noise_kind": _Option(str, "symmetric: to a uniform other class; pairflip: class c to c+1 mod C "
                                         "(Han et al. 2018); asymmetric: the literature's class pairs "
                                         "(digits, cifar10; Patrini et al. 2017)", LABEL_NOISE_KINDS),
        "dropout": _Option(fraction, "dropout of the model (default: the model's own)"),
        "split_seed": _Option(int, "seed of the train/validation split, of the train_size subset and of the label "
                                        "noise (fixed across training seeds)"),
        "device": _Option(str, "auto | cpu | cuda | cuda:N"),
        "backend": _Option(str, "loss backend (auto: the fastest available)", ("auto", *BACKENDS)),
        "amp": _Option(str, "mixed precision (auto: bf16/fp16 on CUDA, fp32 on CPU)", AMPS),
        "compile": _Option(None, "torch.compile the model"),
        "download": _Option(None, "CIFAR: download with torchvision if missing"),
        "checkpoint": _Option(str, "local state dict to fine-tune from", metavar="PATH"),
        "threads": _Option(positive_int, "CPU threads per training"),
    }


TRAINING_OPTIONS = ("dataset", "data_root", "resize", "model", "epochs", "steps", "batch_size", "train_size",
                    "val_size",
                    "lr", "optimizer", "weight_decay", "schedule", "augment", "grad_scale", "label_noise",
                    "label_noise_kind", "dropout", "split_seed", "device", "backend", "amp", "compile", "download",
                    "checkpoint", "threads")
# the options that say where and how long a base configuration trains (tune, eliminate)
BUDGET_OPTIONS = ("dataset", "data_root", "resize", "model", "epochs", "steps", "train_size", "val_size", "backend",
                  "device")


def add_training_options(parser: argparse.ArgumentParser, names: typing.Iterable[str] = TRAINING_OPTIONS,
                         defaults: dict | None = None, unset: str | dict | None = None,
                         helps: dict | None = None) -> None:
    """``--NAME`` for each ``TrainConfig`` field in ``names``. ``defaults`` maps a field to its default
    (shown in ``--help``); a field not in it defaults to None, meaning "not set here": ``unset`` says
    what decides then (one text for every field, e.g. "the search run's", or one per field). ``helps``
    replaces a field's help text."""
    table, defaults, helps = _training_table(), defaults or {}, helps or {}
    fields = {f.name for f in dataclasses.fields(_train_config())}
    for name in names:
        if name not in fields:
            raise KeyError(f"{name!r} is not a TrainConfig field")
        opt = table[name]
        text = helps.get(name, opt.help)
        default = defaults.get(name)
        why = unset.get(name) if isinstance(unset, dict) else unset
        if default is None and why and opt.type is not None and "default" not in text:
            text += f" (default: {why})"
        flag = "--" + name.replace("_", "-")
        if opt.type is None:  # a switch
            parser.add_argument(flag, action="store_true", default=default, help=text)
        else:
            parser.add_argument(flag, type=opt.type, choices=opt.choices, default=default, help=text,
                                metavar=opt.metavar)


def training_overrides(args: argparse.Namespace, names: typing.Iterable[str] = TRAINING_OPTIONS) -> dict:
    """The TrainConfig fields among ``names`` that the command line set (None values left out)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


PER_SEED = "per-seed"  # --split-seed's value: each training seed draws its own split (split_seed = seed)


def split_seed_choice(text: str) -> int | str:
    """``--split-seed``'s type in a tool that trains many seeds: one split seed for all, or ``per-seed``."""
    if str(text).strip().lower() == PER_SEED:
        return PER_SEED
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or {PER_SEED}, got {text!r}") from None


def add_split_seed_option(parser: argparse.ArgumentParser, unset: str) -> None:
    """``--split-seed N|per-seed`` (in place of the training options' integer one)."""
    parser.add_argument("--split-seed", type=split_seed_choice, default=None, metavar=f"N|{PER_SEED}",
                        help="seed of the train/validation split, of the train_size subset and of the label noise: "
                             f"N for every training seed (default: {unset}), or {PER_SEED}: split_seed = seed, so "
                             "each seed draws its own subset and noise (every loss shares them on that seed)")


def train_defaults() -> dict:
    """TrainConfig's own defaults, for a tool whose options start from them."""
    cfg = _train_config()()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def _train_config():
    from .train import TrainConfig

    return TrainConfig


def add_pack_option(parser: argparse.ArgumentParser,
                    what: str = "jobs of one budget (the same rung and seeds)") -> None:
    """``--pack K`` (``dest`` ``pack``, default 1): how many trainings share one packed network
    (``nlfs.train.train_grid``'s ``pack``, the search's ``SearchConfig.pack``)."""
    parser.add_argument("--pack", type=positive_int, default=1, metavar="K",
                        help=f"train up to K {what} as one packed network (nlfs.train.train_packed: the "
                             "surrogate CNN only; each gets the result it gets alone, to float tolerance). A GPU "
                             "feature: on a CPU it is slower (bench/results/packed_training_cpu.md). Default 1 on "
                             "every device: packing is not yet measured on a GPU (bench/gpu_session.sh does)")


def add_known_loss_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--novel-only`` / ``--include-known`` (one of them): which known losses in disguise a tool that
    takes a search's best leaves out. A catalogue loss at its published constants is left out unless
    ``--include-known``; ``--novel-only`` leaves out the run's warm starts as given too."""
    known = parser.add_mutually_exclusive_group()
    known.add_argument("--novel-only", action="store_true",
                       help=f"{prefix}also leave out a run's warm starts as given (unless the run let them "
                            "compete); catalogue losses are left out either way")
    known.add_argument("--include-known", action="store_true",
                       help=f"{prefix}keep catalogue losses at their published constants (CE in disguise among "
                            "them); by default they are left out, uncounted, as no find")


# ------------------------------------------------------------------------------------------ running
class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that knows the command that continues the interrupted work."""

    def __init__(self, resume: str):
        super().__init__(resume)
        self.resume = resume


def command_line(tool: str, argv: typing.Iterable[str]) -> str:
    """``python -m nlfs.tool ARGS``, quoted for a POSIX shell: a command a person can paste."""
    import shlex

    return shlex.join(["python", "-m", tool, *argv])


@contextlib.contextmanager
def resume_with(command: str):
    """An interrupt inside this block ends with ``interrupted; resume with: <command>``."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(command) from None


def _terminate(signum, frame):
    raise KeyboardInterrupt


_ERRORS = (ValueError, FileNotFoundError, FileExistsError, RuntimeError)  # DatasetError is a FileNotFoundError


def run_main(prog: str, main, argv=None) -> int:
    """``main(argv)`` with the endings a user can act on: a configuration error (a bad setting, a
    missing file, a damaged run) is ``prog: error: ...`` and exit 2; Ctrl-C or SIGTERM is one line
    (``prog: interrupted; resume with: ...`` inside a ``resume_with`` block) and exit 130."""
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except KeyboardInterrupt as err:
        resume = getattr(err, "resume", None)
        print(f"{prog}: interrupted" + (f"; resume with: {resume}" if resume else ""), file=sys.stderr)
        return 130
    except _ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
