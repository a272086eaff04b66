"""Training every (loss, seed) pair of a transfer: the CSV that is its record and resume state, each
row's key, the learning-rate choice on validation seeds, and the worker pool the trainings run in."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from .._cli import PER_SEED
from .._io import machine_name, today, write_table
from ..losses import resolve_spec
from ..train import training_key
from ._entries import LossEntry, with_reference
from ._grid import CONSTANT_GRIDS, MAX_ADDED, on_edge, widened_grid
from ._report import summarise, write_markdown, write_plot

COLUMNS = ["loss", "seed", "model", "dataset", "augment", "test_acc", "val_acc", "best_val_acc", "status",
           "reason", "wall_time", "expression", "constants", "backend", "epochs", "steps", "train_size",
           "val_size", "batch_size", "lr", "optimizer", "device", "config_hash", "run_key", "machine", "date",
           "label_noise", "grad_scale", "scale", "label_noise_kind", "split_seed"]
# the shared training settings a CSV holds runs of (config_hash): another set of them needs another CSV
CONFIG_KEYS = ("model", "dataset", "augment", "epochs", "steps", "batch_size", "train_size", "val_size", "lr",
               "optimizer", "weight_decay", "momentum", "schedule", "warmup", "dropout", "checkpoint",
               "augment_params", "split_seed", "label_noise")


def build_config(settings: dict):
    """A ``TrainConfig`` (seed 0, ``evaluate_test=True``) from a dict of its fields; other keys ignored."""
    from ..train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in settings.items() if k in fields and v is not None}
    kw["evaluate_test"] = True
    kw["seed"] = 0
    return TrainConfig(**kw)


def config_hash(cfg, split_per_seed: bool = False) -> str:
    """The hash of ``cfg``'s shared settings (``CONFIG_KEYS``) a transfer CSV is keyed by."""
    d = cfg.to_dict()
    key = {k: d.get(k) for k in CONFIG_KEYS}
    if split_per_seed:  # only when used: CSVs of a fixed split keep their hash
        key["split_seed"] = PER_SEED
    if d.get("resize") is not None:  # only when set: CSVs written before resize existed keep their hash
        key["resize"] = d["resize"]
    if d.get("label_noise_kind") is not None:  # to_dict leaves out the default (symmetric) likewise
        key["label_noise_kind"] = d["label_noise_kind"]
    return training_key(key, length=10, algorithm="sha1")



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
    from ..search import make_executor, run_jobs

    jobs = _one_training_at_a_time(jobs)
    workers = max(1, min(workers, len(jobs)))
    executor = make_executor("local", workers, threads=threads, pack=pack)
    inline = workers == 1
    try:
        for job, out in run_jobs(executor, ((job, _payload(*job, inline)) for job in jobs)):
            yield job, _record(out, job[1])
    finally:  # interrupted: the workers' trainings stop now (what finished is written; the CSV resumes)
        executor.close()


LR_COLUMNS = ["loss", "lr", "seed", "val_acc", "best_val_acc", "status", "reason", "run_key", "wall_time",
              "split_seed", "config_hash"]
LR_SCORES = {"final": "val_acc", "peak": "best_val_acc"}  # --lr-by: the column a learning rate is chosen by


@dataclasses.dataclass(frozen=True)
class RateChoice:
    """A loss's learning rate and the mean validation accuracy of every rate of the grid it chose from."""

    lr: float
    scores: dict  # learning rate -> mean validation accuracy over the learning-rate seeds

    @property
    def on_edge(self) -> bool:
        """Still the smallest or largest rate tried: the widening stopped at its limit."""
        return len(self.scores) > 1 and on_edge(self.lr, self.scores)

    def __str__(self) -> str:
        tried = ", ".join(f"{lr:g}: {100 * acc:.2f}" for lr, acc in sorted(self.scores.items()))
        return f"{self.lr:g} ({tried}{'; on an edge' if self.on_edge else ''})"


def select_learning_rates(entries: list[LossEntry], cfg, grid: list[float], seeds: list[int], path: Path,
                          log=print, workers: int = 1, threads: int | None = None,
                          split_per_seed: bool = False, pack: int = 1, max_added: int = MAX_ADDED,
                          by: str = "final", config: str = "") -> dict[str, RateChoice]:
    """The learning rate of each loss by one rule for every loss (CE included): the best of ``grid``,
    widened past an edge whenever the best lands there (``grid_choice``: half the smallest or twice the
    largest, at most ``max_added`` points), by mean validation accuracy over ``seeds`` of the final model
    (``by="final"``: the model the final runs test) or of the best epoch (``"peak"``, the rule before
    there was a choice); the test split is never read here, a failed run scores 0, a tie goes to the rate
    nearest ``cfg.lr``. Every run is a row of ``path`` (resumable; keyed by label, rate, seed and the
    loss and settings as trained), marked with ``config``, the transfer's ``config_hash``: rows of
    another configuration stop the choice before any training. A row that lacks ``by``'s column is
    trained again and kept in the file. ``pack``: as ``run_transfer``'s."""
    column = LR_SCORES[by]
    done, kept = {}, []
    if path.is_file():
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        other = {r.get("config_hash") for r in rows} - {config, None, ""}
        if config and other:
            raise SystemExit(f"{path} holds learning-rate runs of another configuration (config_hash "
                             f"{sorted(other)} != {config}): use another --out or --name")
        for r in rows:
            if r.get(column) in (None, ""):  # written under the other rule: trained again, kept in the file
                kept.append(r)
            else:
                done[(r["loss"], float(r["lr"]), int(r["seed"]), r["run_key"])] = r
    val = dataclasses.replace(cfg, evaluate_test=False)

    def key(entry, lr, seed):
        return entry.label, lr, seed, run_key(entry, dataclasses.replace(val, lr=lr), split_per_seed)

    def scores(entry) -> dict[float, float]:
        out = {}
        for lr in {k[1] for k in done if k[0] == entry.label}:
            rows = [done.get(key(entry, lr, s)) for s in seeds]
            if all(rows):
                out[lr] = sum(float(r[column]) for r in rows) / len(seeds)
        return out

    def choice(entry):  # a tie goes to the rate nearest the setting's own
        return widened_grid(scores(entry), grid, max_added=max_added, prefer=cfg.lr)

    while True:  # train what the grids lack; a grid widens once the last of its points are in
        todo = {entry.label: choice(entry)[1] for entry in entries}
        jobs = [(entry, seeded(dataclasses.replace(val, lr=lr), seed, split_per_seed), seed)
                for seed in seeds for lr in sorted({x for xs in todo.values() for x in xs}) for entry in entries
                if lr in todo[entry.label] and key(entry, lr, seed) not in done]
        if not jobs:
            break
        for (entry, cfg_lr, seed), rec in _trainings(jobs, workers, threads, pack):
            k = key(entry, cfg_lr.lr, seed)
            ok = rec["status"] == "ok"
            done[k] = dict(loss=entry.label, lr=cfg_lr.lr, seed=seed, run_key=k[3], status=rec["status"],
                           reason=rec["reason"], val_acc=rec["val_acc"] if ok else 0.0,
                           best_val_acc=rec["best_val_acc"] if ok else 0.0, wall_time=rec["wall_time"],
                           split_seed=cfg_lr.split_seed, config_hash=config)
            write_table(path, list(done.values()) + kept, LR_COLUMNS)
            log(f"lr grid: {entry.label} lr {cfg_lr.lr:g} seed {seed}: {rec['status']} val {done[k][column]:.4f}")
    chosen = {}
    for entry in entries:
        tried, (lr, _, considered) = scores(entry), choice(entry)
        chosen[entry.label] = RateChoice(lr, {x: tried[x] for x in considered})
    log("lr grid: chosen " + ", ".join(f"{k} {v.lr:g}" for k, v in chosen.items()))
    return chosen


def tunable_constant(entry: LossEntry) -> tuple[str, tuple[float, ...], float] | None:
    """``CONSTANT_GRIDS``' row for a baseline that is a published loss at its own constants (its name
    meaning a loss that holds that constant), else None."""
    if not (entry.baseline and isinstance(entry.loss, str) and not entry.constants):
        return None
    try:
        spec = resolve_spec(entry.loss)
    except ValueError:
        return None
    row = CONSTANT_GRIDS.get(spec.name)
    return row if row and row[0] in spec.expr.constants else None


def tune_baseline_constants(entries: list[LossEntry], cfg, grid: list[float], seeds: list[int], path: Path,
                            log=print, workers: int = 1, threads: int | None = None, split_per_seed: bool = False,
                            pack: int = 1, max_added: int = MAX_ADDED, by: str = "final",
                            config: str = "") -> tuple[list[LossEntry], dict[str, RateChoice], list[str]]:
    """``entries`` with each baseline that has a tunable constant (``CONSTANT_GRIDS``: label smoothing's
    a, Poly-1's epsilon, Focal's gamma, GCE's q) at the value whose own learning-rate choice validates
    best, from a grid widened past an edge like the learning rate's (``max_added``): a found loss's
    constants were searched, and a baseline held at its paper's value would be a weaker opponent than it
    need be. Each value's runs are rows of ``path`` under ``LABEL (CONSTANT VALUE)``. Returns the
    entries, the tuned baselines' learning rates (under their own labels) and a line per baseline saying
    what was tried."""
    tunable = {e.label: (e, row) for e in entries if (row := tunable_constant(e))}
    scores: dict[str, dict[float, float]] = {label: {} for label in tunable}
    rates: dict[tuple[str, float], RateChoice] = {}

    def variant(label, value):
        entry, (name, *_) = tunable[label]
        return LossEntry(f"{label} ({name} {value:g})", entry.loss, {name: value}, baseline=True)

    def choice(label):
        _, (_, start, limit) = tunable[label]
        return widened_grid(scores[label], start, limit, max_added)

    while True:  # each value of each grid gets its learning rate; a grid widens once its values are in
        todo = [(label, value) for label in tunable for value in choice(label)[1]]
        if not todo:
            break
        chosen = select_learning_rates([variant(*t) for t in todo], cfg, grid, seeds, path, log, workers,
                                       threads, split_per_seed, pack, max_added, by, config)
        for label, value in todo:
            rates[label, value] = rate = chosen[variant(label, value).label]
            scores[label][value] = rate.scores[rate.lr]
    out, lr_of, lines = [], {}, []
    for e in entries:
        if e.label not in tunable:
            out.append(e)
            continue
        (value, _, considered), name = choice(e.label), tunable[e.label][1][0]
        out.append(LossEntry(e.label, e.loss, {name: value}, baseline=True))
        lr_of[e.label] = rates[e.label, value]
        lines.append(f"{e.label} {name} {RateChoice(value, {v: scores[e.label][v] for v in considered})}")
    return out, lr_of, lines


def run_transfer(entries: list[LossEntry], cfg, seeds: list[int], out: str | Path, name: str = "transfer",
                 retry_errors: bool = False, log=print, command: str = "", note: str = "",
                 plot: bool = True, setup: tuple[str, ...] = (), lr_grid: list[float] | None = None,
                 lr_seeds: list[int] | None = None, workers: int = 1, threads: int | None = None,
                 split_per_seed: bool = False, pack: int = 1, lr_widen: int = MAX_ADDED,
                 tune_baselines: bool = False, lr_by: str = "final") -> list[dict]:
    """Train every missing (loss, seed) pair, rewrite the CSV after each, then write the table and
    plot. Returns the rows of this configuration. With ``lr_grid``, every loss first gets its own
    learning rate from that grid, widened past an edge at most ``lr_widen`` points, by the final model's
    validation accuracy (``lr_by="peak"``: the best epoch's) on ``lr_seeds`` (``select_learning_rates``);
    with ``tune_baselines`` too, each baseline's tunable constant first (``tune_baseline_constants``). With
    ``split_per_seed``, each seed draws its own validation images, training subset and label noise
    (``split_seed = seed``; the ``split_seed`` column records it), else ``cfg.split_seed`` holds for all.
    ``workers > 1`` trains that many runs at once in worker processes; each training uses ``threads``
    threads (default ``cfg.threads``, else the cores shared among the workers). ``pack`` > 1 trains up
    to that many losses of one seed (and learning rate) as one packed network (the surrogate CNN only;
    each row as unpacked, to float tolerance): a GPU feature."""
    from ..train import check_config

    out = Path(out)
    csv_path = out / f"{name}.csv"
    threads = threads or cfg.threads
    entries = with_reference(entries)
    for entry in entries:  # every loss must build and train here before the first run starts
        check_config(cfg, entry.loss, entry.constants)
    if lr_grid:
        cfg = dataclasses.replace(cfg, lr=None)  # the shared settings; each loss's lr comes from the grid
    chash = config_hash(cfg, split_per_seed) + (
        "-grid" + "_".join(f"{x:g}" for x in sorted(lr_grid)) if lr_grid else "")
    rows = _read_rows(csv_path)
    other = {r.get("config_hash") or "" for r in rows} - {chash}
    if other:  # before any training, the learning-rate grid's included
        raise SystemExit(f"{csv_path} holds runs of another configuration (config_hash {sorted(other)} "
                         f"!= {chash}): use another --out or --name")
    lrs = {}
    if lr_grid:
        lr_seeds = lr_seeds or seeds[:2]
        shared = cfg.resolved() if cfg.lr is None else cfg
        lr_csv = out / f"{name}_lr.csv"
        how = dict(log=log, workers=workers, threads=threads, split_per_seed=split_per_seed, pack=pack,
                   max_added=lr_widen, by=lr_by, config=chash)
        rule = ("by mean validation accuracy of the final model (the model the test runs test)" if lr_by == "final"
                else "by mean peak validation accuracy over epochs")
        tunable = [f"{e.label}'s {row[0]}" for e in entries if (row := tunable_constant(e))]
        tuned_rates = {}
        if tune_baselines and tunable:
            entries, tuned_rates, tuned = tune_baseline_constants(entries, shared, sorted(lr_grid), lr_seeds,
                                                                  lr_csv, **how)
            setup = (*setup, f"Baselines' constants tuned like the learning rate, each value with its own rate, "
                     f"{rule}: " + "; ".join(tuned) + ".")
        elif tunable:
            setup = (*setup, "Baselines at their published constants (`--tune-baselines` tunes "
                     + ", ".join(tunable) + " like the learning rate).")
        choices = select_learning_rates([e for e in entries if e.label not in tuned_rates], shared,
                                        sorted(lr_grid), lr_seeds, lr_csv, **how)
        choices = {e.label: tuned_rates.get(e.label) or choices[e.label] for e in entries}
        lrs = {label: c.lr for label, c in choices.items()}
        widened = (f", widened by one point past an edge whenever the choice lands there (at most {lr_widen})"
                   if lr_widen else "")
        setup = (*setup, "Learning rate per loss from the grid {" + ", ".join(f"{x:g}" for x in sorted(lr_grid))
                 + f"}}{widened}, {rule}, over seeds {lr_seeds}: "
                 + "; ".join(f"{k} {v}" for k, v in choices.items()) + ".")
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


