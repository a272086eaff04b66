"""``python -m nlfs.train --loss NGL --dataset fashion-mnist --model surrogate --epochs 3 --json``."""

from __future__ import annotations

import argparse
import json
import sys

from ..data import AUGMENTS, DATASETS, DatasetError
from ..models import MODELS
from ._check import check_config
from ._config import AMPS, OPTIMIZERS, SCHEDULES, TrainConfig
from ._errors import TrainingError
from ._loop import train


def _constants(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--constant expects NAME=VALUE, got {item!r}")
        out[key.strip()] = float(value)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nlfs.train", description="Train one model with one loss "
                                "and print the result record.")
    p.add_argument("--loss", default="CE", help="catalogue name (CE, NGL, ...) or an expression string")
    p.add_argument("--constant", action="append", default=[], metavar="NAME=VALUE",
                   help="override a loss constant (repeatable)")
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--model", default="surrogate", help=f"one of {', '.join(MODELS)} or wrn-D-K")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    p.add_argument("--schedule", default="cosine", choices=SCHEDULES)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--augment", default="none", choices=AUGMENTS)
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="symmetric noise on the training labels (validation and test stay clean)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "cpp", "triton"))
    p.add_argument("--amp", default="auto", choices=AMPS)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true", help="CIFAR: download with torchvision if missing")
    p.add_argument("--checkpoint", default=None, help="local state dict to fine-tune from")
    p.add_argument("--no-test", action="store_true", help="do not evaluate on the test split")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result record as one JSON line, last")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfg = TrainConfig(
        dataset=args.dataset, model=args.model, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, train_size=args.train_size, val_size=args.val_size, lr=args.lr,
        optimizer=args.optimizer, schedule=args.schedule, weight_decay=args.weight_decay,
        augment=args.augment, seed=args.seed, split_seed=args.split_seed, device=args.device,
        backend=args.backend, amp=args.amp, compile=args.compile, data_root=args.data_root,
        download=args.download, checkpoint=args.checkpoint, evaluate_test=not args.no_test,
        progress=not args.no_progress, threads=args.threads, label_noise=args.label_noise)
    constants = _constants(args.constant) or None
    try:
        check_config(cfg, args.loss, constants)
        result = train(args.loss, cfg, constants=constants)
    except (DatasetError, ValueError, FileNotFoundError) as err:
        print(f"nlfs.train: error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"nlfs.train: error while training: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        r = result
        status = f"FAILED ({r.reason})" if r.diverged else "ok"
        test = "-" if r.test_acc is None else f"{r.test_acc:.4f}"
        print(f"{r.loss} [{r.backend}] on {r.dataset}/{r.model} aug={r.augment} seed={r.seed}: {status}\n"
              f"  val {r.val_acc:.4f} (best {r.best_val_acc:.4f})  test {test}  "
              f"train loss {r.final_train_loss}  {r.steps} steps  {r.wall_time:.2f}s on {r.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
