"""``python -m nlfs.train --loss NGL --dataset fashion-mnist --model surrogate --epochs 3 --json``."""

from __future__ import annotations

import json
import sys

from .._cli import ArgumentParser, add_training_options, key_values, run_main, train_defaults, training_overrides
from ._check import check_config
from ._config import TrainConfig
from ._errors import TrainingError
from ._loop import train


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m nlfs.train", description="Train one model with one loss and print the "
                       "result record (on scikit-learn digits unless --dataset says otherwise).")
    p.add_argument("--loss", default="CE", help="catalogue name (CE, NGL, ...) or an expression string")
    p.add_argument("--constant", action="extend", type=key_values(float), default=[], metavar="NAME=VALUE",
                   help="override a loss constant (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, data order, augmentation")
    dataset_default = "the dataset's, from nlfs.train.DATASET_DEFAULTS"
    add_training_options(p, defaults=train_defaults(),
                         unset={"epochs": dataset_default, "batch_size": dataset_default, "lr": dataset_default,
                                "val_size": dataset_default, "train_size": "the whole training split",
                                "data_root": "the dataset's usual place", "threads": "torch's"},
                         helps={"threads": "CPU threads for torch"})
    p.add_argument("--no-test", action="store_true", help="do not evaluate on the test split")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result record as one JSON line, last")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main("nlfs.train", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    constants = dict(args.constant) or None
    cfg = TrainConfig(seed=args.seed, evaluate_test=not args.no_test, progress=not args.no_progress,
                      **training_overrides(args))
    try:
        check_config(cfg, args.loss, constants)
        result = train(args.loss, cfg, constants=constants)
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
