"""Channels-last against contiguous (NCHW) tensors for whole trainings on the CPU, side by side.

Each (model, dataset) trains cross-entropy with both memory formats in turn, ``--repeats`` times,
one thread; the table gives the minimum and median wall time of each and their ratio. This is what
chose ``TrainConfig.channels_last``'s default.

    python -m bench.memory_format --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import machine_name, today, write_csv, write_markdown  # noqa: E402
from nlfs.train import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {  # name -> TrainConfig fields (a search's rung 0, a held-out ResNet, digits)
    "surrogate fashion-mnist 32 steps": dict(dataset="fashion-mnist", train_size=4096, epochs=1, val_size=1000),
    "resnet9v2 fashion-mnist 16 steps": dict(dataset="fashion-mnist", model="resnet9v2", train_size=2048,
                                             epochs=1, val_size=1000),
    "surrogate digits 2 epochs": dict(dataset="digits", epochs=2),
}
COLUMNS = ["date", "machine", "case", "format", "repeats", "min_s", "median_s", "speedup_min", "speedup_median"]


def measure(case: dict, repeats: int) -> dict[bool, list[float]]:
    times: dict[bool, list[float]] = {False: [], True: []}
    for fmt in (False, True):  # warm both (dataset load, model cache)
        train("CE", TrainConfig(**case, channels_last=fmt, evaluate_test=False, progress=False))
    for _ in range(repeats):
        for fmt in (False, True):  # interleaved, so load on a shared machine falls on both
            t = time.perf_counter()
            train("CE", TrainConfig(**case, channels_last=fmt, evaluate_test=False, progress=False))
            times[fmt].append(time.perf_counter() - t)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "memory_format_cpu"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name, case in CASES.items():
        try:
            t = measure(case, args.repeats)
        except Exception as err:  # noqa: BLE001 - a dataset missing here: say so and go on
            print(f"{name}: skipped ({err})", file=sys.stderr)
            continue
        base_min, base_med = min(t[False]), statistics.median(t[False])
        for fmt in (False, True):
            rows.append(dict(date=today(), machine=machine_name(), case=name,
                             format="channels_last" if fmt else "contiguous", repeats=args.repeats,
                             min_s=round(min(t[fmt]), 3), median_s=round(statistics.median(t[fmt]), 3),
                             speedup_min=round(base_min / min(t[fmt]), 2),
                             speedup_median=round(base_med / statistics.median(t[fmt]), 2)))
        print(rows[-1], flush=True)
    write_csv(f"{args.out}.csv", rows, COLUMNS)
    command = "python -m bench.memory_format " + " ".join(sys.argv[1:] if argv is None else argv)
    write_markdown(f"{args.out}.md", rows, COLUMNS, "Memory format of whole CPU trainings (1 thread, CE)",
                   preamble=f"`{command}`; speedup = contiguous time / this format's time, from interleaved "
                            "runs on a machine that was also running a search (so the minimum is the fairer).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
