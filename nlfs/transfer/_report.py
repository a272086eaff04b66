"""A transfer's verdict: per-loss statistics against CE, every contender against the strongest
baseline on its own seeds (Holm), the Markdown table with its regime, and the strip plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import stats as _stats
from .._io import machine_name, today
from ._entries import REFERENCE


def _kind(cfg) -> str:
    """`` (pairflip)`` after a noise rate: the noise kind, named when there is noise."""
    return f" ({cfg.label_noise_kind})" if cfg.label_noise else ""



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
    from ..losses import get

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
    from ..search import training_regime

    lines = [f"# Transfer: {r.dataset} / {r.model} / augment {r.augment}", "",
             f"Regime: {training_regime(r, split_per_seed)}.", ""]
    if note:
        lines += [note, ""]
    from ..search import regime_baselines

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
    constants = {x["loss"]: _constants(x.get("constants")) for x in rows if x.get("constants")}
    lines += [f"- {s['loss']}: `{s['expression']}`" + "".join(
        f" ({what})" for what in (constants.get(s["loss"]),
                                  f"scale {float(scales[s['loss']]):.4g}" if s["loss"] in scales else None) if what)
        for s in summary]
    if command:
        lines += ["", "Command:", "", "```", command, "```"]
    path.write_text("\n".join(lines) + "\n")


def _constants(cell) -> str:
    """A row's constants (a dict, or its JSON as read back from the CSV) as ``q 0.5, b 1``."""
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except ValueError:
            return cell
    if not isinstance(cell, dict):
        return str(cell)
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in sorted(cell.items()))


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

