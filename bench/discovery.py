"""The discovery campaign's steps that are not a search, tuning or elimination (issue #14).

    python -m bench.discovery finalists    # elimination survivors -> runs/disc-finalists.json (named, scaled)
    python -m bench.discovery heldout NAME # one held-out setting: nlfs.transfer, 10 seeds, lr from a grid
    python -m bench.discovery trajectory   # every search evaluation (no phenotypes) -> a committed CSV
    python -m bench.discovery confirm      # the held-out lead most likely real, again on fresh seeds
    python -m bench.discovery report       # bench/results/discovery_fashion_mnist.{md,csv,png}
    python -m bench.discovery ship         # the finalists the evidence supports -> nlfs/found_losses.json

``bash bench/discovery.sh`` runs them in order. The report reads only committed files under
bench/results/discovery/ (and ``report --check`` recomputes its table from them), so every figure it
states can be recomputed from the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sqlite3
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._schema import machine_name, today  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CAMPAIGN = RESULTS / "discovery"
REPORT = RESULTS / "discovery_fashion_mnist"
FINALISTS = ROOT / "runs" / "disc-finalists.json"
ELIMINATION = ROOT / "runs" / "disc-gp"  # the elimination lives in the first search's run directory
BASELINES = ("CE", "LabelSmoothingCE", "Poly1")
PREFIX = "FoundFM"

# Held-out settings: none of them was seen by the searches (surrogate CNN, 4,096 images, 32-64 steps, no
# augmentation or Mixup, clean labels) or by the elimination (surrogate, 8,192 images, up to 4 x 2 epochs).
# The learning-rate rule of this campaign (a fixed grid, the best epoch's validation accuracy): its committed
# rows are reused as they were chosen.
COMMON = ["--dataset", "fashion-mnist", "--val-size", "5000", "--grad-scale", "none", "--seeds", "10",
          "--lr-grid", "0.05,0.1,0.2", "--lr-widen", "0", "--lr-by", "peak", "--lr-seeds", "0,1", "--threads", "1"]
SETTINGS = {
    "arch": ("another architecture: ResNet9V2 (pre-activation ResNet) instead of the surrogate CNN; "
             "8,192 images, 2 epochs", ["--model", "resnet9v2", "--train-size", "8192", "--epochs", "2"]),
    "cutout": ("another augmentation: Cutout (the searches used none and Mixup); surrogate, 8,192 images, "
               "4 epochs", ["--augment", "cutout", "--train-size", "8192", "--epochs", "4"]),
    "full": ("another data regime: all 55,000 training images (60,000 less the 5,000 validation), "
             "2 epochs (860 steps, 13x the search's longest)", ["--epochs", "2"]),
    "noise": ("20% symmetric label noise on the training labels (validation and test clean); surrogate, "
              "8,192 images, 4 epochs", ["--label-noise", "0.2", "--train-size", "8192", "--epochs", "4"]),
}


# ------------------------------------------------------------------------------------------- finalists
def finalists(elimination: Path, out: Path) -> list[dict]:
    """Name the elimination's survivors ``FoundFM1..`` with the constants and gradient scale they were
    trained with; the file has nlfs/found_losses.json's format (``nlfs.transfer --losses-file``)."""
    saved = json.loads(elimination.read_text())
    from nlfs.losses import stored_class_reduction
    from nlfs.stats import format_mean_std

    entries = []
    for i, s in enumerate(saved["survivors"], 1):
        diff = format_mean_std(s["paired_diff"], s["paired_sd"], scale=100, sign=True)
        entries.append({
            "name": f"{PREFIX}{i}", "expression": s["expression"], "constants": s["constants"],
            "class_reduction": stored_class_reduction(s), "scale": s["scale"],
            "provenance": {"search_run": s["run"], "candidate": s["label"],
                           "tuned_from": s.get("tuned_from"),
                           "elimination": f"{diff} pp vs CE "
                                          f"(last round, {len(s['scores'][str(len(saved['rounds']))])} seeds)",
                           "results": "bench/results/discovery_fashion_mnist.md"}})
    out.write_text(json.dumps(entries, indent=2) + "\n")
    return entries


# --------------------------------------------------------------------------------------------- heldout
def heldout_args(setting: str, names: list[str], out_dir: Path, finalists_file: Path = FINALISTS) -> list[str]:
    desc, args = SETTINGS[setting]
    return [*COMMON, *args, "--losses-file", str(finalists_file), "--losses", ",".join([*names, *BASELINES]),
            "--out", str(out_dir), "--name", setting, "--note", f"Held-out setting `{setting}`: {desc}."]


def run_heldout(setting: str, out_dir: Path, finalists_file: Path = FINALISTS, extra: tuple = ()) -> int:
    """One held-out setting through ``nlfs.transfer`` (``extra`` options override the setting's)."""
    from nlfs import transfer

    names = [e["name"] for e in json.loads(finalists_file.read_text())]
    return transfer.main([*heldout_args(setting, names, out_dir, finalists_file), *extra])


# ------------------------------------------------------------------------------------------ trajectory
TRAJECTORY = ["run", "id", "candidate", "seconds", "rung", "status", "accuracy", "fitness", "scale",
              "expression"]


def trajectory(runs: list[Path], out: Path) -> int:
    """Every evaluation of each search (time since the run's first row, rung, status, accuracy, paired
    fitness): enough to redraw the search trajectory and count candidates per CPU-hour."""
    rows = []
    for run in runs:
        con = sqlite3.connect(f"file:{run / 'run.db'}?mode=ro", uri=True)
        cur = con.execute("SELECT id, candidate, created, COALESCE(rung, 0), status, accuracy, fitness, scale, "
                          "expression FROM evaluations ORDER BY id")
        data = cur.fetchall()
        con.close()
        t0 = min(r[2] for r in data)
        rows += [dict(zip(TRAJECTORY, (run.name, r[0], r[1], round(r[2] - t0, 1), *r[3:]), strict=True))
                 for r in data]
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TRAJECTORY)
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def active_seconds(times: list[float], pause: float = 120.0) -> float:
    """Time a run was running: the gaps between its rows, a gap over ``pause`` seconds (the run was
    stopped, then resumed) counted as nothing. A running search records a row every few seconds."""
    times = sorted(times)
    return sum(b - a for a, b in zip(times, times[1:]) if b - a <= pause)


def search_table(rows: list[dict], workers: int = 2) -> list[dict]:
    """Per search: active wall time, CPU-hours (workers x wall), candidates trained at rung 0 and at the
    last rung, and the best paired difference to CE at the last rung."""
    out = []
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        wall = active_seconds([float(r["seconds"]) for r in mine])
        trained = [r for r in mine if r["status"] in ("ok", "diverged", "error")]
        top = max(int(r["rung"]) for r in trained)
        last = [r for r in trained if int(r["rung"]) == top and r["status"] == "ok" and r["fitness"] not in ("", None)]
        best = max(last, key=lambda r: float(r["fitness"])) if last else None
        out.append({"run": run, "wall_min": wall / 60, "cpu_hours": wall * workers / 3600,
                    "screened": sum(1 for r in trained if int(r["rung"]) == 0),
                    "evaluated": sum(1 for r in mine if r["status"] != "baseline" and int(r["rung"]) == 0),
                    "last_rung": len(last), "best_fitness": float(best["fitness"]) if best else math.nan,
                    "best_expression": best["expression"] if best else ""})
    return out


# ------------------------------------------------------------------------------------- noise ceiling
FIDELITY = RESULTS / "fidelity_fashion_mnist"


def seed_noise(fidelity: Path = FIDELITY, variant: str = "ce", groups=("catalogue", "near-ce")) -> tuple[float, int]:
    """(sd, n): the median, over the fidelity study's CE-like losses, of the standard deviation across
    seeds of one seed's paired difference to CE at the last rung's budget (64 steps, seeds 0-2, the
    search's gradient scale): how far one seed moves a candidate's fitness when nothing about it changes."""
    from nlfs import stats

    losses = {e["id"]: e for e in json.loads(Path(f"{fidelity}_losses.json").read_text())}
    ce = next(i for i, e in losses.items() if e["name"] == "CE")
    acc = {}
    with Path(f"{fidelity}_trainings.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["variant"] == variant and r["level"] in ("s64", "s64x3"):  # s64x3 holds seeds 1 and 2
                acc[(int(r["loss_id"]), int(r["seed"]))] = float(r["acc"])
    differences = []
    for i, e in losses.items():
        diffs = [acc[(i, s)] - acc[(ce, s)] for s in range(3) if (i, s) in acc and (ce, s) in acc]
        if i != ce and e["group"] in groups and len(diffs) == 3:
            differences.append(diffs)
    return stats.seed_noise(differences)


# -------------------------------------------------------------------------------------------- report
def screening_check(elimination: dict, skip_runs: tuple[str, ...] = ("disc-gp-mixup",)) -> dict:
    """Did the search's last rung predict the elimination's first round? Over the pool's untuned
    candidates from unaugmented searches (a Mixup run's fitness is under Mixup): Spearman between the
    search fitness and the round-1 paired difference to CE, with both ranges."""
    from scipy.stats import spearmanr

    ce = elimination["ce"]["1"]
    pairs = []
    for c in elimination["pool"]:
        if c.get("tuned_from") or any(str(c.get("run", "")).endswith(r) for r in skip_runs):
            continue
        mine = c["scores"].get("1", {})
        diffs = [mine[s] - ce[s] for s in mine if s in ce]
        if diffs:
            pairs.append((c["search_fitness"], statistics.fmean(diffs)))
    if len(pairs) < 3:
        return {"n": len(pairs)}
    rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"n": len(pairs), "spearman": float(rho.statistic), "p": float(rho.pvalue),
            "search": (min(a for a, _ in pairs), max(a for a, _ in pairs)),
            "round1": (min(b for _, b in pairs), max(b for _, b in pairs)),
            "behind": sum(1 for _, b in pairs if b < 0)}


def heldout_rows(names: list[str], campaign: Path = CAMPAIGN) -> list[dict]:
    """The held-out table (``nlfs.heldout``) from the committed transfer CSVs of every setting."""
    from nlfs.heldout import read_accuracies, table

    settings = {s: read_accuracies(campaign / "heldout" / f"{s}.csv") for s in SETTINGS
                if (campaign / "heldout" / f"{s}.csv").exists()}
    return table(settings, names, list(BASELINES))


# ------------------------------------------------------------------------------------------ confirmation
# Fixed before the held-out table was complete: the one comparison with CE most likely to be real is
# trained again on fresh seeds and tested once, so a lead the 36-way Holm correction cannot separate
# from chance gets a test of its own (a confirmation; what ships still follows `chosen`).
CONFIRM_SEEDS = "10-29"


def confirmation_target(rows: list[dict]) -> dict | None:
    """The held-out comparison with CE to confirm: a positive mean difference with the smallest
    uncorrected paired t-test p-value (ties: the larger difference)."""
    cands = [r for r in rows if r["baseline"] == "CE" and r["mean_diff"] > 0 and math.isfinite(r["p_t"])]
    return min(cands, key=lambda r: (r["p_t"], -r["mean_diff"])) if cands else None


def run_confirm(out_dir: Path, finalists_file: Path = FINALISTS, campaign: Path = CAMPAIGN, extra: tuple = ()) -> int:
    """Train the confirmation target's finalist and CE on seeds ``CONFIRM_SEEDS`` in its setting."""
    from nlfs import transfer

    target = confirmation_target(heldout_rows([e["name"] for e in json.loads(finalists_file.read_text())],
                                              campaign))
    if target is None:
        print("no finalist is ahead of CE in any held-out setting: nothing to confirm")
        return 0
    setting, name = target["setting"], target["finalist"]
    desc, args = SETTINGS[setting]
    return transfer.main([*COMMON, *args, "--seeds", CONFIRM_SEEDS, "--losses-file", str(finalists_file),
                          "--losses", f"{name},CE", "--out", str(out_dir), "--name", setting,
                          "--note", f"Confirmation of {name} vs CE in `{setting}` on fresh seeds {CONFIRM_SEEDS}: "
                          f"{desc}.", *extra])


def confirmation(rows: list[dict], campaign: Path = CAMPAIGN) -> dict | None:
    """The confirmation's one paired test, from its committed CSV: the target of the held-out ``rows``
    (its setting and finalist; None before it ran, or when the CSV is of another target or lacks its
    pairs)."""
    from nlfs.heldout import read_accuracies
    from nlfs.stats import paired_by_key

    target = confirmation_target(rows)
    path = campaign / "confirm" / f"{target['setting']}.csv" if target else None
    if path is None or not path.exists():
        return None
    acc = read_accuracies(path)
    name = target["finalist"]
    seeds = sorted(set(acc.get(name, {})) & set(acc.get("CE", {})))
    if len(seeds) < 2:
        return None
    return {"setting": target["setting"], "finalist": name, "test": paired_by_key(acc[name], acc["CE"]),
            "seeds": seeds}


def chosen(rows: list[dict], names: list[str]) -> tuple[list[str], bool]:
    """Finalists that beat CE in at least one setting after correction; else the best two by mean paired
    difference to CE over the settings (``significant`` False)."""
    wins = [n for n in names if any(r["beats"] for r in rows if r["finalist"] == n and r["baseline"] == "CE")]
    if wins:
        return wins, True

    def mean_diff(n):
        ds = [r["mean_diff"] for r in rows if r["finalist"] == n and r["baseline"] == "CE"]
        return statistics.fmean(ds) if ds else -math.inf

    return sorted(names, key=mean_diff, reverse=True)[:2], False


def worse(rows: list[dict], name: str, alpha: float = 0.05) -> list[str]:
    """Where ``name`` is significantly *worse* than a baseline after the same correction: a shipped loss
    says where not to use it."""
    return [f"{r['setting']} vs {r['baseline']} ({r['mean_diff'] * 100:+.2f} pp)" for r in rows
            if r["finalist"] == name and r["mean_diff"] < 0 and math.isfinite(r["p_t_holm"]) and r["p_t_holm"] < alpha]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    names = list(dict.fromkeys(r["finalist"] for r in rows))
    fig, axes = plt.subplots(1, len(BASELINES), figsize=(4.2 * len(BASELINES), 3.2), sharey=True)
    for ax, base in zip(axes, BASELINES, strict=True):
        for j, n in enumerate(names):
            pts = [(i, r) for i, s in enumerate(settings) for r in rows
                   if r["setting"] == s and r["finalist"] == n and r["baseline"] == base]
            x = [i + (j - (len(names) - 1) / 2) * 0.12 for i, _ in pts]
            y = [r["mean_diff"] * 100 for _, r in pts]
            err = [[(r["mean_diff"] - r["ci_low"]) * 100 for _, r in pts],
                   [(r["ci_high"] - r["mean_diff"]) * 100 for _, r in pts]]
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=n)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(settings)), settings)
        ax.set_title(f"vs {base}")
    axes[0].set_ylabel("test accuracy Δ, pp (95% CI, paired)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _chance(run: Path) -> str:
    path = run / "summary.json"
    chance = json.loads(path.read_text()).get("chance") if path.exists() else None
    if not chance:
        return "–"
    return f"{chance['expected_best'] * 100:+.2f} to {chance['expected_best_independent'] * 100:+.2f} pp"


def report(note: str = "", campaign: Path = CAMPAIGN, out: Path = REPORT, fidelity: Path = FIDELITY) -> str:
    """Write ``out``.md/.csv/.png from the campaign's committed files; returns the Markdown."""
    from nlfs.heldout import markdown, write_csv
    from nlfs.stats import chance_best_paired, format_p

    finals = json.loads((campaign / "finalists.json").read_text())
    names = [e["name"] for e in finals]
    with (campaign / "searches.csv").open(newline="") as fh:
        searches = search_table(list(csv.DictReader(fh)))
    rows = heldout_rows(names, campaign)
    write_csv(f"{out}.csv", rows)
    if rows:
        plot(rows, Path(f"{out}.png"))
    picked, significant = chosen(rows, names) if rows else ([], False)
    lines = [f"# Discovery campaign on Fashion-MNIST ({machine_name()}, {today()})", ""]
    if note:
        lines += [note.strip(), ""]
    lines += ["Pipeline (`bash bench/discovery.sh all`; each stage resumes): three searches -> tuning of each "
              "run's best -> elimination over all of them -> held-out transfer with a learning-rate grid -> "
              "Holm-corrected table. Every number below is recomputed from the files under "
              "`bench/results/discovery/` by `python -m bench.discovery report`.", "",
              "## Searches", "",
              "| run | wall min | CPU-hours (2 workers) | candidates trained at rung 0 | reached last rung | "
              "best paired Δ vs CE at last rung | best by chance alone | its expression |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in searches:
        lines.append(f"| {s['run']} | {s['wall_min']:.1f} | {s['cpu_hours']:.2f} | {s['screened']} | "
                     f"{s['last_rung']} | {s['best_fitness'] * 100:+.2f} pp | {_chance(campaign / s['run'])} | "
                     f"`{s['best_expression']}` |")
    lines += ["", "*Best by chance alone*: the expected best of that many candidates if none differed from CE, "
              "from the run's own seed spread at its last rung: from candidates as noisy as CE (half of a "
              "paired difference's noise is the CE training every candidate shares) to none of it shared "
              "(`chance` in its summary.json: `nlfs.stats.expected_max_normal`; also printed by `nlfs.evolve`)."]
    lines += ["", f"In all {sum(s['cpu_hours'] for s in searches):.2f} CPU-hours. Hall of fame, fitness plot and "
              "settings of each run: `bench/results/discovery/<run>/`; every evaluation: `searches.csv`.", ""]
    if Path(f"{fidelity}_trainings.csv").exists():
        sd, n = seed_noise(fidelity)
        lines += [f"**How large a lead does noise alone give?** Independently of the runs' own seeds: one seed's "
                  f"paired difference to CE at the last "
                  f"rung's budget moves by {sd * 100:.2f} pp (median per-loss sd over seeds 0-2 of the fidelity "
                  f"study's {n} CE-like losses at 64 steps, `{Path(fidelity).name}_trainings.csv`), so a mean "
                  f"of 3 seeds by {sd * 100 / math.sqrt(3):.2f} pp. If no candidate differed from CE at all, the "
                  "best of a search's last-rung candidates would still be expected at (candidates as noisy as "
                  "CE to none of the noise shared): "
                  + "; ".join(f"{s['run']} (best of {s['last_rung']}) "
                              + " to ".join(f"{x * 100:+.2f}" for x in chance_best_paired(s["last_rung"], sd, 3))
                              + f" pp (found {s['best_fitness'] * 100:+.2f})" for s in searches) + ".", ""]
    check = screening_check(json.loads((campaign / "elimination.json").read_text()))
    if check.get("spearman") is not None:
        lines += [f"**Did the search's last rung predict longer training?** Over the {check['n']} untuned "
                  f"candidates of the unaugmented searches that entered the elimination, the search's paired "
                  f"difference to CE ({check['search'][0] * 100:+.2f} to {check['search'][1] * 100:+.2f} pp at "
                  f"64 steps x 3 seeds) and the elimination's first round ({check['round1'][0] * 100:+.2f} to "
                  f"{check['round1'][1] * 100:+.2f} pp at 128 steps x 2 new seeds; {check['behind']} of "
                  f"{check['n']} behind CE) have Spearman {check['spearman']:.2f} (p = {check['p']:.2f}).", ""]
    lines += ["## Finalists (after tuning and elimination: `bench/results/discovery/elimination.md`)", "",
              "| name | expression | constants | gradient scale | elimination |", "|---|---|---|---:|---|"]
    for e in finals:
        consts = ", ".join(f"{k}={v:.4g}" for k, v in e["constants"].items()) or "-"
        lines.append(f"| {e['name']} | `{e['expression']}` | {consts} | {e['scale']:.3g} | "
                     f"{e['provenance']['elimination']} |")
    lines += ["", "## Held-out settings", "", "Every loss, CE included, takes its learning rate from "
              "{0.05, 0.1, 0.2} by mean validation accuracy over seeds 0-1; then 10 seeds (0-9) read the test "
              "split once each. Finalists are trained with their shipped gradient scale (no rescaling).", ""]
    lines += [f"- `{k}`: {v[0]}" for k, v in SETTINGS.items()]
    lines += ["", "Common options: `" + " ".join(COMMON) + "`.", ""]
    lines += [markdown(rows) if rows else "No held-out results yet.", ""]
    conf = confirmation(rows, campaign)
    if conf:
        t = conf["test"]
        verdict = "confirmed" if t.p_t < 0.05 and t.mean_diff > 0 else "not confirmed"
        lines += ["## Confirmation on fresh seeds", "",
                  f"Chosen by rule before the table was complete (`confirmation_target`: the comparison with CE "
                  f"with a positive difference and the smallest uncorrected p): {conf['finalist']} in "
                  f"`{conf['setting']}`, trained again with CE on seeds {conf['seeds'][0]}-{conf['seeds'][-1]} "
                  f"(`python -m bench.discovery confirm`; CSV under `bench/results/discovery/confirm/`). One test: "
                  f"{conf['finalist']} - CE = {t.mean_diff * 100:+.2f} pp [{t.ci_low * 100:+.2f}, "
                  f"{t.ci_high * 100:+.2f}] over {t.n} paired seeds, {t.wins}/{t.losses} better/worse, paired t-test "
                  f"p = {format_p(t.p_t)}, Wilcoxon p = {format_p(t.p_w)}, d_z = {t.d_z:+.2f}: **{verdict}** "
                  f"at α = 0.05.", ""]
    if rows:
        lines += [f"![held-out]({Path(out).name}.png)", "",
                  "## What ships (the issue's rule: beats CE somewhere after correction)", "",
                  (f"Shipped: {', '.join(picked)} beat CE on at least one held-out setting after correction."
                   if significant else
                   f"No finalist beats CE on any held-out setting after the Holm correction. Shipped, marked "
                   f"not significant: {', '.join(picked)} (the best two by mean paired difference to CE over "
                   f"the settings).")]
        lines += [""] + [f"- {n} is significantly worse after correction: {'; '.join(worse(rows, n))}."
                         for n in names if worse(rows, n)]
    text = "\n".join(lines) + "\n"
    Path(f"{out}.md").write_text(text)
    return text


def ship(campaign: Path = CAMPAIGN, target: Path = ROOT / "nlfs" / "found_losses.json") -> list[dict]:
    """Write the finalists the held-out table supports (see :func:`chosen`) to ``target``."""
    finals = json.loads((campaign / "finalists.json").read_text())
    rows = heldout_rows([e["name"] for e in finals], campaign)
    if not rows:
        raise SystemExit("no held-out results under bench/results/discovery/heldout/: nothing to ship")
    picked, significant = chosen(rows, [e["name"] for e in finals])
    conf = confirmation(rows, campaign)
    out = []
    for e in finals:
        if e["name"] not in picked:
            continue
        mine = [r for r in rows if r["finalist"] == e["name"] and r["baseline"] == "CE"]
        run = Path(e["provenance"].get("search_run") or "").name
        e = dict(e, provenance=dict(
            e["provenance"], search_report=f"bench/results/discovery/{run}/" if run else "",
            significant="yes" if significant else "no: no held-out setting after Holm",
            significantly_worse="; ".join(worse(rows, e["name"])) or "nowhere",
            heldout="; ".join(f"{r['setting']} {r['mean_diff'] * 100:+.2f} pp [{r['ci_low'] * 100:+.2f}, "
                              f"{r['ci_high'] * 100:+.2f}] vs CE" for r in mine)))
        if conf and conf["finalist"] == e["name"]:
            t = conf["test"]
            e["provenance"]["confirmation"] = (
                f"{conf['setting']}, fresh seeds {conf['seeds'][0]}-{conf['seeds'][-1]}: {t.mean_diff * 100:+.2f} pp "
                f"[{t.ci_low * 100:+.2f}, {t.ci_high * 100:+.2f}] vs CE, paired t-test p = {t.p_t:.3g}")
        out.append(e)
    target.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.discovery", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("finalists")
    f.add_argument("--elimination", type=Path, default=ELIMINATION / "elimination.json")
    f.add_argument("--out", type=Path, default=FINALISTS)
    h = sub.add_parser("heldout")
    h.add_argument("setting", choices=sorted(SETTINGS))
    h.add_argument("--out", type=Path, default=ROOT / "runs" / "disc-heldout")
    h.add_argument("--workers", type=int, default=1, help="trainings at once (nlfs.transfer --workers)")
    c = sub.add_parser("confirm", help="the held-out lead most likely to be real, on fresh seeds")
    c.add_argument("--out", type=Path, default=ROOT / "runs" / "disc-confirm")
    c.add_argument("--workers", type=int, default=1, help="trainings at once (nlfs.transfer --workers)")
    t = sub.add_parser("trajectory")
    t.add_argument("runs", nargs="+", type=Path)
    t.add_argument("--out", type=Path, default=CAMPAIGN / "searches.csv")
    r = sub.add_parser("report")
    r.add_argument("--note", type=Path, default=CAMPAIGN / "note.md")
    sub.add_parser("ship")
    args = ap.parse_args(argv)
    if args.cmd == "finalists":
        for e in finalists(args.elimination, args.out):
            print(f"{e['name']}: {e['expression']} {e['constants']} scale {e['scale']:.3g}")
    elif args.cmd == "heldout":
        return run_heldout(args.setting, args.out, extra=("--workers", str(args.workers)))
    elif args.cmd == "confirm":
        return run_confirm(args.out, extra=("--workers", str(args.workers)))
    elif args.cmd == "trajectory":
        print(f"{trajectory(args.runs, args.out)} evaluations -> {args.out}")
    elif args.cmd == "report":
        print(report(args.note.read_text() if args.note.exists() else ""))
    elif args.cmd == "ship":
        for e in ship():
            print(f"shipped {e['name']}: {e['provenance']['heldout']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
