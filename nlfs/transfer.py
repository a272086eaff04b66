"""Transfer evaluation: train every (loss, seed) pair under one configuration and compare each loss
with cross-entropy over the same seeds.

``python -m nlfs.transfer --preset fashion-mnist-cpu --out DIR`` or with explicit settings
(``--losses "CE;NGL;-y*log(p)+0.1*(1-p)**2" --model surrogate --dataset fashion-mnist --seeds 5``).

``--from DIR`` takes what a run directory hands on: the survivors of ``nlfs.eliminate``
(``DIR/finalists.json``) when it has them, else the search's ``--top`` best, tuned constants from
``DIR/tuned.json`` where it has them; each loss keeps its name (``<run>#<id>``), constants and gradient
scale. ``--losses-file`` reads nlfs/found_losses.json's format, a ``finalists.json``, an
``elimination.json`` or a ``tuned.json``.

Every pair gets the same ``TrainConfig`` except the loss: seed ``i`` (model init, data order,
augmentation) is shared by every loss, and the train/validation split (``split_seed``: the validation
images, the ``train_size`` subset and the label noise) is fixed, or with ``--split-seed per-seed``
drawn by each seed (``split_seed = seed``), every loss sharing it on that seed.

Outputs in ``--out`` (file stem ``--name``, default ``transfer``): ``NAME.csv`` (one row per run; also
the resume state, rewritten atomically after every run), ``NAME.md`` (mean ± std test accuracy per
loss, difference to CE in percentage points with its 95% interval, paired t-test and Wilcoxon p-values,
and the regime: data, budget, label noise, augmentation, gradient scale) and ``NAME.png``.

Resume: a (loss, seed) pair already in the CSV with status ``ok`` or ``diverged`` is never trained
again; ``error`` rows (the trainer raised) are retried only with ``--retry-errors``.

Failures: a diverged or errored run stays in the CSV and is counted in the table's "failed" column and
listed under it; it is excluded from the means and from the paired tests (which use the seeds where
both the loss and CE finished).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import stats as _stats
from ._cli import (
    PER_SEED,
    TRAINING_OPTIONS,
    ArgumentParser,
    add_pack_option,
    add_split_seed_option,
    add_training_options,
    checked_losses,
    command_line,
    parse_seeds,
    positive_float,
    positive_int,
    resume_with,
    run_main,
    seeds_list,
    split_losses,
    training_overrides,
)
from ._io import machine_name, today, write_table
from .losses import resolve_spec
from .train import training_key

__all__ = ["COLUMNS", "PRESETS", "LossEntry", "baselines_of", "build_config", "entry_of", "losses_from",
           "losses_from_run", "main", "parse_losses", "run_transfer", "summarise", "versus_strongest",
           "write_markdown", "write_plot"]

COLUMNS = ["loss", "seed", "model", "dataset", "augment", "test_acc", "val_acc", "best_val_acc", "status",
           "reason", "wall_time", "expression", "constants", "backend", "epochs", "steps", "train_size",
           "val_size", "batch_size", "lr", "optimizer", "device", "config_hash", "run_key", "machine", "date",
           "label_noise", "grad_scale", "scale", "label_noise_kind", "split_seed"]

REFERENCE = "CE"
_CATALOGUE_ALL = ("CE", "LabelSmoothingCE", "Focal", "Poly1", "Baikal", "NGL", "SCE", "TaylorGLO")

# ------------------------------------------------------------------------------------------ presets
_WRN = dict(model="wrn-28-10", epochs=200, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4,
            seeds=5, losses=list(_CATALOGUE_ALL))
_WRN_NOTE = ("GPU. WRN-28-10, 200 epochs, batch 128, SGD-Nesterov lr 0.1, wd 5e-4, cosine: the usual "
             "WRN recipe (Zagoruyko & Komodakis); the transfer paper (arXiv 2404.06633) trains WRN-28-10 "
             "under each augmentation, its exact schedule is not in LOSSES.md.")


def _presets() -> dict[str, dict]:
    p: dict[str, dict] = {}
    for ds in ("cifar10", "cifar100"):
        for aug in ("flipcrop", "cutout", "mixup", "cutmix", "randaugment", "autoaugment"):
            # nlfs.data puts every technique other than "none" on top of the flip + crop baseline.
            p[f"{ds}-wrn28-10-{aug}"] = dict(_WRN, dataset=ds, augment=aug, note=_WRN_NOTE)
        p[f"{ds}-effnetv2s-finetune"] = dict(
            model="efficientnet_v2_s", dataset=ds, augment="randaugment", epochs=30, batch_size=128,
            optimizer="adamw", lr=1e-3, weight_decay=1e-2, dropout=0.2, seeds=6,
            losses=["CE", "Baikal", "NGL"],
            note="GPU. EfficientNetV2-S fine-tuning (RandAugment, AdamW). Needs --checkpoint PATH (a local "
                 "ImageNet state dict; nothing is downloaded). The paper's datasets (Stanford Cars, "
                 "Oxford Flowers, Caltech) are not in nlfs.data, so CIFAR stands in; final tests there use "
                 "6 runs per setting against CE and Baikal.")
        p[f"{ds}-ngl-resnet18"] = dict(
            model="resnet18", dataset=ds, augment="flipcrop", epochs=100, batch_size=128, optimizer="sgd",
            lr=0.1, weight_decay=5e-4, seeds=5, losses=["CE", "NGL", "Focal", "SCE"],
            note="GPU. The NGL paper's comparison (CE, NGL, Focal, SCE) on a dataset it used that "
                 "torchvision has; its Inception network is not in nlfs.models, ResNet-18 stands in.")
    p["fashion-mnist-ngl-resnet18"] = dict(
        p["cifar10-ngl-resnet18"], dataset="fashion-mnist", augment="flipcrop", epochs=50,
        note="GPU. The NGL paper's Fashion-MNIST comparison (published CE 94.0, NGL +0.07) with ResNet-18 "
             "instead of its Inception network.")
    p["fashion-mnist-cpu"] = dict(
        model="surrogate", dataset="fashion-mnist", augment="none", epochs=2, train_size=8000, val_size=2000,
        seeds=5, losses=list(_CATALOGUE_ALL), threads=1,
        note="CPU, minutes: the surrogate CNN, 8,000 training images, 2 epochs (124 steps at batch 128); "
             "8 losses x 5 seeds (run times: bench/results/transfer_fashion_mnist_cpu.md).")
    p["fashion-mnist-resnet-cpu"] = dict(
        model="resnet9v2", dataset="fashion-mnist", augment="none", epochs=2, train_size=8000,
        val_size=2000, seeds=5, losses=["CE", "NGL", "Baikal", "Focal", "Poly1"], threads=1,
        note="CPU, minutes: the small pre-activation ResNet (ResNet9V2, dropout 0.5) on 8,000 "
             "Fashion-MNIST images for 2 epochs; 5 losses x 5 seeds.")
    p["digits-smoke"] = dict(model="surrogate", dataset="digits", augment="none", epochs=2, seeds=2,
                             losses=["CE", "NGL"], note="CPU, seconds: a smoke test on sklearn digits.")
    return p


PRESETS: dict[str, dict] = _presets()
_CONFIG_KEYS = ("model", "dataset", "augment", "epochs", "steps", "batch_size", "train_size", "val_size",
                "lr",
                "optimizer", "weight_decay", "momentum", "schedule", "warmup", "dropout", "checkpoint",
                "augment_params", "split_seed", "label_noise")


# ------------------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class LossEntry:
    """One loss to compare: ``label`` (table/CSV name), ``loss`` (catalogue name or expression
    string passed to the trainer) and ``constants`` (overrides, e.g. from a search run); ``baseline``:
    a loss to compare against (a published one, or one named by ``--baselines``), not a contender."""

    label: str
    loss: str  # or any loss the trainer accepts (an nn.Module/callable) when built in Python
    constants: dict | None = None
    baseline: bool = False

    @property
    def scale(self) -> float:
        """The gradient-scale factor the loss trains with (its spec's; 1 for a callable)."""
        try:
            return float(resolve_spec(self.loss).scale)
        except Exception:  # noqa: BLE001 - a callable loss carries no scale of ours
            return 1.0

    @property
    def expression(self) -> str:
        try:
            return resolve_spec(self.loss).text
        except Exception:
            return self.loss if isinstance(self.loss, str) else ""


def parse_losses(specs: list[str] | str) -> list[LossEntry]:
    """Catalogue names and expression strings. Each string may hold several, separated by ``;`` or by
    top-level commas (commas inside parentheses belong to the expression). ``all`` expands to the
    catalogue entries with a known formula. ``label=expression`` names an expression."""
    from . import losses as _losses

    if isinstance(specs, str):
        specs = [specs]
    entries: list[LossEntry] = []
    for spec in specs:
        for item in split_losses(spec):
            if item.lower() == "all":
                entries += [LossEntry(n, n) for n in _CATALOGUE_ALL]
                continue
            label, text = item, item
            if "=" in item and item.split("=", 1)[0].strip().isidentifier():
                label, text = (s.strip() for s in item.split("=", 1))
            if _losses.is_registered(text):
                text = _losses.get(text).name
                label = text if label == item else label
            entries.append(LossEntry(label, text, baseline=text in _losses.BUILTIN))  # published: a baseline
    return entries


def entry_of(loss: dict) -> LossEntry:
    """A LossEntry for a loss in nlfs/found_losses.json's format, trained exactly as it was found: its
    name, constants, class reduction and gradient scale (a LossSpec where the scale or class reduction is not
    the default, so nothing of it is lost on the way to the trainer)."""
    from .search import entry_spec

    spec = entry_spec(loss)
    constants = dict(spec.constants) or None
    if spec.scale == 1.0 and spec.class_reduction == "class_sum":
        return LossEntry(loss["name"], loss["expression"], constants)
    return LossEntry(loss["name"], spec, constants)


def losses_from_run(run_dir: str | Path, k: int = 3) -> list[LossEntry]:
    """The ``k`` best unique ok candidates of a search run that are no known loss in disguise
    (``nlfs.search.best_new_candidates``), named ``<run>#<id>`` as in its exports, with their stored
    constants, class reduction and gradient scale."""
    from .losses import stored_class_reduction
    from .search import best_new_candidates, read_run, row_name

    run_dir = Path(run_dir)
    rows, saved = read_run(run_dir)
    best = best_new_candidates(rows, saved, k)
    if not best:
        raise ValueError(f"search run {run_dir} has no successfully trained candidates other than known losses "
                         "in disguise")
    return [entry_of({"name": row_name(r, run_dir), "expression": r["expression"], "constants": r.get("constants"),
                      "class_reduction": stored_class_reduction(r, stored_class_reduction(saved)),
                      "scale": r.get("scale") or 1.0}) for r in best]


def losses_from(run_dir: str | Path, k: int = 3, log=print) -> list[LossEntry]:
    """What a run directory hands on (``nlfs.search.run_losses``): the elimination's survivors
    (``finalists.json``) when it has them, else the search's ``k`` best with tuned constants where
    ``tuned.json`` has them. Says which on ``log``."""
    from .search import run_losses

    entries, what = run_losses(run_dir, k)
    log(f"nlfs.transfer: --from {run_dir}: {what}")
    return [entry_of(e) for e in entries]


def _dedupe(entries: list[LossEntry]) -> list[LossEntry]:
    seen, out = set(), []
    for e in entries:
        if e.label in seen:
            continue
        seen.add(e.label)
        out.append(e)
    if REFERENCE not in seen:  # the table compares against CE: always train it
        out.insert(0, LossEntry(REFERENCE, REFERENCE, baseline=True))
    return out


# ------------------------------------------------------------------------------------------- config
def build_config(settings: dict):
    """A ``TrainConfig`` (seed 0, ``evaluate_test=True``) from a dict of its fields; other keys ignored."""
    from .train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in settings.items() if k in fields and v is not None}
    kw["evaluate_test"] = True
    kw["seed"] = 0
    return TrainConfig(**kw)


def _config_hash(cfg, split_per_seed: bool = False) -> str:
    d = cfg.to_dict()
    key = {k: d.get(k) for k in _CONFIG_KEYS}
    if split_per_seed:  # only when used: CSVs of a fixed split keep their hash
        key["split_seed"] = PER_SEED
    if d.get("resize") is not None:  # only when set: CSVs written before resize existed keep their hash
        key["resize"] = d["resize"]
    if d.get("label_noise_kind") is not None:  # to_dict leaves out the default (symmetric) likewise
        key["label_noise_kind"] = d["label_noise_kind"]
    return training_key(key, length=10, algorithm="sha1")


def _kind(cfg) -> str:
    """`` (pairflip)`` after a noise rate: the noise kind, named when there is noise."""
    return f" ({cfg.label_noise_kind})" if cfg.label_noise else ""


# ------------------------------------------------------------------------------------------- CSV I/O
def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["seed"] = int(r["seed"])
        for k in ("test_acc", "val_acc", "best_val_acc", "wall_time"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    return rows


def seeded(cfg, seed: int, split_per_seed: bool = False):
    """``cfg`` trained with ``seed``; with ``split_per_seed``, its split seed too (its own validation
    images, training subset and label noise), else the fixed one."""
    return dataclasses.replace(cfg, seed=seed, **({"split_seed": seed} if split_per_seed else {}))


def run_key(entry: LossEntry, cfg, split_per_seed: bool = False) -> str:
    """Everything that makes a (loss, seed) row what it is beyond the shared training settings: the
    loss as trained (expression, constants, gradient scale, class reduction), backend and device, and
    a split drawn per seed when it is. A row is resumed only when its key matches; a changed loss
    under an old label is trained again."""
    try:
        spec = resolve_spec(entry.loss)
        constants = sorted({**spec.constants, **(entry.constants or {})}.items())
        loss = [spec.text, spec.class_reduction, spec.scale, constants]
    except Exception:  # noqa: BLE001 - a callable loss: its label and constants are all we know
        loss = [str(entry.loss), sorted((entry.constants or {}).items())]
    split = [PER_SEED] if split_per_seed else []  # only when used: rows of a fixed split keep their key
    return training_key([loss, cfg.backend, cfg.device, cfg.grad_scale, cfg.lr, *split], length=12,
                        algorithm="sha1")


def _done(row: dict, retry_errors: bool, key: str | None = None) -> bool:
    if key is not None and (row.get("run_key") or "") != key:
        return False
    return row["status"] in ("ok", "diverged") or (row["status"] == "error" and not retry_errors)


# ------------------------------------------------------------------------------------------- runner
def _payload(entry: LossEntry, cfg, seed: int, inline: bool) -> dict:
    """The job that trains ``entry`` on ``seed``: its loss as it is in this process, or (for a worker
    process, which starts with the built-in catalogue only, not the losses registered here with
    ``--losses-file``) resolved to a ``LossSpec`` where it is a name or an expression."""
    loss = entry.loss
    if not inline and isinstance(loss, str):
        loss = resolve_spec(loss)
    return {"loss": loss, "constants": entry.constants, "train": dataclasses.replace(cfg, seed=seed).to_dict(),
            "rejection": False, "name": entry.label}


def _record(out: dict, cfg) -> dict:
    """A CSV row's training columns from a job's result."""
    res = out.get("result")
    if out["status"] == "error" or res is None:  # configuration/data errors: record, do not hide
        return dict(status="error", reason=out.get("reason", ""), test_acc=None, val_acc=None, best_val_acc=None,
                    wall_time=out.get("wall_time", 0.0), backend=cfg.backend, epochs=cfg.epochs, steps=cfg.steps)
    status = "diverged" if res["diverged"] else "ok"
    return dict(status=status, reason=res["reason"], test_acc=res["test_acc"] if status == "ok" else None,
                val_acc=res["val_acc"], best_val_acc=res["best_val_acc"], wall_time=res["wall_time"],
                backend=res["backend"], epochs=res["epochs"], steps=res["steps"], train_size=res["train_size"],
                val_size=res["val_size"], batch_size=res["batch_size"], lr=res["lr"], optimizer=res["optimizer"],
                device=res["device"])


def _one_training_at_a_time(jobs: list[tuple]) -> list[tuple]:
    """``jobs`` with those of one training configuration (seed, learning rate: all but the loss)
    next to each other, each group where its first job was: the jobs in flight together are then
    those a pack can hold (``make_executor(pack=K)`` packs only equal configurations)."""
    groups: dict[str, list] = {}
    for job in jobs:
        groups.setdefault(training_key(job[1].to_dict()), []).append(job)
    return [job for group in groups.values() for job in group]


def _trainings(jobs: list[tuple], workers: int = 1, threads: int | None = None, pack: int = 1):
    """Yield ``(job, record)`` for every ``job = (entry, cfg, seed)``: in this process, or with
    ``workers > 1`` in that many worker processes, in the order they finish (the callers key every
    row, so order does not matter, and each row is written as soon as it is in). Each training uses
    ``threads`` threads (default: the cores shared among the workers); ``pack`` > 1 trains up to that
    many losses of one configuration as one packed network (``nlfs.search.make_executor``'s ``pack``),
    so jobs run grouped by configuration."""
    from .search import make_executor, run_jobs

    jobs = _one_training_at_a_time(jobs)
    workers = max(1, min(workers, len(jobs)))
    executor = make_executor("local", workers, threads=threads, pack=pack)
    inline = workers == 1
    try:
        for job, out in run_jobs(executor, ((job, _payload(*job, inline)) for job in jobs)):
            yield job, _record(out, job[1])
    finally:  # interrupted: the workers' trainings stop now (what finished is written; the CSV resumes)
        executor.close()


LR_COLUMNS = ["loss", "lr", "seed", "best_val_acc", "status", "reason", "run_key", "wall_time", "split_seed"]


def select_learning_rates(entries: list[LossEntry], cfg, grid: list[float], seeds: list[int], path: Path,
                          log=print, workers: int = 1, threads: int | None = None,
                          split_per_seed: bool = False, pack: int = 1) -> dict[str, float]:
    """The learning rate of each loss, chosen from the same ``grid`` for every loss (CE included) by
    mean best *validation* accuracy over ``seeds`` (the test split is never read here; a failed run
    scores 0). Every run is a row of ``path`` (resumable, keyed like the final runs, split included).
    ``pack``: as ``run_transfer``'s."""
    done = {}
    if path.is_file():
        with path.open(newline="") as fh:
            for r in csv.DictReader(fh):
                done[(r["loss"], float(r["lr"]), int(r["seed"]), r["run_key"])] = r
    val = dataclasses.replace(cfg, evaluate_test=False)
    jobs = [(entry, seeded(dataclasses.replace(val, lr=lr), seed, split_per_seed), seed)
            for seed in seeds for lr in grid for entry in entries]
    jobs = [j for j in jobs if (j[0].label, j[1].lr, j[2], run_key(j[0], j[1], split_per_seed)) not in done]
    for (entry, cfg_lr, seed), rec in _trainings(jobs, workers, threads, pack):
        key = (entry.label, cfg_lr.lr, seed, run_key(entry, cfg_lr, split_per_seed))
        done[key] = dict(loss=entry.label, lr=cfg_lr.lr, seed=seed, run_key=key[3], status=rec["status"],
                         reason=rec["reason"], best_val_acc=rec["best_val_acc"] if rec["status"] == "ok" else 0.0,
                         wall_time=rec["wall_time"], split_seed=cfg_lr.split_seed)
        write_table(path, list(done.values()), LR_COLUMNS)
        log(f"lr grid: {entry.label} lr {cfg_lr.lr} seed {seed}: {rec['status']} val {done[key]['best_val_acc']:.4f}")
    chosen = {}
    for entry in entries:
        def score(lr, entry=entry):
            key_lr = run_key(entry, dataclasses.replace(val, lr=lr), split_per_seed)
            return sum(float(done[(entry.label, lr, s, key_lr)]["best_val_acc"] or 0.0) for s in seeds) / len(seeds)
        chosen[entry.label] = max(grid, key=lambda lr: (score(lr), -abs(math.log(lr / (cfg.lr or lr)))))
    log("lr grid: chosen " + ", ".join(f"{k} {v:g}" for k, v in chosen.items()))
    return chosen


def run_transfer(entries: list[LossEntry], cfg, seeds: list[int], out: str | Path, name: str = "transfer",
                 retry_errors: bool = False, log=print, command: str = "", note: str = "",
                 plot: bool = True, setup: tuple[str, ...] = (), lr_grid: list[float] | None = None,
                 lr_seeds: list[int] | None = None, workers: int = 1, threads: int | None = None,
                 split_per_seed: bool = False, pack: int = 1) -> list[dict]:
    """Train every missing (loss, seed) pair, rewrite the CSV after each, then write the table and
    plot. Returns the rows of this configuration. With ``lr_grid``, every loss first gets its own
    learning rate from that grid (``select_learning_rates`` on ``lr_seeds``, validation only). With
    ``split_per_seed``, each seed draws its own validation images, training subset and label noise
    (``split_seed = seed``; the ``split_seed`` column records it), else ``cfg.split_seed`` holds for all.
    ``workers > 1`` trains that many runs at once in worker processes; each training uses ``threads``
    threads (default ``cfg.threads``, else the cores shared among the workers). ``pack`` > 1 trains up
    to that many losses of one seed (and learning rate) as one packed network (the surrogate CNN only;
    each row as unpacked, to float tolerance): a GPU feature."""
    from .train import check_config

    out = Path(out)
    csv_path = out / f"{name}.csv"
    threads = threads or cfg.threads
    entries = _dedupe(entries)
    for entry in entries:  # every loss must build and train here before the first run starts
        check_config(cfg, entry.loss, entry.constants)
    lrs = {}
    if lr_grid:
        cfg = dataclasses.replace(cfg, lr=None)  # the shared settings; each loss's lr comes from the grid
        lrs = select_learning_rates(entries, cfg.resolved() if cfg.lr is None else cfg, sorted(lr_grid),
                                    lr_seeds or seeds[:2], out / f"{name}_lr.csv", log, workers, threads,
                                    split_per_seed, pack)
        setup = (*setup, "Learning rate per loss from the grid " + ", ".join(f"{x:g}" for x in sorted(lr_grid))
                 + f" by mean best validation accuracy over seeds {lr_seeds or seeds[:2]}: "
                 + ", ".join(f"{k} {v:g}" for k, v in lrs.items()) + ".")
    chash = _config_hash(cfg, split_per_seed) + (
        "-grid" + "_".join(f"{x:g}" for x in sorted(lr_grid)) if lr_grid else "")
    rows = _read_rows(csv_path)
    other = {r.get("config_hash") or "" for r in rows} - {chash}
    if other:
        raise SystemExit(f"{csv_path} holds runs of another configuration (config_hash {sorted(other)} "
                         f"!= {chash}): use another --out or --name")
    index = {(r["loss"], r["seed"]): i for i, r in enumerate(rows)}
    per_loss = {e.label: dataclasses.replace(cfg, lr=lrs[e.label]) if lrs else cfg for e in entries}
    keys = {e.label: run_key(e, per_loss[e.label], split_per_seed) for e in entries}
    todo = [(e, s) for s in seeds for e in entries
            if not ((e.label, s) in index and _done(rows[index[(e.label, s)]], retry_errors, keys[e.label]))]
    log(f"nlfs.transfer: {len(entries)} losses x {len(seeds)} seeds; {len(todo)} to train, "
        f"{len(entries) * len(seeds) - len(todo)} already in {csv_path}")
    machine, date = machine_name(), today()
    jobs = [(entry, seeded(per_loss[entry.label], seed, split_per_seed), seed) for entry, seed in todo]
    for i, ((entry, job_cfg, seed), rec) in enumerate(_trainings(jobs, workers, threads, pack), 1):
        row = dict(loss=entry.label, seed=seed, model=cfg.model, dataset=cfg.dataset, augment=cfg.augment,
                   expression=entry.expression, constants=entry.constants or "", config_hash=chash,
                   run_key=keys[entry.label], label_noise=cfg.label_noise, grad_scale=cfg.grad_scale,
                   label_noise_kind=cfg.label_noise_kind if cfg.label_noise else "",
                   scale=entry.scale,
                   machine=machine, date=date, train_size=cfg.train_size, val_size=cfg.val_size,
                   batch_size=cfg.batch_size, lr=per_loss[entry.label].lr, optimizer=cfg.optimizer,
                   split_seed=job_cfg.split_seed)
        row.update(rec)
        key = (entry.label, seed)
        if key in index:
            rows[index[key]] = row
        else:
            index[key] = len(rows)
            rows.append(row)
        write_table(csv_path, rows, COLUMNS)  # atomic: a killed run never leaves a truncated CSV
        acc = "" if row["test_acc"] is None else f" test {row['test_acc']:.4f}"
        log(f"[{i}/{len(todo)}] {entry.label} seed {seed}: {row['status']}{acc} "
            f"({row['wall_time']:.1f} s, {row['backend']}){' ' + row['reason'] if row['reason'] else ''}")
    labels = [e.label for e in entries]
    mine = [r for r in rows if r["loss"] in labels and r["seed"] in seeds]
    summary = summarise(mine, labels, baselines={e.label for e in entries if e.baseline})
    write_markdown(out / f"{name}.md", summary, mine, cfg, command=command, note=note, setup=setup,
                   split_per_seed=split_per_seed)
    if plot:
        write_plot(out / f"{name}.png", summary, mine)
    return mine


# ------------------------------------------------------------------------------------------- summary
def summarise(rows: list[dict], labels: list[str], reference: str = REFERENCE, baselines=()) -> list[dict]:
    """Per loss: n ok/failed, mean ± std test accuracy over ok runs, and the paired comparison with
    ``reference`` over the seeds where both finished; ``baseline``: whether it is one of ``baselines``
    (``reference`` always is), a loss to compare against rather than a contender."""
    acc = {lab: {r["seed"]: r["test_acc"] for r in rows if r["loss"] == lab and r["status"] == "ok"
                 and r["test_acc"] is not None} for lab in labels}
    ref = acc.get(reference, {})
    out = []
    for lab in labels:
        mine = [r for r in rows if r["loss"] == lab]
        failed = [r for r in mine if r["status"] != "ok"]
        m, s = _stats.mean_std(acc[lab].values())
        test = None if lab == reference else _stats.paired_by_key(acc[lab], ref)
        expr = next((r.get("expression") for r in mine if r.get("expression")), "")
        backends = sorted({r.get("backend") or "" for r in mine} - {""})
        out.append(dict(loss=lab, n_ok=len(acc[lab]), n_failed=len(failed), mean=m, std=s, test=test, acc=acc[lab],
                        baseline=lab == reference or lab in baselines,
                        failures=[(r["seed"], r["status"], r.get("reason") or "") for r in failed],
                        expression=expr, backends=backends,
                        wall=sum(r.get("wall_time") or 0.0 for r in mine)))
    return out


def versus_strongest(summary: list[dict], regime: tuple[str, ...] = ()) -> dict | None:
    """Every contender (a loss that is no baseline: ``summarise``'s ``baseline``) against the strongest
    baseline on its own seeds (``nlfs.stats.strongest_on``: among the baselines that finished every seed
    the contender finished, the highest mean test accuracy there); paired over those seeds, Holm over
    these comparisons (beating CE is no claim when label smoothing or GCE beat CE too). A baseline that
    diverged on every seed is ``failed`` (not the one to beat); one missing a seed otherwise (an error, a
    seed not run) keeps the contender from beating the field (``incomplete``). ``missing``: the names of
    ``regime`` (the regime's strongest known losses) no baseline that finished stands for. None without a
    contender."""
    from .losses import get

    baselines = [x for x in summary if x["baseline"]]
    contenders = [x for x in summary if not x["baseline"] and x["n_ok"]]
    if not contenders:
        return None
    # a baseline that diverged on every seed does not train in this regime: not the one to beat; one that
    # raised (an error, not the loss's doing) or is missing a seed keeps any claim open until it trains
    failed = [b["loss"] for b in baselines if not b["n_ok"] and b["failures"]
              and all(status == "diverged" for _, status, _ in b["failures"])]
    scores = {b["loss"]: b["acc"] for b in sorted(baselines, key=lambda b: b["loss"] != REFERENCE)}  # ties: CE
    rows = []
    for c in contenders:
        seeds = set(c["acc"])
        row = {"loss": c["loss"], "strongest": _stats.strongest_on(seeds, scores), "test": None,
               "seeds": sorted(seeds), "failed": failed,
               "incomplete": [b["loss"] for b in baselines if b["loss"] not in failed and not seeds <= set(b["acc"])]}
        if row["strongest"] is not None:
            best = scores[row["strongest"]]
            row["test"] = _stats.paired_by_key(c["acc"], {k: best[k] for k in seeds})
        rows.append(row)
    tested = [r for r in rows if r["test"] is not None and math.isfinite(r["test"].p_t)]
    for r, p in zip(tested, _stats.holm([r["test"].p_t for r in tested])):
        r["p_holm"] = p
    for r in rows:
        r.setdefault("p_holm", math.nan)
        r["beats"] = bool(r["test"] is not None and r["test"].mean_diff > 0 and r["p_holm"] < 0.05
                          and not r["incomplete"])
    finished = {x["loss"] for x in baselines if x["n_ok"]} | {x["expression"] for x in baselines if x["n_ok"]}
    missing = [n for n in regime if n not in finished and get(n).text not in finished]
    return {"rows": rows, "tested": len(tested), "missing": missing,
            "baselines": [b["loss"] for b in baselines]}


def _strongest_lines(versus: dict) -> list[str]:
    lines = ["", "## Against the strongest baseline", "",
             f"Baselines: {', '.join(versus['baselines'])} (the published losses and those named by --baselines). "
             "Each other loss is compared with the strongest of them on its own seeds: among the baselines that "
             "finished every seed it finished, the one with the highest mean test accuracy over those seeds; "
             f"paired over those seeds, Holm-corrected over the {versus['tested']} comparison(s) with a p-value. "
             "A loss beats the field only when it is ahead there with Holm p < 0.05 and no baseline is missing "
             "one of its seeds.", "",
             "| loss | strongest baseline on its seeds | seeds | Δ pp [95% CI] | better/worse | p (t-test) | p (Holm) "
             "| beats it |", "|---|---|---|---:|---:|---:|---:|---|"]
    for r in versus["rows"]:
        t = r["test"]
        seeds = ",".join(map(str, r["seeds"]))
        if t is None:
            lines.append(f"| {r['loss']} | none finished all its seeds | {seeds} | – | – | – | – | no |")
            continue
        ci = f"{t.mean_diff * 100:+.2f}" + (f" [{t.ci_low * 100:+.2f}, {t.ci_high * 100:+.2f}]"
                                             if math.isfinite(t.ci_low) else "")
        beats = "**yes**" if r["beats"] else "no"
        lines.append(f"| {r['loss']} | {r['strongest']} | {seeds} | {ci} | {t.wins}/{t.losses} | "
                     f"{_stats.format_p(t.p_t)} | {_stats.format_p(r['p_holm'])} | {beats} |")
    notes = sorted({n for r in versus["rows"] for n in r["incomplete"]})
    if notes:
        lines += ["", f"Not finished on every seed of a loss above (so no loss beats the field until they are): "
                      f"{', '.join(notes)}."]
    failed = sorted({n for r in versus["rows"] for n in r["failed"]})
    if failed:
        lines += ["", f"Baselines that diverged on every seed (not compared): {', '.join(failed)}."]
    if versus["missing"]:
        lines += ["", f"The regime's strongest known losses {', '.join(versus['missing'])} did not run here (or "
                      "finished no seed): this compares with the baselines above only, not with the field "
                      "(`--baselines regime` trains them)."]
    return lines


def _strongest_sentence(versus: dict | None) -> str:
    if versus is None:
        return ""
    beat = [r["loss"] for r in versus["rows"] if r["beats"]]
    text = (f"Against the strongest baseline on each loss's seeds (Holm over {versus['tested']}): "
            f"{', '.join(beat) + (' beats' if len(beat) == 1 else ' beat') + ' it' if beat else 'no loss beats it'}")
    if versus["missing"]:
        text += f", with the regime's {', '.join(versus['missing'])} absent: not a claim against the field"
    return text + "."


def _md_table(summary: list[dict]) -> list[str]:
    head = ("| loss | n ok | n failed | test acc % (mean ± std) | Δ vs CE, pp (paired mean ± std) | "
            "Δ 95% CI, pp | pairs | better/worse | t | p (t-test) | p (Wilcoxon) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        t = s["test"]
        name = f"**{s['loss']}**" if s["loss"] == REFERENCE else s["loss"]
        cells = [name, str(s["n_ok"]), str(s["n_failed"]),
                 _stats.format_mean_std(s["mean"], s["std"], 2, 100)]
        if t is None:
            cells += ["(reference)", "", "", "", "", "", ""]
        else:
            tt = "–" if math.isnan(t.t) else f"{t.t:.2f}"
            ci = ("–" if not math.isfinite(t.ci_low) else f"[{t.ci_low * 100:+.2f}, {t.ci_high * 100:+.2f}]")
            cells += [_stats.format_mean_std(t.mean_diff, t.std_diff, 2, 100, sign=True), ci, str(t.n),
                      f"{t.wins}/{t.losses}", tt, _stats.format_p(t.p_t), _stats.format_p(t.p_w)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _headline(summary: list[dict], versus: dict | None = None) -> str:
    ref = next((s for s in summary if s["loss"] == REFERENCE), None)
    others = [s for s in summary if s["loss"] != REFERENCE and s["n_ok"]]
    if ref is None or not ref["n_ok"] or not others:
        return " ".join(filter(None, ["Not enough finished runs for a comparison with CE.",
                                      _strongest_sentence(versus)]))
    best = max(summary, key=lambda s: -math.inf if not math.isfinite(s["mean"]) else s["mean"])
    sig = [s for s in others if s["test"] and math.isfinite(s["test"].p_t) and s["test"].p_t < 0.05]
    better = [s["loss"] for s in sig if s["test"].mean_diff > 0]
    worse = [s["loss"] for s in sig if s["test"].mean_diff < 0]
    failed = [s["loss"] for s in summary if s["n_failed"]]
    n = max(s["n_ok"] + s["n_failed"] for s in summary)
    parts = [f"Highest mean test accuracy: **{best['loss']}** "
             f"({_stats.format_mean_std(best['mean'], best['std'], 2, 100)} %; CE "
             f"{_stats.format_mean_std(ref['mean'], ref['std'], 2, 100)} %)."]
    parts.append(f"Significantly better than CE (paired t-test, p < 0.05, uncorrected): "
                 f"{', '.join(better) if better else 'none'}; significantly worse: "
                 f"{', '.join(worse) if worse else 'none'}.")
    k = len([s for s in others if s["test"] and s["test"].n >= 2])
    if k > 1:
        survive = [s["loss"] for s in sig if s["test"].p_t < 0.05 / k]
        parts.append(f"With a Bonferroni correction over the {k} comparisons (p < {0.05 / k:.4f}): "
                     f"{', '.join(survive) if survive else 'none'}.")
    if failed:
        parts.append(f"Losses with failed runs: {', '.join(failed)}.")
    if versus is not None:
        parts.append(_strongest_sentence(versus))
    parts.append(f"With {n} seeds at a small training budget these tests have little power: differences "
                 "below about one standard deviation of the seed-to-seed spread cannot be told apart from "
                 "noise, the table's p-values are not corrected for multiple comparisons, and a ranking "
                 "at this budget need not carry over to longer training or larger models.")
    if n == 5:
        parts.append("With 5 pairs the exact two-sided Wilcoxon p-value cannot go below 0.0625.")
    return " ".join(parts)


def write_markdown(path: str | Path, summary: list[dict], rows: list[dict], cfg, command: str = "",
                   note: str = "", setup: tuple[str, ...] = (), split_per_seed: bool = False) -> None:
    path = Path(path)
    r = cfg.resolved() if hasattr(cfg, "resolved") else cfg
    machines = sorted({x.get("machine") for x in rows if x.get("machine")}) or [machine_name()]
    dates = sorted({x.get("date") for x in rows if x.get("date")}) or [today()]
    seeds = sorted({x["seed"] for x in rows})
    total = sum(x.get("wall_time") or 0.0 for x in rows)
    backends = sorted({x.get("backend") for x in rows if x.get("backend")})
    budget = (f"{r.steps} steps" if r.steps else f"{r.epochs} epochs") + \
        (f" at batch {r.batch_size}, {r.optimizer} lr {r.lr}, {r.schedule} schedule, "
         f"weight decay {r.weight_decay}")
    from .search import training_regime

    lines = [f"# Transfer: {r.dataset} / {r.model} / augment {r.augment}", "",
             f"Regime: {training_regime(r, split_per_seed)}.", ""]
    if note:
        lines += [note, ""]
    from .search import regime_baselines

    versus = versus_strongest(summary, regime_baselines(r.label_noise))
    lines += ["**Summary.** " + _headline(summary, versus), ""]
    lines += _md_table(summary)
    if versus is not None:
        lines += _strongest_lines(versus)
    lines += ["", "How to read it: accuracies are on the dataset's test split (never used for training or "
              "model choice), in percent. Δ is the mean over seeds of (loss − CE) on the same seed; the "
              "paired t-test (scipy `ttest_rel`) and the Wilcoxon signed-rank test (scipy `wilcoxon`, "
              "zero differences dropped; only for ≥ 5 pairs) are two-sided over those pairs. "
              "**Failed runs** (diverged: NaN/exploding loss or collapsed accuracy; error: the trainer "
              "raised) are counted in *n failed*, kept in the CSV and listed below; they are excluded from "
              "the means and from the paired tests, which use only seeds where both the loss and CE "
              "finished (*pairs*).", ""]
    fails = [(s["loss"], f) for s in summary for f in s["failures"]]
    if fails:
        lines += ["Failed runs:", ""]
        lines += [f"- {lab} seed {seed}: {status} — {reason}" for lab, (seed, status, reason) in fails]
        lines.append("")
    lines += ["## Setup", "",
              f"- Model `{r.model}`, dataset `{r.dataset}` (train_size {r.train_size or 'all'}, "
              f"val_size {r.val_size}, split_seed {'= seed' if split_per_seed else r.split_seed}), augment "
              f"`{r.augment}`, label noise "
              f"{r.label_noise or 0:g}{_kind(r)}, gradient scale `{r.grad_scale}`.",
              f"- Budget: {budget}; warm-up {r.warmup}.",
              f"- Seeds {seeds} for every loss (model init, data order, augmentation); "
              + ("each seed its own validation split, training subset and label noise, the same for every loss."
                 if split_per_seed else "same split."),
              f"- Loss backend(s) that ran: {', '.join(backends) or '–'} (requested `{r.backend}`).",
              f"- Machine: {', '.join(machines)}; date: {', '.join(dates)}; total training time "
              f"{total / 60:.1f} min (sum of per-run wall times).",
              *[f"- {x}" for x in setup],
              "", "Losses:", ""]
    scales = {x["loss"]: x.get("scale") for x in rows if x.get("scale") not in (None, "", 1.0, "1.0")}
    lines += [f"- {s['loss']}: `{s['expression']}`" + (f" (scale {float(scales[s['loss']]):.4g})"
                                                      if s["loss"] in scales else "") for s in summary]
    if command:
        lines += ["", "Command:", "", "```", command, "```"]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: str | Path, summary: list[dict], rows: list[dict]) -> None:
    """A strip plot of per-seed test accuracy per loss, mean ± std bars and CE's mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(summary) + 2), 4.2))
    for i, s in enumerate(summary):
        ys = [r["test_acc"] * 100 for r in rows
              if r["loss"] == s["loss"] and r["status"] == "ok" and r["test_acc"] is not None]
        xs = [i + (j - (len(ys) - 1) / 2) * 0.06 for j in range(len(ys))]
        ax.scatter(xs, ys, s=16, alpha=0.7, color="C0" if s["loss"] != REFERENCE else "k", zorder=3)
        if math.isfinite(s["mean"]):
            std = s["std"] * 100 if math.isfinite(s["std"]) else 0.0
            ax.errorbar(i + 0.3, s["mean"] * 100, yerr=std, fmt="D", color="C3", ms=5, capsize=3, zorder=4)
        if s["n_failed"]:
            ax.annotate(f"{s['n_failed']} failed", (i, 0.02), xycoords=("data", "axes fraction"),
                        ha="center", fontsize=8, color="C3")
    ref = next((s for s in summary if s["loss"] == REFERENCE), None)
    if ref and math.isfinite(ref["mean"]):
        ax.axhline(ref["mean"] * 100, color="k", ls="--", lw=1, label="CE mean")
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([s["loss"] if len(s["loss"]) <= 18 else s["loss"][:16] + "…" for s in summary],
                       rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("per-seed test accuracy (dots), mean ± std (red)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- CLI
def _preset(name: str) -> str:
    if name not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {name!r}; see --list-presets")
    return name


def _grid(text: str) -> list[float]:
    values = [positive_float(x) for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected learning rates A,B,..., got {text!r}")
    return values


_DEFAULTS = dict(dataset="digits", model="surrogate", augment="none", seeds=5)


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m nlfs.transfer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", type=_preset, help="named settings (see --list-presets); explicit options "
                    "override them")
    ap.add_argument("--list-presets", action="store_true")
    ap.add_argument("--losses", action="append", default=[],
                    help="catalogue names / expressions, separated by ';' or top-level commas ('all' = the "
                         "catalogue); repeatable (default: the preset's, else CE)")
    ap.add_argument("--loss", action="append", default=[], help="one loss (name or expression); repeatable")
    ap.add_argument("--losses-file", action="append", default=[], metavar="JSON",
                    help="register the losses in this file (the format of nlfs/found_losses.json: name, "
                         "expression, constants, scale) so --losses can name them; repeatable")
    ap.add_argument("--from-run", action="append", default=[], help="a search run directory (DIR/run.db)")
    ap.add_argument("--from", action="append", default=[], dest="from_dir", metavar="DIR",
                    help="what a run directory hands on: the survivors of nlfs.eliminate (DIR/finalists.json) "
                         "when it has them, else the search's --top best (tuned constants from DIR/tuned.json)")
    ap.add_argument("--top", type=positive_int, default=3, help="how many best candidates per --from-run")
    ap.add_argument("--baselines", default=None, metavar="A,B,...|regime|none",
                    help="published losses trained beside the others, the strongest of which every other loss is "
                         "compared with: 'regime' for the strongest known losses of the training's regime ("
                         + "; ".join(f"{k} labels: {','.join(v)}" for k, v in _regime_table().items())
                         + "), 'none', or names/expressions (default: regime with --from/--from-run, "
                         "else none)")
    ap.add_argument("--seeds", type=seeds_list, default=None,
                    help=f"N (seeds 0..N-1) or a list '0,1,5-7' (default: the preset's, else {_DEFAULTS['seeds']})")
    ap.add_argument("--out", required=False, help="output directory")
    ap.add_argument("--name", default="transfer", help="file stem of the CSV/MD/PNG in --out")
    add_training_options(ap, [n for n in TRAINING_OPTIONS if n != "split_seed"],
                         unset={"dataset": f"the preset's, else {_DEFAULTS['dataset']}",
                                    "model": f"the preset's, else {_DEFAULTS['model']}",
                                    "augment": f"the preset's, else {_DEFAULTS['augment']}",
                                    **{k: "the preset's, else nlfs.train's" for k in TRAINING_OPTIONS
                                       if k not in ("dataset", "model", "augment", "threads")},
                                    "threads": "the preset's; with several workers one core's share each"})
    add_split_seed_option(ap, "0")
    ap.add_argument("--workers", type=positive_int, default=1,
                    help="trainings at once, each in its own process (with --threads 1: up to one per core)")
    add_pack_option(ap, "losses of one seed (and learning rate)")
    ap.add_argument("--retry-errors", action="store_true", help="retrain pairs whose trainer raised")
    ap.add_argument("--lr-grid", type=_grid, default=None, metavar="A,B,...",
                    help="give every loss (CE included) its learning rate from this grid, chosen by validation "
                         "accuracy (the test split is read only by the final runs)")
    ap.add_argument("--lr-seeds", type=seeds_list, default=None,
                    help="seeds for the learning-rate choice (default: the first 2)")
    ap.add_argument("--note", default="", help="a paragraph placed at the top of the Markdown")
    ap.add_argument("--no-plot", action="store_true")
    return ap


def _regime_table() -> dict:
    from .search import REGIME_BASELINES

    return REGIME_BASELINES


def baselines_of(text: str | None, verifying: bool, label_noise: float) -> list[str]:
    """``--baselines`` as loss texts: ``regime`` (the default when ``verifying`` losses from a run) the
    strongest known losses of a training with ``label_noise``; ``none`` (else the default) none."""
    from .search import regime_baselines

    choice = ("regime" if verifying else "none") if text is None else text.strip()
    if choice.lower() in ("none", ""):
        return []
    if choice.lower() == "regime":
        return list(regime_baselines(label_noise))
    return checked_losses(choice, "--baselines")


def _list_presets() -> str:
    lines = []
    for name, p in PRESETS.items():
        budget = f"{p.get('epochs')} ep" + (f", train_size {p['train_size']}" if p.get("train_size") else "")
        lines.append(f"{name:<32} {p['model']:<18} {p['dataset']:<14} {p['augment']:<12} {budget}; "
                     f"{p.get('seeds')} seeds; losses {','.join(p['losses'])}\n{'':<32} {p.get('note', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_main("nlfs.transfer", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        print(_list_presets())
        return 0
    if not args.out:
        parser.error("--out is required")
    settings: dict = dict(_DEFAULTS)
    if args.preset:
        settings.update(PRESETS[args.preset])
    settings.update(training_overrides(args))
    split_per_seed = settings.get("split_seed") == PER_SEED
    if split_per_seed:
        del settings["split_seed"]
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.workers > 1 and not settings.get("threads"):  # one core's share each, not all cores each
        settings["threads"] = max(1, (os.cpu_count() or 1) // args.workers)
    seeds = settings["seeds"] if isinstance(settings["seeds"], list) else parse_seeds(settings["seeds"])
    from . import losses as _losses

    from_file = []
    for path in args.losses_file:  # the file given defines its names for this run
        from_file += _losses.register_file(path, overwrite=True)
    entries: list[LossEntry] = []
    if args.losses or args.loss:
        entries += parse_losses(args.losses + args.loss)
    elif from_file:
        entries += parse_losses(from_file)
    elif not args.from_run and not args.from_dir:
        entries += parse_losses(";".join(settings.get("losses", ["CE"])))
    for run in args.from_run:
        entries += losses_from_run(run, args.top)
    for run in args.from_dir:
        entries += losses_from(run, args.top)
    entries += [dataclasses.replace(e, baseline=True) for e in parse_losses(  # named as baselines: never contenders
        baselines_of(args.baselines, bool(args.from_run or args.from_dir), float(settings.get("label_noise") or 0.0)))]
    if settings.get("threads"):
        import torch

        torch.set_num_threads(int(settings["threads"]))
    cfg = build_config(settings)
    argv_ = list(sys.argv[1:] if argv is None else argv)
    resume = command_line("nlfs.transfer", argv_)
    if "--note" in argv_[:-1]:  # the note is printed above the table: do not repeat it here
        argv_[argv_.index("--note") + 1] = "..."
    command = "python -m nlfs.transfer " + " ".join(
        a if a and all(c.isalnum() or c in "-_=./,:" for c in a) else repr(a) for a in argv_)
    setup = (f"Preset `{args.preset}`: {settings.get('note', '')}",) if args.preset else ()
    with resume_with(resume):
        rows = run_transfer(entries, cfg, seeds, args.out, args.name, args.retry_errors, command=command,
                            note=args.note or "", plot=not args.no_plot, setup=setup, lr_grid=args.lr_grid,
                            lr_seeds=args.lr_seeds, workers=args.workers, split_per_seed=split_per_seed,
                            pack=args.pack)
    print((Path(args.out) / f"{args.name}.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
