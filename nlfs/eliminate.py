"""``python -m nlfs.eliminate --run-dir DIR``: the elimination protocol for a finished search.

The best candidates of the run (status ok, one per expression and constants, by search fitness; up
to ``pool``) are trained again in rounds of growing budget, more seeds and (where configured) a
larger model; after each round only the best ``keep`` (by mean validation accuracy over the round's
seeds) go on.
Cross-entropy is trained under the same seeds and settings in every round. The defaults mirror the
NeuroLoss protocol (Morgan & Hougen, arXiv 2403.08793): from the best (up to) 300 keep 25, 12, 6,
then 4, with budgets x1, x2, x4, x8 and the pre-activation ResNet in the last two rounds. The presets'
last round trains in the search run's target regime (its ``--target``, else the dataset's default:
the whole training split at CE's plateau), the training a user will run; ``--no-target`` scales it
like the others.

    python -m nlfs.eliminate --run-dir runs/my-search --preset quick     # a few minutes on digits
    python -m nlfs.eliminate --run-dir DIR --keep 25,12,6,4 --seeds-per-round 1,2,3,3 \\
        --budget-scale 1,2,4,8 --models surrogate,surrogate,preact_resnet,preact_resnet
    python -m nlfs.eliminate --run-dir DIR --config rounds.toml          # keys: pool keep seeds_per_round ...
    python -m nlfs.eliminate --run-dir DIR --keep 10,5,3 --seeds-per-round 2,3,5 --train-sizes base,base,all

Every candidate is named ``<run>#<id>`` (a tuned one ``<run>#<id>-tuned``), as in the search's exports.
Candidates may come from several searches (``--also DIR,...``: each run's best ``pool`` join, under
the first run's training settings) and from their tunings (``--tuned``: each run's ``tuned.json``, a
tuned loss entering beside the candidate it came from when its constants changed). A catalogue loss at
its published constants (``nlfs.search.known_twin``: CE in disguise above all, often a warm-started
search's best) is never a find: the pool leaves it out and does not count it, and elimination.md says how
many; ``--novel-only`` also leaves out a run's warm starts as given (unless the run let warm starts
compete), ``--include-known`` keeps the catalogue losses (say, to check that a twin of CE scores as CE).
Every training is scored as the search scored its own (``--score``).

Every (candidate, round, seed) training is a row of the ``elimination`` table in ``DIR/run.db``,
keyed by the exact training it was (expression, constants, class reduction, training config), so a killed
elimination resumes without training a finished pair again. The split seed (validation images, the
training subset, the label noise) is the search run's for every seed, or with ``--split-seed per-seed``
each seed's own (``split_seed = seed``, shared by CE and every candidate on that seed). The survivors, with mean ± std
validation accuracy per round beside cross-entropy's and their paired difference to it (same seeds),
go to ``DIR/elimination.md`` and stdout; ``DIR/elimination.json`` holds every score per seed, and
each survivor's scale (the one it was found or tuned with) and the median factor its trainings
measured when the runs rescale to CE;
``DIR/finalists.json`` lists the survivors in nlfs/found_losses.json's format (name ``<run>#<id>``,
expression, constants, class reduction, scale, provenance) for ``nlfs.transfer --from DIR`` and
``nlfs.heldout --from DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._cli import (
    BUDGET_OPTIONS,
    PER_SEED,
    ArgumentParser,
    add_known_loss_options,
    add_pack_option,
    add_split_seed_option,
    add_training_options,
    command_line,
    non_negative_int,
    positive_int,
    resume_with,
    run_main,
    training_overrides,
)
from .losses import loss_label
from .models import canonical_model
from .search import CE_EXPRESSION, FINALISTS, trained_scale
from .stats import format_mean_std, format_pp, mean_std, paired_by_key, paired_differences

PRESETS = {
    "paper": dict(pool=300, keep=(25, 12, 6, 4), seeds=(1, 2, 3, 3), budget_scale=(1, 2, 4, 8),
                  models=("surrogate", "surrogate", "preact_resnet", "preact_resnet")),
    # two short rounds on the run's own surrogate settings: minutes on a 2-core CPU with digits
    "quick": dict(pool=6, keep=(3, 2), seeds=(1, 2), budget_scale=(1, 2), models=("surrogate", "surrogate")),
}

@dataclass
class Round:
    keep: int
    seeds: int
    budget_scale: float
    model: str
    # training images: None keeps the run's; ALL_IMAGES the whole training split (a long, full-data
    # round shows whether a lead found on small trainings survives plenty of data)
    train_size: int | None = None
    # the search run's target regime (nlfs.search.Target): this round trains in it, budget scale aside
    target: object = None

    def describe(self, base=None) -> str:
        """The round in words; ``base``: the run's TrainConfig, whose regime a target round inherits."""
        s = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
        if self.target is not None:
            return f"{self.model}, {self.target.describe(base=base)}, {s}"
        size = "" if self.train_size is None else (
            ", all training images" if self.train_size == ALL_IMAGES else f", {self.train_size} images")
        return f"{self.model}, budget x{self.budget_scale:g}{size}, {s}"


ALL_IMAGES = 0


def parse_train_size(text) -> int | None:
    """``all`` -> ALL_IMAGES, ``base`` or ``-`` -> None (the run's), else a positive count."""
    t = str(text).strip().lower()
    if t in ("all", "0"):
        return ALL_IMAGES
    if t in ("base", "-", "none", ""):
        return None
    n = int(t)
    if n < 1:
        raise ValueError(f"train size must be a positive count, 'all' or 'base', got {text!r}")
    return n


@dataclass
class Protocol:
    """``target``: the last round trains in the search run's target regime (its images, length, label
    noise and augmentation; that round's budget scale and size do not apply), as the presets do.
    ``split_per_seed``: each seed draws its own validation images, training subset and label noise
    (``split_seed = seed``), else the base training's split seed holds for every seed."""

    rounds: list
    pool: int = 300
    first_seed: int = 1
    target: bool = False
    split_per_seed: bool = False

    @classmethod
    def from_lists(cls, keep, seeds, budget_scale, models, pool=300, first_seed=1,
                   train_sizes=(None,), target=False, split_per_seed=False) -> Protocol:
        n = len(keep)

        def fit(xs, what):
            xs = list(xs)
            if len(xs) == 1:
                xs = xs * n
            if len(xs) != n:
                raise ValueError(f"{what} has {len(xs)} entries for {n} rounds (keep={list(keep)})")
            return xs

        seeds, scales, models = fit(seeds, "seeds"), fit(budget_scale, "budget_scale"), fit(models, "models")
        sizes = [parse_train_size(x) for x in fit(train_sizes, "train_sizes")]
        rounds = [Round(int(k), int(s), float(b), canonical_model(m), t)
                  for k, s, b, m, t in zip(keep, seeds, scales, models, sizes, strict=True)]
        for r in rounds:
            if r.keep < 1 or r.seeds < 1 or r.budget_scale <= 0:
                raise ValueError(f"bad round {r}: keep and seeds must be >= 1, budget_scale > 0")
        return cls(rounds, int(pool), int(first_seed), bool(target), bool(split_per_seed))


def _key(expression: str, constants: dict, class_reduction: str, train: dict, scale: float = 1.0,
         score: str = "best") -> str:
    from .train import training_key

    loss = [expression, sorted((constants or {}).items()), class_reduction]
    if scale != 1.0:  # a fixed factor changes the training (tables written before it keep their keys)
        loss.append(scale)
    if score != "best":  # likewise: another accuracy is another result
        loss.append(score)
    return training_key([*loss, train])


def round_config(base, rnd: Round, seed: int, split_per_seed: bool = False):
    """The training of one (round, seed): the run's surrogate config with its budget scaled (and its
    training images the round's, when it sets them), or, for a target round, the run's target regime;
    with ``split_per_seed``, split by the seed (``split_seed = seed``)."""
    cfg = dataclasses.replace(base, evaluate_test=False, progress=False, seed=seed, model=rnd.model,
                              **({"split_seed": seed} if split_per_seed else {}))
    if rnd.target is not None:
        return rnd.target.apply(cfg)
    if rnd.train_size is not None:
        cfg = dataclasses.replace(cfg, train_size=None if rnd.train_size == ALL_IMAGES else rnd.train_size)
    if cfg.steps is not None:
        return dataclasses.replace(cfg, steps=max(1, int(round(cfg.steps * rnd.budget_scale))))
    epochs = cfg.resolved().epochs
    return dataclasses.replace(cfg, epochs=max(1, int(round(epochs * rnd.budget_scale))))


class Elimination:
    def __init__(self, run_dir: str | Path, protocol: Protocol, train_config=None, workers: int = 1,
                 executor: str = "local", address: str | None = None, log=None, also=(), tuned: bool = False,
                 novel: bool = False, threads: int | None = None, pack: int = 1, include_known: bool = False,
                 overrides: dict | None = None):
        from .search import RunDB, SearchConfig
        from .train import check_config

        if novel and include_known:
            raise ValueError("novel (leave out warm starts too) and include_known (keep catalogue losses) "
                             "contradict each other")
        self.run_dir = Path(run_dir)
        self.sources = [self.run_dir, *(Path(d) for d in also)]
        for d in self.sources:
            if not (d / "run.db").exists():
                raise FileNotFoundError(f"no search run in {d} (missing {d / 'run.db'})")
        self.db = RunDB(self.run_dir / "run.db")
        try:  # every round's training checked before anything is written or trained
            scfg = SearchConfig.from_dict(self.db.get_meta("config") or {}, strict=False)
            self.class_reduction = scfg.class_reduction
            self.score = scfg.score  # every training scored as the search scored its own
            # overrides: training settings in place of the run's (the command line's budget options)
            self.base = dataclasses.replace(train_config or scfg.train_config(), **(overrides or {}))
            self.protocol = protocol
            self.target = None  # the run's target regime, when the last round trains in it
            if protocol.target:
                from .search import default_target, make_target

                self.target = make_target(scfg.target or default_target(scfg.dataset))
                last = dataclasses.replace(protocol.rounds[-1], target=self.target)
                self.protocol = dataclasses.replace(protocol, rounds=[*protocol.rounds[:-1], last])
            for i, rnd in enumerate(self.protocol.rounds, 1):
                cfg = round_config(self.base, rnd, self.protocol.first_seed, self.protocol.split_per_seed)
                try:
                    check_config(cfg, "CE")
                except ValueError as err:
                    raise type(err)(f"round {i}: {err}") from None
        except BaseException:
            self.db.close()
            raise
        self.db.open_elimination()
        self.tuned, self.novel, self.include_known = tuned, novel, include_known
        self.left_out: list[dict] = []  # the known losses in disguise the pool left out
        self.workers, self.executor_kind, self.address, self.threads = workers, executor, address, threads
        self.pack = pack  # candidates of one round and seed trained as one packed network
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.trained = 0  # trainings run by this session (resumed pairs are not counted)

    def close(self):
        self.db.close()

    def candidates(self) -> list[dict]:
        """The pool: each source run's best ``pool`` (``nlfs.search.best_candidates``), each named
        ``<run>#<id>`` as in the search's reports and exports, then, with ``tuned``, each run's tuned
        losses whose constants changed (``<run>#<id>-tuned``, as in ``tuned_losses.py``). Known losses
        in disguise are left out uncounted (``left_out``): a catalogue loss at its published constants
        unless ``include_known`` (then tagged ``same_as``), with ``novel`` a warm start as given too.
        ``fitness_paired``: the search fitness is a paired difference to CE (else an accuracy)."""
        from .search import SearchConfig, best_candidates, is_paired_run, known_twin, read_run

        self.left_out = []
        pool: list[dict] = []
        seen: set = set()

        def twin_of(c, known):
            twin = known_twin(c, self.base.grad_scale == "ce", known)
            if twin and not self.include_known:
                self.left_out.append({"label": c["label"], "expression": c["expression"],
                                      "constants": c.get("constants") or {}, "same_as": twin})
                return twin, True
            return twin, False

        for d in self.sources:
            prefix = d.name
            rows, saved = read_run(d)  # the first source's too: its registered losses join the catalogue
            known = SearchConfig.from_dict(saved, strict=False).known_losses if self.novel else ()
            paired = is_paired_run(saved, rows)
            taken = 0
            for c in best_candidates(rows, len(rows)):
                if taken == self.protocol.pool:
                    break
                key = (c["expression"], tuple(sorted((c.get("constants") or {}).items())))
                if key in seen:
                    continue  # found by an earlier run
                c = {**c, "label": loss_label(prefix, c["id"]), "run": str(d), "scale": float(c.get("scale") or 1.0),
                     "fitness_paired": paired}
                twin, out = twin_of(c, known)
                if out:
                    continue  # a known loss (CE among them) in disguise: no find, and not counted
                seen.add(key)
                taken += 1
                pool.append({**c, "same_as": twin})
            if self.tuned:
                for c in _tuned_candidates(d, prefix):
                    twin, out = twin_of(c, known)
                    if not out:
                        pool.append({**c, "same_as": twin})
        return pool

    def left_out_text(self) -> str:
        """How many known losses in disguise the pool left out, and which, in one sentence."""
        if self.include_known:
            return ("Catalogue losses at their published constants were kept in the pool (--include-known): "
                    "one that survives is a known loss, not a find.")
        what = "a catalogue loss at its published constants" + (", or a run's warm start as given," if self.novel
                                                                else "")
        if not self.left_out:
            return f"No candidate was left out as a known loss in disguise ({what})."
        counts: dict[str, int] = {}
        for x in self.left_out:
            counts[x["same_as"]] = counts.get(x["same_as"], 0) + 1
        names = ", ".join(f"{n} x{k}" for n, k in counts.items())
        return (f"Left out of the pool, uncounted: {len(self.left_out)} known loss(es) in disguise ({names}): "
                f"{what} is no find (--include-known keeps the catalogue's).")

    def _fixed_scale(self, cand) -> float:
        """The factor a candidate trains with: its search scale, unless the trainer measures one
        (grad_scale="ce", which would measure the same factor again)."""
        return float(cand.get("scale") or 1.0) if self.base.grad_scale == "none" else 1.0

    def _record(self, key, cand, rnd_i, seed, cfg, out):
        self.db.record_elimination(
            {"key": key, "candidate": cand["label"], "eval_id": cand.get("id"), "expression": cand["expression"],
             "constants": cand.get("constants") or {}, "round": rnd_i, "seed": seed, "model": cfg.model,
             "steps": cfg.steps, "epochs": cfg.epochs,
             "fitness": out.get("fitness") if out.get("status") == "ok" else None, "status": out["status"],
             "reason": (out.get("reason") or "")[:1000], "wall_time": out.get("wall_time"),
             "scale": trained_scale(out, self._fixed_scale(cand))})

    def run(self) -> dict:
        """-> {"rounds": [...], "survivors": [...], "ce": {...}, "scores": {label: {round: {seed: acc}}}};
        writes ``DIR/elimination.md`` and ``DIR/elimination.json``."""
        from .search import make_executor

        pool = self.candidates()
        self.log(f"eliminate: pool of {len(pool)}. {self.left_out_text()}")
        if not pool:
            raise ValueError(f"{self.run_dir} has no trained candidate with status ok to eliminate")
        ce = {"label": "CE", "id": None, "expression": CE_EXPRESSION, "constants": {}}
        scores: dict[str, dict[int, dict]] = {}  # label -> round -> {seed: fitness}
        self.scales: dict[str, list] = {}  # label -> gradient-scale factors of its trainings
        alive = pool
        history = []
        trainings: list[dict] = []  # per round: seed -> its training config, to see a round repeat another
        executor = make_executor(self.executor_kind, self.workers, self.address, self.threads, pack=self.pack)
        try:
            for i, rnd in enumerate(self.protocol.rounds, 1):
                seeds = [self.protocol.first_seed + j for j in range(rnd.seeds)]
                trainings.append({s: round_config(self.base, rnd, s, self.protocol.split_per_seed).to_dict()
                                  for s in seeds})
                repeats = _repeats(trainings)
                self.log(f"eliminate: round {i}/{len(self.protocol.rounds)}: {len(alive)} candidates + CE, "
                         f"{rnd.describe(self.base)}, keep {min(rnd.keep, len(alive))}")
                if repeats is not None:
                    self.log(f"eliminate: {_repeat_text(i, repeats)}")
                jobs = [(c, s) for c in [ce, *alive] for s in seeds]
                if self.pack > 1:  # seed by seed: the jobs in flight together share one training, and a pack
                    jobs = [(c, s) for s in seeds for c in [ce, *alive]]
                self._run_jobs(executor, jobs, i, rnd, scores)
                # CE trained on the same seeds: ranking by mean accuracy is ranking by paired difference
                ranked = sorted(alive, key=lambda c: (-mean_std(scores[c["label"]][i].values())[0], -c["fitness"],
                                                      c["id"]))
                kept = ranked[:rnd.keep]
                history.append({"round": i, "evaluated": len(alive), "kept": len(kept), "seeds": seeds,
                                "model": rnd.model, "budget_scale": rnd.budget_scale,
                                "train_size": rnd.train_size,
                                "target": None if rnd.target is None else rnd.target.describe(base=self.base),
                                "repeats": repeats})
                alive = kept
        finally:
            executor.close()
        result = {"rounds": history, "survivors": alive, "ce": ce, "scores": scores, "pool": pool}
        text = self.markdown(result)
        from ._io import atomic_write

        atomic_write(self.run_dir / "elimination.md", text)
        record = self.record_of(result)
        atomic_write(self.run_dir / "elimination.json", json.dumps(record, indent=2))
        atomic_write(self.run_dir / FINALISTS, json.dumps(self.finalists(record), indent=2))
        result["markdown"] = text
        return result

    def finalists(self, record: dict) -> list[dict]:
        """The survivors file (``DIR/finalists.json``) in nlfs/found_losses.json's format: each survivor
        under its one name, with the expression, constants, class reduction and gradient scale it was
        trained with, and where it comes from. ``nlfs.transfer --losses-file`` / ``--from DIR`` and
        ``nlfs.heldout --from DIR`` read it; ``nlfs.losses.register_file`` registers it."""
        from .losses import stored_class_reduction

        last = len(record["rounds"])
        out = []
        for s in record["survivors"]:
            n = len(s["scores"].get(str(last), {}))
            out.append({"name": s["label"], "expression": s["expression"], "constants": s["constants"],
                        "class_reduction": stored_class_reduction(s), "scale": s["scale"],
                        "provenance": {"search_run": s["run"], "candidate": s["label"],
                                       "tuned_from": s.get("tuned_from"),
                                       "elimination": f"{format_pp(s['paired_diff'], s.get('paired_ci'))} vs CE "
                                                      f"(last round, {n} seed{'s' if n != 1 else ''})",
                                       "regime": self.regime(),
                                       "known_family": s.get("known_family"),
                                       "same_as": s.get("same_as"),
                                       "measured_scale": s.get("measured_scale"),
                                       "results": str(self.run_dir / "elimination.md")}})
        return out

    def record_of(self, result) -> dict:
        """What ``elimination.json`` holds: settings, rounds, every survivor's scores per seed, and every
        candidate's (``pool``: how the search's fitness compares with the longer trainings)."""
        scores, last = result["scores"], len(self.protocol.rounds)

        def per_seed(label):
            return {str(i): {str(s): v for s, v in per.items()} for i, per in scores.get(label, {}).items()}

        def survivor(c):
            diff, sd = _vs_ce(scores, c["label"], last)
            factors = sorted(self.scales.get(c["label"], []))
            return {"label": c["label"], "run": c.get("run"), "id": c["id"], "expression": c["expression"],
                    "constants": c.get("constants") or {}, "class_reduction": self.class_reduction,
                    "search_fitness": c["fitness"], "search_fitness_paired": bool(c.get("fitness_paired")),
                    "tuned_from": c.get("tuned_from"),
                    # the loss's one scale, as the search (or tuning) exported it: with grad_scale "ce"
                    # every training measures its own factor (their median below), none of them "the" loss's
                    "scale": float(c.get("scale") or 1.0),
                    "measured_scale": factors[len(factors) // 2] if factors else None,
                    "paired_diff": diff, "paired_sd": sd if math.isfinite(sd) else None,  # None: one seed
                    "paired_ci": _ci(scores, c["label"], last), "scores": per_seed(c["label"]),
                    "known_family": self.family(c), "same_as": c.get("same_as")}

        pool = [{"label": c["label"], "run": c.get("run"), "id": c["id"], "expression": c["expression"],
                 "constants": c.get("constants") or {}, "search_fitness": c["fitness"],
                 "search_fitness_paired": bool(c.get("fitness_paired")), "same_as": c.get("same_as"),
                 "tuned_from": c.get("tuned_from"), "scores": per_seed(c["label"])} for c in result["pool"]]
        return {"base": self.base.to_dict(), "regime": self.regime(),
                "split_seed": PER_SEED if self.protocol.split_per_seed else self.base.split_seed,
                "sources": [str(d) for d in self.sources], "tuned": self.tuned,
                "class_reduction": self.class_reduction, "rounds": result["rounds"], "ce": per_seed("CE"),
                "survivors": [survivor(c) for c in result["survivors"]], "pool": pool,
                "left_out": self.left_out, "include_known": self.include_known}

    def family(self, c: dict) -> dict | None:
        """The catalogue loss a survivor is at other constants than its published ones (``{"loss",
        "constants"}``, ``nlfs.search.known_family``; seconds each, so survivors only), or None; None too
        for a catalogue loss at its published constants (``same_as``), as the search's report does."""
        from .search import family_record

        if c.get("same_as"):
            return None
        return family_record(c["expression"], c.get("constants"), self.class_reduction)

    def regime(self) -> str:
        """The base training's regime in one line, saying when each seed draws its own split."""
        from .search import training_regime

        return training_regime(self.base, self.protocol.split_per_seed, score=self.score)

    def _run_jobs(self, executor, jobs, rnd_i, rnd, scores):
        from .search import fitness_of, run_jobs, training_payload

        pending = []

        def note(cand, seed, value, scale):
            scores.setdefault(cand["label"], {}).setdefault(rnd_i, {})[seed] = value
            if scale is not None:
                self.scales.setdefault(cand["label"], []).append(scale)

        for cand, seed in jobs:
            cfg = round_config(self.base, rnd, seed, self.protocol.split_per_seed)
            train = cfg.to_dict()  # the split seed in it: a per-seed split is its own training
            class_reduction = "class_sum" if cand["label"] == "CE" else self.class_reduction
            key = _key(cand["expression"], cand.get("constants") or {}, class_reduction, train, self._fixed_scale(cand),
                       self.score)
            hit = self.db.elimination_row(key)
            if hit is not None:
                note(cand, seed, fitness_of(hit), hit["scale"])
                continue
            payload = training_payload(cand["expression"], cand.get("constants"), class_reduction, train,
                                       score=self.score, name=cand["label"], scale=self._fixed_scale(cand))
            pending.append(((key, cand, seed, cfg), payload))
        for (key, cand, seed, cfg), out in run_jobs(executor, pending):
            self._record(key, cand, rnd_i, seed, cfg, out)
            self.trained += 1
            v = fitness_of(out)
            note(cand, seed, v, trained_scale(out, self._fixed_scale(cand)))
            why = "" if out["status"] == "ok" else f" ({out['status']}: {(out.get('reason') or '')[:80]})"
            self.log(f"eliminate: round {rnd_i} seed {seed} {cand['label']}: {v:.4f}{why}")

    def markdown(self, result) -> str:
        from .search import family_text

        rounds = self.protocol.rounds
        scores = result["scores"]
        head = ["rank", "candidate", "expression", _search_header(result["survivors"])]
        head += [f"round {i} ({r.describe(self.base)})" for i, r in enumerate(rounds, 1)]
        head += ["Δ vs CE, last round (paired)"]
        sources = ", ".join(str(d) for d in self.sources) + (" and their tunings" if self.tuned else "")
        lines = [f"# Elimination of {sources}", "",
                 f"Base training: {self.base.dataset}, model per round as listed, "
                 f"{'steps ' + str(self.base.steps) if self.base.steps is not None else 'epochs'} x budget "
                 f"scale; validation accuracy, mean ± std over the round's seeds; the last column is the "
                 f"mean ± sd of (candidate - CE) over the same seeds in percentage points, with its 95% "
                 f"t-interval. The search column is the candidate's fitness in its search (or its tuning's best "
                 f"trial), at that search's short training: a proxy. "
                 f"Rounds: " + "; ".join(f"{h['evaluated']} -> {h['kept']}" for h in result["rounds"]), "",
                 self.left_out_text(), "",
                 *[line for n, h in enumerate(result["rounds"], 1) if h.get("repeats")
                   for line in ("R" + _repeat_text(n, h["repeats"])[1:] + ".", "")],
                 f"Regime (before each round's budget scale, model and size): {self.regime()}. "
                 + (f"Last round: the search run's {self.target.describe(base=self.base)} (no budget scale)."
                    if self.target is not None else "Last round: not the search run's target regime "
                    "(--no-target, or rounds set by hand)."), "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def cells(label):
            return [_fmt(scores.get(label, {}).get(i, {}).values()) for i in range(1, len(rounds) + 1)]

        lines.append("| CE | - | `" + CE_EXPRESSION + "` | - | " + " | ".join(cells("CE")) + " | - |")
        last = len(rounds)
        for rank, c in enumerate(result["survivors"], 1):
            expr = f"`{c['expression']}`"
            if c.get("constants"):
                expr += " with " + ", ".join(f"{k}={v:.4g}" for k, v in c["constants"].items())
            d = _vs_ce(scores, c["label"], last)
            ci = _ci(scores, c["label"], last)
            interval = "" if ci is None else f", 95% CI [{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"
            family = family_text(self.family(c))
            label = c["label"] + (f" (= {family}, a known loss at other constants)" if family else "")
            label += f" (= {c['same_as']} in disguise, a known loss)" if c.get("same_as") else ""
            lines.append(f"| {rank} | {label} | {expr} | {_search_cell(c)} | "
                         + " | ".join(cells(c["label"])) + f" | {format_mean_std(*d, scale=100, sign=True)}"
                         f"{interval} pp |")
        from .search import regime_baselines

        last = self.target.apply(self.base) if self.target is not None else self.base  # the last round's regime
        strongest = ", ".join(regime_baselines(last.label_noise))
        lines += ["", "Elimination ranks; it claims nothing. The survivors are compared with CE only; a loss is "
                  f"claimed only once it beats the regime's strongest known losses ({strongest}), as "
                  f"`python -m nlfs.transfer --from {self.run_dir} --seeds 10-19` checks (it trains them beside "
                  "the survivors; choose seeds no earlier step trained with)."]
        return "\n".join(lines) + "\n"


def _search_header(cands) -> str:
    """The search column's header: what its numbers are (a paired difference in pp, or an accuracy)."""
    kinds = {bool(c.get("fitness_paired")) for c in cands}
    if kinds == {True}:
        return "search fitness: paired Δ vs CE, pp"
    if True in kinds:
        return "search fitness: paired Δ vs CE in pp (signed), else accuracy"
    return "search fitness: accuracy"


def _search_cell(c) -> str:
    return f"{c['fitness'] * 100:+.2f} pp" if c.get("fitness_paired") else f"{c['fitness']:.4f}"


def _tuned_candidates(run_dir: Path, prefix: str) -> list[dict]:
    """A run's tuned losses (``tuned.json``) whose constants changed, named ``<run>#<id>-tuned`` with the
    scale their best trial trained at."""
    from .search import changed_tunings

    # a tuning that changed nothing leaves its candidate, already in the pool, as it was
    return [{"id": t["id"], "label": t.get("tuned_name") or loss_label(prefix, t["id"], tuned=True),
             "run": str(run_dir), "expression": t["expression"], "constants": dict(t["best_constants"]),
             "fitness": t["best_fitness"], "tuned_from": t["search_expression"], "scale": float(t.get("scale") or 1.0)}
            for t in changed_tunings(run_dir)]


def _repeats(trainings: list[dict]) -> dict | None:
    """Which earlier round the last round's trainings repeat (``{"round", "seeds", "all"}``: the seeds
    whose training config is that round's, so their scores are reused, and whether that is every seed),
    the one sharing most; None if none."""
    *earlier, now = trainings
    best = None
    for j, before in enumerate(earlier, 1):
        shared = [s for s, cfg in now.items() if before.get(s) == cfg]
        if shared and (best is None or len(shared) > len(best["seeds"])):
            best = {"round": j, "seeds": shared, "all": len(shared) == len(now)}
    return best


def _repeat_text(i: int, rep: dict) -> str:
    j, seeds = rep["round"], ", ".join(map(str, rep["seeds"]))
    if rep["all"]:
        seeds = ("seed " if len(rep["seeds"]) == 1 else "seeds ") + seeds
        return (f"round {i} repeats round {j}'s trainings (same budget, model, size and {seeds}): its numbers "
                f"are round {j}'s, no new evidence")
    return (f"round {i} reuses round {j}'s trainings on seed(s) {seeds} (same budget, model and size): only its "
            f"other seeds are new, and its means include the seeds round {j} selected these candidates on")


def _vs_ce(scores: dict, label: str, rnd: int) -> tuple[float, float]:
    """(mean, sd) of ``label``'s accuracy minus CE's over the seeds of round ``rnd`` both trained."""
    return mean_std(paired_differences(scores[label].get(rnd, {}), scores["CE"].get(rnd, {})))


def _ci(scores: dict, label: str, rnd: int) -> list | None:
    """The 95% t-interval of ``label``'s paired difference to CE in round ``rnd`` (None under 2 seeds)."""
    t = paired_by_key(scores[label].get(rnd, {}), scores["CE"].get(rnd, {}))
    return [t.ci_low, t.ci_high] if t.n > 1 and math.isfinite(t.ci_low) else None


def _fmt(values) -> str:
    xs = list(values)
    return f"{format_mean_std(*mean_std(xs), digits=4)} (n={len(xs)})" if xs else "-"


def eliminate(run_dir, protocol: Protocol | None = None, train_config=None, workers: int = 1,
              executor: str = "local", address: str | None = None, log=None, also=(), tuned: bool = False,
              novel: bool = False, threads: int | None = None, pack: int = 1, include_known: bool = False) -> dict:
    """Run the elimination protocol on the search run in ``run_dir`` (see the module docstring); the
    default protocol is the paper preset, its last round in the run's target regime. ``pack`` > 1
    trains up to that many candidates of one round and seed (CE included) as one packed network (the
    surrogate CNN only; each score as unpacked, to float tolerance): a GPU feature."""
    protocol = protocol or Protocol.from_lists(**PRESETS["paper"], target=True)
    e = Elimination(run_dir, protocol, train_config, workers, executor, address, log, also, tuned, novel,
                    threads, pack, include_known)
    try:
        return e.run()
    finally:
        e.close()


# ---------------------------------------------------------------------------------------------------
# CLI

def _preset_words(preset: dict) -> str:
    """A preset's rounds in words: ``300 -> 25, 12, 6, 4 (seeds 1, 2, 3, 3)``."""
    return (f"{preset['pool']} -> {', '.join(map(str, preset['keep']))} "
            f"(seeds {', '.join(map(str, preset['seeds']))})")


def _list(text, conv):
    return None if text is None else [conv(x) for x in str(text).split(",") if x.strip()]


def load_config_file(path: str) -> dict:
    p = Path(path)
    if p.suffix == ".toml":
        import tomllib

        data = tomllib.loads(p.read_text())
    else:
        data = json.loads(p.read_text())
    data = {k.replace("-", "_"): v for k, v in data.items()}
    if "seeds_per_round" in data:  # the command line's name; "seeds" is the protocol's
        data["seeds"] = data.pop("seeds_per_round")
    return data


class _Renamed(argparse.Action):
    """An option that was renamed: using it is an error naming the new one."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, nargs=1, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new}: seeds per round, e.g. {self.new} 1,2,3,3")


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m nlfs.eliminate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True,
                    help="the search run (its run.db holds the elimination; its settings are the base training)")
    ap.add_argument("--also", default=None, metavar="DIR,...",
                    help="more search runs whose best candidates join the pool (--pool from each)")
    ap.add_argument("--tuned", action="store_true",
                    help="add each run's tuned losses (DIR/tuned.json from nlfs.tune --top) to the pool")
    add_known_loss_options(ap)
    ap.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                    help="; ".join(f"{name}: {_preset_words(p)}" for name, p in sorted(PRESETS.items())))
    ap.add_argument("--config", default=None,
                    help="a .json or .toml file with pool, keep, seeds_per_round, budget_scale, models, train_sizes")
    ap.add_argument("--pool", type=positive_int, default=None,
                    help="how many of the run's best enter round 1 (default: the preset's)")
    ap.add_argument("--keep", default=None, help="survivors per round, e.g. 25,12,6,4 (default: the preset's)")
    ap.add_argument("--seeds-per-round", default=None, metavar="N,...",
                    help="how many seeds each round trains, e.g. 1,2,3,3 (seeds --first-seed, --first-seed+1, "
                         "...; default: the preset's)")
    ap.add_argument("--seeds", action=_Renamed, new="--seeds-per-round")
    ap.add_argument("--budget-scale", default=None, help="training budget multiplier per round, e.g. 1,2,4,8 "
                    "(default: the preset's)")
    ap.add_argument("--models", default=None,
                    help="model per round, e.g. surrogate,surrogate,preact_resnet,preact_resnet "
                         "(default: the preset's)")
    ap.add_argument("--train-sizes", default=None, metavar="N|all|base,...",
                    help="training images per round, e.g. base,base,all (the last round on the whole split; "
                         "default: the run's in every round)")
    ap.add_argument("--no-target", action="store_true",
                    help="train the presets' last round like the others (by default it trains in the search "
                         "run's target regime: its --target, else the dataset's default, the whole split at "
                         "CE's plateau); rounds set by --keep or --train-sizes never do")
    ap.add_argument("--first-seed", type=non_negative_int, default=1)
    add_training_options(ap, [n for n in BUDGET_OPTIONS if n != "model"], unset="the search run's")
    add_split_seed_option(ap, "the search run's")
    ap.add_argument("--workers", type=positive_int, default=1)
    add_pack_option(ap, "candidates of one round and seed (CE included)")
    add_training_options(ap, ("threads",), unset="the cores shared among the workers; torch's with one worker")
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    return ap


ROUND_LISTS = ("keep", "seeds", "budget_scale", "models", "train_sizes")
ROUND_DEFAULTS = dict(seeds=(1,), budget_scale=(1,), models=("surrogate",), train_sizes=("base",))


def protocol_from_args(args) -> Protocol:
    """The rounds: the preset's lists, each replaced by one given (``--config``, ``--seeds``...). A given
    ``keep`` sets new rounds: then the given lists replace the preset's as a whole (a 3-round ``--keep``
    never meets the preset's 4-entry models), a list not given being one value for every round (1 seed,
    budget x1, surrogate, the run's training size)."""
    spec = dict(PRESETS[args.preset])
    given = dict(load_config_file(args.config)) if args.config else {}
    for name, option, conv in (("keep", "keep", int), ("seeds", "seeds_per_round", int),
                               ("budget_scale", "budget_scale", float), ("models", "models", str),
                               ("train_sizes", "train_sizes", str)):
        v = _list(getattr(args, option), conv)
        if v is not None:
            given[name] = v
    if "keep" in given:  # new rounds: none of the preset's per-round lists applies to them
        spec = {k: v for k, v in spec.items() if k not in ROUND_LISTS} | ROUND_DEFAULTS
    spec.update(given)
    if args.pool is not None:
        spec["pool"] = args.pool
    spec["first_seed"] = spec.get("first_seed", args.first_seed) if args.first_seed == 1 else args.first_seed
    # the presets' rounds end in the run's target regime; rounds (or their sizes) set by hand say their own
    spec["target"] = not args.no_target and not {"keep", "train_sizes"} & given.keys()
    spec["split_per_seed"] = getattr(args, "split_seed", None) == PER_SEED
    return Protocol.from_lists(**{k: spec[k] for k in ("keep", "seeds", "budget_scale", "models", "pool",
                                                       "first_seed", "train_sizes", "target", "split_per_seed")
                                  if k in spec})


def main(argv=None) -> int:
    return run_main("nlfs.eliminate", _main, argv)


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    protocol = protocol_from_args(args)
    over = training_overrides(args, BUDGET_OPTIONS)
    if args.split_seed not in (None, PER_SEED):  # one split seed for every seed, in place of the run's
        over["split_seed"] = args.split_seed
    t0 = time.time()
    e = Elimination(args.run_dir, protocol, None, args.workers, args.executor, args.address,
                    also=_list(args.also, str) or (), tuned=args.tuned, novel=args.novel_only, threads=args.threads,
                    pack=args.pack, include_known=args.include_known, overrides=over)
    try:
        with resume_with(command_line("nlfs.eliminate", sys.argv[1:] if argv is None else argv)):
            result = e.run()
        trained = e.trained
    finally:
        e.close()
    print(result["markdown"], end="")
    print(f"written to {args.run_dir}/elimination.md ({trained} trainings this session, "
          f"{time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
