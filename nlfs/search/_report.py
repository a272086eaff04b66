"""What a person wants to see after a search: the hall of fame (best per size), a PNG of fitness
over evaluations, the best losses exported as catalogue entries and nn.Module code, as LaTeX and as
standalone PyTorch, their shapes beside cross-entropy, and a summary beside cross-entropy. Formulas
are shown simplified (``nlfs.expr.simplify``) with their constants' values; ``run.db`` keeps the raw
expression. Which rows are shown, in what order: ``_ranking``; where the leaders stand in the target:
``_in_target``."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_write
from ..stats import format_pp as pp
from ._db import read_config, read_target_baselines
from ._filters import WARM_START, family_record, family_text, known_twin
from ._in_target import baseline_results, strongest_baseline, target_note, target_results
from ._ranking import (
    baseline,
    baseline_accuracy,
    baseline_scores,
    best_candidates,
    best_new_candidates,
    chance_lead,
    hall_of_fame,
    is_known,
    known_loss,
    rung_of,
    shown_candidates,
    trained_ok,
)
from ._rows import CE_EXPRESSION, TARGET_STAGE, seed_stats, summary_counts
from ._rungs import base_length, budget_text, with_length


def row_spec(r: dict, name: str, class_reduction: str = "class_sum"):
    """The LossSpec a row was trained as (its constants, and its scale where the row records one)."""
    import types

    from ..expr import parse
    from ..losses import LossSpec, stored_class_reduction

    return LossSpec(name, parse(r["expression"]), stored_class_reduction(r, class_reduction),
                    types.MappingProxyType(dict(r.get("constants") or {})), f"nlfs run, evaluation #{r['id']}",
                    float(r.get("scale") or 1.0))


def formula(r: dict, class_reduction: str = "class_sum") -> str:
    """The row's loss, simplified, with its constants' values rounded for display."""
    from .._export import formula as spec_formula

    try:
        return spec_formula(row_spec(r, "loss", class_reduction))
    except Exception:  # noqa: BLE001 - a report never fails over one display form
        return r["expression"]


def row_name(r: dict, run_dir: Path) -> str:
    """The one name of a row's loss in every report and export: ``<run>#<id>`` (``nlfs.losses.loss_label``),
    or the name the row already carries (a tuned loss's ``<run>#<id>-tuned``)."""
    from ..losses import loss_label

    return r.get("name") or loss_label(Path(run_dir).name, r["id"])


def _kind(ahead: bool, proxy_only: bool = False) -> str:
    """What an export's losses are: found ones only when the best is ahead of CE and, where the target
    checked it, its lead held there."""
    if ahead and proxy_only:
        return "Best candidates (a proxy lead the target regime did not confirm: not found losses)"
    return "Best losses" if ahead else "Best candidates (none ahead of cross-entropy: not found losses)"


def export_takeaways(best: list[dict], run_dir: Path, class_reduction: str = "class_sum", ahead: bool = True,
                     notes: dict | None = None, proxy_only: bool = False) -> None:
    """``best_losses.tex``, ``best_losses_standalone.py`` (plain PyTorch, LOSSES by name) and
    ``loss_shapes.png`` for the reported losses, each under its ``<run>#<id>`` name; ``notes`` (row id
    -> text) says where each fitness was measured."""
    from .._export import standalone_source, to_latex
    from ..plots import plot_loss_shapes

    specs = {row_name(r, run_dir): row_spec(r, row_name(r, run_dir), class_reduction) for r in best}
    regimes = notes or {}
    notes = {k: f"Evaluation #{r['id']}, fitness {r['fitness']:.4f} on {r.get('dataset')}"
             + (f" ({regimes[r['id']]})." if r["id"] in regimes else ".") for k, r in zip(specs, best)}
    tex = [f"% {_kind(ahead, proxy_only)} of the nlfs run {run_dir} (y: target, p: softmax of the logits).",
           "% log of anything but p, sqrt and denominators are protected: |x| floored at epsilon = 10^{-7}.", ""]
    for k, spec in specs.items():
        over = r"\frac{1}{C}\sum_c" if spec.class_reduction == "element_mean" else r"\sum_c"
        tex += [f"% {k}: {notes[k]}", r"\begin{equation}",
                f"  \\ell_{{\\mathrm{{{_tex_name(k)}}}}}(y, p) = {over} \\left({to_latex(spec)}\\right)",
                r"\end{equation}", ""]
    atomic_write(run_dir / "best_losses.tex", "\n".join(tex))
    src = standalone_source({k: (spec, notes[k]) for k, spec in specs.items()},
                            title=f"{_kind(ahead, proxy_only)} of the nlfs run {run_dir}, as plain PyTorch.")
    atomic_write(run_dir / "best_losses_standalone.py", src)
    if specs:
        plot_loss_shapes(specs, run_dir / "loss_shapes.png")


def _tex_name(name: str) -> str:
    return "".join("\\" + c if c in "#_%&$" else c for c in name)


def plot_fitness(rows: list[dict], path: Path, paired: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in trained_ok(rows) if r.get("stage") != TARGET_STAGE]
    in_target = [r for r in trained_ok(rows) if r.get("stage") == TARGET_STAGE]
    fig, ax = plt.subplots(figsize=(7, 4))
    if in_target:  # another regime: shown apart, never part of the screening's running best
        ax.scatter([r["id"] for r in in_target], [r["fitness"] for r in in_target], marker="*", s=90,
                   color="crimson", label="in the target regime")
    for rung in sorted({rung_of(r) for r in ok}):
        at = [r for r in ok if rung_of(r) == rung]
        ax.scatter([r["id"] for r in at], [r["fitness"] for r in at], s=12 + 10 * rung, alpha=0.6,
                   label=f"rung {rung}")
    top_rung = [r for r in ok if rung_of(r) == max((rung_of(r) for r in ok), default=0)]
    if top_rung:
        running, best = [], float("-inf")
        for r in top_rung:
            best = max(best, r["fitness"])
            running.append(best)
        ax.step([r["id"] for r in top_rung], running, where="post", color="k", lw=1,
                label="best at the top rung")
    if paired:
        ax.axhline(0.0, color="k", ls="--", lw=1, label="cross-entropy (same seeds)")
    else:
        base = baseline(rows)
        if base and base.get("fitness") is not None:
            ax.axhline(base["fitness"], color="k", ls="--", lw=1, label="cross-entropy")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("fitness: accuracy - CE's, same seeds" if paired else "fitness (validation accuracy)")
    if ax.get_legend_handles_labels()[0]:  # a run with nothing trained has nothing to label
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export_losses(rows: list[dict], path: Path, run_dir: Path, k: int = 5, class_reduction: str = "class_sum",
                  ahead: bool = True, what: str = "", notes: dict | None = None,
                  chosen: list[dict] | None = None, proxy_only: bool = False) -> None:
    """A Python file that registers the best losses (``chosen``, in order, or the ``k`` best of
    ``rows`` by ``best_candidates``) in the catalogue, each under its ``<run>#<id>``
    name with the constants and gradient scale it was trained with, and defines an nn.Module class per
    loss (named by ``nlfs.losses.python_name``). Registering refuses a different loss under a taken
    name, so two exports never silently replace each other. ``what`` says what the losses are;
    ``notes`` (row id -> text), where each fitness was measured."""
    from ..losses import python_name, stored_class_reduction

    what = what or f"{_kind(ahead, proxy_only)} of the nlfs run {run_dir}"
    lines = [f'"""{what}. Import this module to register them."""', "", "import nlfs", ""]
    for r in best_candidates(rows, k) if chosen is None else chosen:
        name = row_name(r, run_dir)
        src = f"nlfs run {run_dir}, evaluation #{r['id']}, fitness {r['fitness']:.4f} on {r.get('dataset')}"
        if notes and r["id"] in notes:
            src += f" ({notes[r['id']]})"
        scale = float(r.get("scale") or 1.0)
        over = stored_class_reduction(r, class_reduction)
        lines += [f"nlfs.losses.register({name!r}, {r['expression']!r}, class_reduction={over!r},",
                  f"                     constants={r.get('constants') or {}!r}, source={src!r},",
                  f"                     scale={scale!r})", "",
                  f"class {python_name(name)}(nlfs.Loss):",
                  f'    """{name}: {r["expression"]}"""', "",
                  "    def __init__(self, **kwargs):",
                  f"        super().__init__({name!r}, **kwargs)", "", ""]
    atomic_write(path, "\n".join(lines).rstrip() + "\n")


FAMILIES_FILE = "known_families.json"  # known_family's answers for a run's leaders (seconds each: fitted once)
FINALISTS = "finalists.json"  # what nlfs.eliminate writes: its survivors, in found_losses.json's format
TUNED = "tuned.json"  # what nlfs.tune --top writes: each candidate's tuning


def changed_tunings(run_dir: str | Path) -> list[dict]:
    """The tunings in ``run_dir/tuned.json`` (none without one) that changed their candidate's
    constants: the others tuned nothing, or found nothing better, and leave the candidate as it was."""
    path = Path(run_dir) / TUNED
    if not path.is_file():
        return []
    return [t for t in json.loads(path.read_text())
            if not t.get("nothing_to_tune") and t.get("best_constants") not in (None, t.get("initial_constants"))]


def run_losses(run_dir: str | Path, k: int = 3) -> tuple[list[dict], str]:
    """The losses a run directory hands on to the next tool, as entries in nlfs/found_losses.json's
    format (name, expression, constants, class_reduction, scale, provenance), and a line saying which:
    the elimination's survivors (``DIR/finalists.json``) when it has them, else the search's ``k`` best
    (``best_candidates``; known losses in disguise left out, as the search's verdict and exports leave
    them out), each replaced by its tuned version when ``DIR/tuned.json`` changed its constants. Names
    and scales are those of the search's exports."""
    from ..losses import read_losses_file, stored_class_reduction
    from ._db import read_run

    run_dir = Path(run_dir)
    if (run_dir / FINALISTS).is_file():
        entries = read_losses_file(run_dir / FINALISTS)
        return entries, f"the {len(entries)} survivors of the elimination in {run_dir / FINALISTS}"
    rows, saved = read_run(run_dir)
    class_reduction = stored_class_reduction(saved)
    best = best_new_candidates(rows, saved, k)
    if not best:
        raise ValueError(f"search run {run_dir} has no successfully trained candidates other than known losses "
                         "in disguise")
    tuned = {t["id"]: t for t in changed_tunings(run_dir)}
    out = []
    for r in best:
        t = tuned.get(r["id"])
        prov = {"search_run": str(run_dir), "candidate": row_name(r, run_dir), "search_fitness": r["fitness"]}
        if t is None:
            out.append({"name": row_name(r, run_dir), "expression": r["expression"],
                        "constants": dict(r.get("constants") or {}),
                        "class_reduction": stored_class_reduction(r, class_reduction),
                        "scale": float(r.get("scale") or 1.0), "provenance": prov})
        else:
            out.append({"name": t.get("tuned_name") or f"{row_name(r, run_dir)}-tuned", "expression": t["expression"],
                        "constants": dict(t["best_constants"]),
                        "class_reduction": stored_class_reduction(t, class_reduction),
                        "scale": float(t.get("scale") or 1.0),
                        "provenance": {**prov, "tuned_from": r["expression"], "tuned": str(run_dir / TUNED)}})
    what = f"the search's {len(out)} best new candidates in {run_dir}" + (
        f" ({len(tuned.keys() & {r['id'] for r in best})} with tuned constants from tuned.json)" if tuned else "")
    return out, what


def entry_spec(entry: dict):
    """The LossSpec of a found_losses.json-format entry: the loss exactly as it was trained."""
    import types

    from ..expr import parse
    from ..losses import LossSpec, stored_class_reduction

    return LossSpec(entry["name"], parse(entry["expression"]), stored_class_reduction(entry),
                    types.MappingProxyType({k: float(v) for k, v in (entry.get("constants") or {}).items()}),
                    "; ".join(f"{k}: {v}" for k, v in (entry.get("provenance") or {}).items()),
                    float(entry.get("scale") or 1.0))




def data_words(dataset: str, model: str, data_root=None) -> tuple[str, str]:
    """What a run's data holds and the model it trains, in words: ("training samples", "mlp") for
    feature vectors (the ``surrogate`` of tabular data is the MLP), ("training images", model) else."""
    from ..data import DATASETS, canonical_name, load_dataset

    try:
        name = canonical_name(dataset)
        features = name not in DATASETS and load_dataset(name, data_root).features
    except Exception:  # noqa: BLE001 - data gone since the run: name what the run recorded
        return "training images", model
    return ("training samples", "mlp" if model == "surrogate" else model) if features else ("training images", model)


def regime(cfg: dict) -> str:
    """The training regime of a search run in one line: data, budget per rung, label noise,
    augmentation, gradient scale (what a comparison with CE is valid for); for a fitness function's
    run, its budget per rung."""
    if cfg.get("fitness"):
        return "your fitness function; " + "; ".join(f"rung {i}: budget {r.get('budget'):g}, {r.get('seeds', 1)} "
                                                     "seed(s)" for i, r in enumerate(cfg.get("rungs") or []))
    train = {**(cfg.get("train_overrides") or {})}
    size = cfg.get("train_size") or train.get("train_size")
    rungs = cfg.get("rungs") or []
    base = _base_length(cfg)
    budget = "; ".join(f"rung {i}: {budget_text(with_length(r, base))}, {r.get('seeds', 1)} seed(s)"
                       for i, r in enumerate(rungs)) or budget_text(base)
    kind = f" ({train.get('label_noise_kind', 'symmetric')})" if train.get("label_noise") else ""
    unit, model = data_words(cfg.get("dataset", "?"), cfg.get("model", "surrogate"), cfg.get("data_root"))
    return (f"{cfg.get('dataset', '?')} ({size or 'all'} {unit}), model {model}; "
            f"{budget}; label noise {train.get('label_noise') or 0:g}{kind}; "
            f"augmentation {cfg.get('augment', 'none')}; "
            f"gradient scale {cfg.get('grad_scale', 'none')}; scored by {score_words(cfg.get('score', 'best'))}")


def _base_length(cfg: dict) -> dict:
    """A saved run's own length (``_rungs.base_length``): what its rungs without one train."""
    return base_length(cfg.get("dataset", "?"), cfg.get("epochs"), cfg.get("steps"))


def score_words(score: str) -> str:
    """Which validation accuracy a search's trainings score, in words (``SearchConfig.score``)."""
    return ("the final model's validation accuracy" if score == "final"
            else "the best validation accuracy over a training's evaluations")


def training_regime(cfg, split_per_seed: bool = False, score: str | None = None) -> str:
    """One line naming a TrainConfig's regime: data and training size, model, budget, label noise,
    augmentation, gradient scale (every report that compares with CE prints it); with
    ``split_per_seed``, that each seed drew its own split, subset and noise (split_seed = seed); with
    ``score``, which validation accuracy scored it (``score_words``)."""
    r = cfg.resolved() if hasattr(cfg, "resolved") else cfg
    budget = f"{r.steps} steps" if getattr(r, "steps", None) else f"{r.epochs} epochs"
    kind = f" ({getattr(r, 'label_noise_kind', 'symmetric')})" if getattr(r, "label_noise", 0) else ""
    unit = data_words(r.dataset, r.model, getattr(r, "data_root", None))[0]
    split = ", each seed its own validation split, training subset and label noise (split_seed = seed)" if (
        split_per_seed) else ""
    return (f"{r.dataset} ({r.train_size or 'all'} {unit}), model {r.model}, {budget} at batch "
            f"{r.batch_size}, label noise {getattr(r, 'label_noise', 0) or 0:g}{kind}, augmentation {r.augment}, "
            f"gradient scale {r.grad_scale}{split}" + (f"; scored by {score_words(score)}" if score else ""))


def lead_note(r: dict, chance: dict | None, top_rung: int, last_rung: int) -> str:
    """What a lead over CE is worth: behind CE, within what chance gives, or above it (and then still a
    proxy lead when measured on a screening rung's short trainings, never a discovery by itself)."""
    d = r.get("paired") if r.get("paired") is not None else r.get("vs_ce")
    if d is None:
        return ""
    if d < 0:
        return "behind CE"
    if d == 0:
        return "level with CE"
    rung = r.get("rung", 0)
    where = "at a screening rung" if rung < last_rung else "on the search's short trainings"
    ci = r.get("paired_ci")
    if ci and ci[0] <= 0:
        return f"ahead within seed noise (its interval includes 0) {where}"
    if chance is not None and rung == chance["rung"] and d <= chance["expected_best_independent"]:
        return "within chance"
    return (f"ahead {'beyond chance ' if chance is not None and rung == chance['rung'] else ''}{where}: "
            f"a proxy lead, not a discovery")


def rung_regime(cfg: dict, rung: int, seeds: int | None = None) -> str:
    """Where a screening fitness was measured: the rung's budget and its seeds, a proxy (a lead there is
    a proxy lead: ``lead_note`` says whether it is one)."""
    spec = dict((cfg.get("rungs") or [{}])[rung] if rung < len(cfg.get("rungs") or []) else {})
    n = seeds or spec.pop("seeds", 1)
    spec.pop("seeds", None)
    if "budget" in spec:  # a fitness function's run: nlfs trained nothing itself
        return f"your fitness function, budget {spec['budget']:g} (screening rung {rung}), {n} seed(s): a proxy"
    budget = budget_text(with_length(spec, _base_length(cfg)))  # a schedule read early says so in words
    return f"screening rung {rung} ({budget}), {n} seed(s): a proxy"


def target_describe(cfg: dict) -> str | None:
    """The run's target regime in words (None for runs saved before targets)."""
    from ._config import SearchConfig
    from ._target import make_target

    if not cfg.get("target"):
        return None
    try:
        unit = "training images" if cfg.get("fitness") else data_words(cfg.get("dataset", "?"), "surrogate",
                                                                         cfg.get("data_root"))[0]
        base = SearchConfig.from_dict(cfg, strict=False).train_config()
        return make_target(cfg["target"]).describe(unit, None if cfg.get("fitness") else cfg.get("dataset", "?"), base)
    except (TypeError, ValueError):
        return None


def _regime_defaults(cfg: dict) -> tuple[str, ...]:
    """The target baselines ``--target-baselines regime`` would train for the run saved as ``cfg``."""
    from ._config import SearchConfig, regime_target_baselines

    try:
        return regime_target_baselines("regime", SearchConfig.from_dict({**cfg, "fitness": False}, strict=False))
    except (TypeError, ValueError):  # a run saved before targets
        return regime_target_baselines("regime", SearchConfig())


def confirm(cfg: dict | None, fitness: bool = False) -> str:
    """How to confirm a lead: nlfs's elimination and transfer when nlfs trained the candidates; the
    user's own loop on more seeds for a fitness function's run (nlfs's tools train with nlfs's trainer)."""
    if fitness or (cfg or {}).get("fitness"):
        return ("confirm it in your own training loop: register the losses (Discovery.register, or import "
                "best_losses.py) and score each beside CE on more seeds than the search used")
    return "confirm with nlfs.eliminate and nlfs.transfer"


def _family_note(entry: dict) -> str:
    return f" (= {family_text(entry['known_family'])})" if entry.get("known_family") else ""


def is_paired_run(cfg: dict, rows: list[dict]) -> bool:
    """Whether a run's fitness is a paired difference to CE (else an accuracy): a paired run with a
    baseline whose rows hold paired seeds."""
    return bool(cfg.get("paired", False) and cfg.get("baseline", True)) and any(
        s.get("paired") is not None for r in rows for s in (r.get("result") or {}).get("seeds", []) or [])


def write_report(run_dir: str | Path, rows: list[dict], class_reduction: str | None = None) -> dict:
    from ..losses import stored_class_reduction

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    class_reduction = class_reduction or stored_class_reduction(cfg)
    paired = is_paired_run(cfg, rows)
    normalise = cfg.get("grad_scale", "none") != "none"
    hof = hall_of_fame(rows)
    best = shown_candidates(rows, 5)
    counts = summary_counts(rows)
    # the last screening rung reached (the target stage's rows sit one above, in another regime)
    top_rung = max((rung_of(r) for r in rows if r["status"] != "baseline" and r.get("stage") != TARGET_STAGE),
                   default=0)
    last_rung = max(len(cfg.get("rungs") or []) - 1, top_rung)
    chance = chance_lead(rows, top_rung, normalise) if paired else None

    def entry(r):  # expression: as trained (parseable); formula: simplified, constants' values rounded
        e = {"name": row_name(r, run_dir), **{k: r[k] for k in ("id", "expression", "fitness", "size")},
             "formula": formula(r, class_reduction), "constants": r.get("constants") or {}, "rung": rung_of(r),
             "scale": r.get("scale") or 1.0, "ce_accuracy": baseline_accuracy(rows, rung_of(r)),
             "same_as": known_twin(r, normalise, cfg.get("seed_losses") or ()), **seed_stats(r)}
        acc = e["accuracy"] if e["accuracy"] is not None else e["fitness"]
        e["vs_ce"] = e["paired"] if e["paired"] is not None else (
            None if e["ce_accuracy"] is None or paired else acc - e["ce_accuracy"])
        e["lead"] = lead_note(e, chance, top_rung, last_rung)
        e["regime"] = rung_regime(cfg, rung_of(r), e["seeds"])
        t = in_target.get(r.get("candidate") or r["id"])
        strongest = None if t is None else strongest_baseline(t, in_target_baselines)
        e["target"] = None if t is None else {**{k: v for k, v in t.items() if k != "per_seed"},
                                              "regime": target_text, "vs_strongest": strongest}
        e["in_target"] = target_note(t, strongest)
        # a leader checked in the target may be a catalogue loss at other constants (seconds each: only these);
        # a warm start too (one the user tuned), not a catalogue loss at its published ones
        catalogue = e["same_as"] and not e["same_as"].startswith(WARM_START)
        e["known_family"] = family_of(r, class_reduction) if t and not catalogue else None
        return e

    try:
        families = json.loads((run_dir / FAMILIES_FILE).read_text())
    except (OSError, ValueError):  # none yet, or unreadable: fitted again
        families = {}
    fitted = len(families)

    def family_of(r, class_reduction):  # known_family, fitted once per run: a resumed run's report reuses it
        key = json.dumps([r["expression"], r.get("constants") or {}, class_reduction], sort_keys=True)
        if key not in families:
            families[key] = family_record(r["expression"], r.get("constants") or {}, class_reduction)
        return families[key]

    in_target = target_results(rows)
    target_text = target_describe(cfg)
    fidelity = next((t["fidelity"] for t in in_target.values()), None)
    in_target_baselines = baseline_results(read_target_baselines(run_dir), rows, fidelity)
    # the proxy's best new loss (shown, though not always first): the verdict's subject, never a known loss
    ranked = next((r for r in best_candidates(rows, len(rows)) if not known_loss(r, cfg)), None)
    if ranked is not None and all(r["id"] != ranked["id"] for r in best):
        best = [*best, ranked]
    entries = [entry(r) for r in best]
    for e in entries:
        e["known"] = is_known(e["same_as"], cfg)
    top = next((e for e in entries if ranked and e["id"] == ranked["id"]), None)
    above = [e for e in entries if e["known"] and top is not None and e["vs_ce"] is not None
             and top["vs_ce"] is not None and e["vs_ce"] > top["vs_ce"]]
    ahead = top is not None and top["vs_ce"] is not None and top["vs_ce"] > 0
    if top is None:
        verdict = "no new loss trained" + (" (those shown are known losses)" if entries else "")
    elif top["vs_ce"] is None:
        verdict = "no CE reference to compare with"
    elif ahead:
        verdict = f"best {top['name']} {pp(top['vs_ce'], top['paired_ci'])} vs CE ({top['lead']}): {confirm(cfg)}"
    else:
        verdict = (f"no candidate is ahead of CE (best {top['name']} {pp(top['vs_ce'])}); "
                   "the exports are candidates, not found losses")
    proxy_only = ahead and top["target"] is not None and not top["in_target"].startswith("held")
    checked = [e for e in entries if e["target"] is not None]
    if checked:
        held = [e for e in checked if e["in_target"].startswith("held")]
        if proxy_only:
            verdict = (f"best {top['name']} {pp(top['vs_ce'], top['paired_ci'])} vs CE at the proxy, "
                       f"a proxy lead only — {top['in_target']}")
            if top["in_target"].startswith("not shown"):  # one target seed: a sign to check, not a verdict
                verdict += f"; {confirm(cfg)}"
        others = [e for e in checked if e is not top]
        verdict += f" ({target_text})"
        if others:
            verdict += "; " + ", ".join(f"{e['name']} {e['in_target']}" for e in others)
        verdict += "" if held else "; no lead held in the target"
        alone = [e for e in held if not (e["target"]["vs_strongest"] or {}).get("compared")]
        if alone:  # held against CE alone: no target baseline (the regime's strongest) trained beside it
            verdict += (f"; {', '.join(e['name'] for e in alone)} held against CE only: no known loss of the regime "
                        "was trained in the target to compare with (" + (
                            "a fitness function's regime is yours: call discover again with this run_dir and "
                            "target_baselines=(...), e.g. ('GCE', 'SCE'), to train them there" if cfg.get("fitness")
                            else f"--resume this run with --target-baselines regime to train "
                                 f"{', '.join(_regime_defaults(cfg))} there")
                        + ")")
        retuned = [e for e in held if e["known_family"]]
        if retuned:
            verdict += "; " + ", ".join(f"{e['name']} is {family_text(e['known_family'])}" for e in retuned) + (
                ": a known loss at other constants than its published ones, not a new loss")
    if above:
        verdict += "; " + ", ".join(f"{e['name']} ({e['same_as'].replace(WARM_START, 'a warm start ')}, "
                                    f"{pp(e['vs_ce'])})" for e in above) + (
            " ranked higher: known losses, baselines rather than finds")
    summary = {"counts": counts, "paired": paired, "augment": cfg.get("augment", "none"),
               "grad_scale": cfg.get("grad_scale", "none"), "rungs": cfg.get("rungs"), "regime": regime(cfg),
               "baseline_ce": baseline_accuracy(rows, top_rung),
               "baseline_ce_seeds": len(baseline_scores(rows, top_rung)), "ahead_of_ce": ahead,
               "proxy_lead_only": proxy_only, "verdict": verdict,
               "chance": chance, "best": entries, "fitness_function": bool(cfg.get("fitness")),
               "target": None if target_text is None else {
                   "regime": target_text, "spec": cfg.get("target"), "finalists": cfg.get("finalists"),
                   "race_seeds": cfg.get("race_seeds"), "checked": len(in_target),
                   "held": sum(target_note(t, strongest_baseline(t, in_target_baselines)).startswith("held")
                               for t in in_target.values()),
                   "baselines": [{k: v for k, v in b.items() if k != "per_seed"} for b in in_target_baselines]},
               "hall_of_fame": [entry(r) for r in hof]}
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2))
    if len(families) != fitted:
        atomic_write(run_dir / FAMILIES_FILE, json.dumps(families, indent=1))
    score = "your fitness function's score" if cfg.get("fitness") else score_words(cfg.get("score", "best"))
    fitness = f"{score} minus CE's with the same seeds at the same rung" if paired else score
    md = ["# Hall of fame (best per size)", "",
          f"Fitness: {fitness}; augmentation {summary['augment']}; gradient scale {summary['grad_scale']}.",
          "",
          f"Regime: {summary['regime']}.", "",
          "Fitness below is measured at a screening rung (a proxy: a lead there is a proxy lead); "
          + (f"the leaders were also trained in the {target_text}." if target_text else "no target regime."),
          "", f"**Verdict:** {verdict}.", "",
          "| size | rung | fitness | formula | vs CE | measured in | in the target |",
          "|---|---|---|---|---|---|---|"]
    fmt = "+.4f" if paired else ".4f"
    md += [f"| {r['size']} | {rung_of(r)} | {r['fitness']:{fmt}} | `{formula(r, class_reduction)}` | "
           f"{pp(e['vs_ce'], e['paired_ci'])} | {e['regime']} | {e['in_target']} |"
           for r, e in zip(hof, summary["hall_of_fame"])]
    if checked:
        md += ["", f"## In the {target_text}", "",
               "| loss | proxy: vs CE | measured in | target: seeds | target: vs CE, same seeds | held? |",
               "|---|---|---|---|---|---|"]
        md += [f"| {e['name']}{_family_note(e)} | {pp(e['vs_ce'], e['paired_ci'])} | {e['regime']} | "
               f"{e['target']['seeds']} | "
               f"{pp(e['target']['paired'], e['target']['paired_ci']) if e['target']['paired'] is not None else '-'}"
               f" | {e['in_target']} |" for e in checked]
        if in_target_baselines:
            md += ["", "Known losses trained in the target beside CE, on the same seeds (the regime's strong "
                   "baselines: a lead holds only against the strongest of them):", "",
                   "| loss | expression (constants) | seeds | accuracy | vs CE, same seeds |", "|---|---|---|---|---|"]
            for b in in_target_baselines:
                failed = f" ({len(b['failed'])} failed: {b['reason']})" if b["failed"] else ""
                acc = "-" if b["accuracy"] is None else f"{b['accuracy']:.4f}"
                values = ", ".join(f"{k} {v:g}" for k, v in sorted(b["constants"].items()))
                values = f" ({values})" if values else ""
                md.append(f"| {b['name']} | `{b['expression']}`{values} | {b['seeds']}{failed} | {acc} | "
                          f"{pp(b['vs_ce'], b['vs_ce_ci']) if b['vs_ce'] is not None else '-'} |")
    atomic_write(run_dir / "hall_of_fame.md", "\n".join(md) + "\n")
    plot_fitness(rows, run_dir / "fitness.png", paired)
    notes = {e["id"]: f"{e['regime']}; {e['in_target']}" for e in entries}
    new = [r for r, e in zip(best, entries) if not e["known"]]  # a known loss is exported by its own name
    export_losses(rows, run_dir / "best_losses.py", run_dir, class_reduction=class_reduction, ahead=ahead, notes=notes,
                  chosen=new, proxy_only=proxy_only)
    export_takeaways(new, run_dir, class_reduction, ahead, notes=notes, proxy_only=proxy_only)
    return summary


def format_summary(summary: dict, dataset: str) -> str:
    c = summary["counts"]
    lines = [f"candidates {c['evaluated']}: trained {c['trained']} (ok {c['ok']}, diverged {c['diverged']}, "
             f"error {c['error']}); removed before training: validity {c['validity']}, duplicate "
             f"{c['duplicate']}, integrity {c['integrity']}, fingerprint {c['fingerprint']}, "
             f"rejection {c['rejection']}"]
    spent = c.get("rungs") or {}
    if spent:
        lines.append("rungs: " + "; ".join(f"{k}: {v['trained']} trained ({v['ok']} ok) in {v['seconds']:.0f} s"
                                           for k, v in sorted(spent.items())))
    lines.append(f"augmentation {summary.get('augment', 'none')}, gradient scale "
                 f"{summary.get('grad_scale', 'none')}; dataset {dataset}")
    if summary.get("regime"):
        lines.append(f"regime: {summary['regime']}")
    base = summary["baseline_ce"]
    paired = summary.get("paired")
    head = "paired vs CE, pp [95% CI]" if paired else "vs CE, pp"
    width = max([10] + [len(r.get("name") or "") for r in summary["best"]])
    score = "score" if summary.get("fitness_function") else "val acc"  # a fitness function's, or nlfs's training
    lines.append(f"{'loss':<{width}} {'rung':>4} {'seeds':>5} {score:>8}  {head:<26} formula")
    if base is not None:
        n = summary.get("baseline_ce_seeds") or ""
        # its mean over every seed it trained; a row's Δ pairs it with CE on that row's own seeds only
        note = "   (mean of CE's seeds; each Δ below is against CE on that row's seeds)" if paired else ""
        lines.append(f"{'CE':<{width}} {'':>4} {n:>5} {base:>8.4f}  {'':<26} {CE_EXPRESSION}{note}")
    for r in summary["best"]:
        acc = r.get("accuracy")
        acc = r["fitness"] if acc is None else acc
        if paired and r.get("paired") is not None:
            delta = pp(r["paired"], r.get("paired_ci"))
        else:
            ce = r.get("ce_accuracy", base)
            delta = "" if ce is None else pp(acc - ce)
        same = r.get("same_as") or ""
        twin = "   [= a warm start]" if same.startswith(WARM_START) else f"   [= {same} in disguise]" if same else ""
        family = family_text(r.get("known_family"))
        twin += f"   [= {family}: a known loss at other constants]" if family else ""
        lead = f"   ({r['lead']})" if r.get("lead") else ""
        lines.append(f"{r.get('name') or '#' + str(r['id']):<{width}} {r.get('rung', 0):>4} {r.get('seeds') or 1:>5} "
                     f"{acc:>8.4f}  {delta:<26} {r.get('formula', r['expression'])}{twin}{lead}")
    target = summary.get("target")
    if target:
        lines.append("fitness above: measured at the screening rungs (a proxy: a lead there is a proxy lead). "
                     f"In the {target['regime']}: {target['checked']} leader(s) checked, {target['held']} held:")
        for r in summary["best"]:
            if r.get("target") is not None or r.get("lead", "").startswith("ahead"):
                where, held = r.get("regime", "a screening rung"), r.get("in_target", "not checked in the target")
                lines.append(f"  {r.get('name')}: {pp(r.get('vs_ce'), r.get('paired_ci'))} at {where} -> {held}")
        if target.get("baselines"):
            lines.append("  known losses trained there beside CE, same seeds: " + "; ".join(
                f"{b['name']} " + (f"failed ({b['reason']})" if b["accuracy"] is None else
                                   f"{b['accuracy']:.4f} ({pp(b['vs_ce'], b['vs_ce_ci'])} vs CE"
                                   + (f"; {len(b['failed'])} seed(s) failed: {b['reason']}" if b["failed"] else "")
                                   + ")")
                for b in target["baselines"]))
    chance = summary.get("chance")
    if chance:
        few = (f" (an estimate from only {chance['noise_from']} candidate(s): rough)"
               if chance.get("few") else "")
        lines.append(f"chance: {chance['candidates']} candidates reached rung {chance['rung']}; one seed moves a "
                     f"paired difference by {chance['seed_sd'] * 100:.2f} pp (median sd, CE in disguise left "
                     f"out){few}, so among {chance['candidates']} losses no different from CE the best mean over "
                     f"{chance['seeds']} seeds would be {chance['expected_best'] * 100:+.2f} pp "
                     f"({chance['expected_best_independent'] * 100:+.2f} pp if none of that noise were CE's). "
                     f"A lead near that is not evidence, and a lead on a search's short trainings is a proxy "
                     f"lead: {confirm(None, summary.get('fitness_function'))}.")
    if summary.get("verdict"):
        lines.append(f"verdict: {summary['verdict']}")
    return "\n".join(lines)
