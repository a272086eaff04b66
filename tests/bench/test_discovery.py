"""bench/discovery.py: finalists named from an elimination, held-out transfers, the report's table
recomputed from its CSVs, and shipping only what the table supports."""

import csv
import json
import math

import pytest
import torch

import nlfs.losses
import nlfs.train
from bench import discovery
from nlfs.search import RunDB
from nlfs.train import TrainResult

TINY = ("--dataset", "digits", "--steps", "3", "--train-size", "300", "--val-size", "100", "--seeds", "10",
        "--model", "surrogate", "--augment", "none", "--no-plot")


@pytest.fixture(autouse=True)
def _catalogue_restored():
    """The fake campaign names its finalists FoundFM1.. as the shipped ones are named: every test here
    leaves the catalogue (and the found losses) as it found them, shipped losses included."""
    saved = {k: dict(getattr(nlfs.losses, k)) for k in ("_CATALOGUE", "_ALIASES", "_FOUND")}
    yield
    for k, v in saved.items():
        getattr(nlfs.losses, k).clear()
        getattr(nlfs.losses, k).update(v)


def _elimination(path):
    surv = [{"label": "#7", "run": "runs/disc-gp", "id": 7, "expression": "-y * log(p) * c0 + y * (1 - p)",
             "constants": {"c0": 1.5}, "reduction": "class_sum", "search_fitness": 0.001, "tuned_from": None,
             "scale": 0.8, "paired_diff": 0.004, "paired_sd": 0.002, "scores": {"1": {"100": 0.8, "101": 0.81}}},
            {"label": "disc-nlfs#3", "run": "runs/disc-nlfs", "id": 3, "expression": "-y * log(p) + p * p",
             "constants": {}, "reduction": "class_sum", "search_fitness": -0.01, "tuned_from": None,
             "scale": 1.0, "paired_diff": -0.001, "paired_sd": 0.003,
             "scores": {"1": {"100": 0.8, "101": 0.79}}}]
    # the pool: search fitness and round-1 scores; the better a candidate looked in the search, the
    # worse it did here (and the Mixup run's and tuned entries are not part of that comparison)
    pool = [{"label": f"#{i}", "run": "runs/disc-gp", "id": i, "expression": "e", "constants": {},
             "search_fitness": 0.01 * i, "tuned_from": None,
             "scores": {"1": {"100": 0.80 - 0.002 * i, "101": 0.81 - 0.002 * i}}} for i in range(1, 6)]
    pool.append({**pool[0], "label": "disc-gp-mixup#9", "run": "runs/disc-gp-mixup", "search_fitness": 0.5})
    pool.append({**pool[0], "label": "#1-tuned", "tuned_from": "e", "search_fitness": 0.9})
    path.write_text(json.dumps({"rounds": [{"round": 1}], "survivors": surv, "pool": pool,
                                "ce": {"1": {"100": 0.80, "101": 0.81}}}))


class Fake:
    """FoundFM1 is 1 pp better than every baseline on every seed (with seed jitter), FoundFM2 no better."""

    def __init__(self):
        self.calls = []

    def __call__(self, loss, cfg, constants=None):
        spec = nlfs.losses.get(loss)
        self.calls.append((loss, spec.scale, cfg.lr))
        jitter = ((cfg.seed * 7919 + len(loss) * 31) % 13) / 13 * 0.004
        acc = 0.8 + (0.01 if loss == "FoundFM1" else 0.0) + jitter
        return TrainResult(val_acc=acc, best_val_acc=acc, test_acc=acc, final_train_loss=0.5, train_acc=acc,
                           steps=3, epochs=1.0, wall_time=0.01, device="cpu", dataset=cfg.dataset,
                           model=cfg.model, augment=cfg.augment, seed=cfg.seed, loss=loss, loss_text="",
                           backend="torch", diverged=False, reason="")


def _campaign(tmp_path, monkeypatch):
    camp = tmp_path / "discovery"
    (camp / "heldout").mkdir(parents=True)
    _elimination(tmp_path / "elimination.json")
    finals = discovery.finalists(tmp_path / "elimination.json", camp / "finalists.json")
    (camp / "elimination.json").write_text((tmp_path / "elimination.json").read_text())
    assert [f["name"] for f in finals] == ["FoundFM1", "FoundFM2"]
    assert finals[0]["scale"] == 0.8 and finals[0]["constants"] == {"c0": 1.5}
    assert "+0.40 ± 0.20 pp" in finals[0]["provenance"]["elimination"]
    fake = Fake()
    monkeypatch.setattr(nlfs.train, "train", fake)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the settings' --threads 1 is for the CLI
    for setting in ("arch", "noise"):
        assert discovery.run_heldout(setting, camp / "heldout", camp / "finalists.json", TINY) == 0
    run = tmp_path / "runs" / "disc-gp"
    db = RunDB(run / "run.db")
    for i, (status, rung, fit) in enumerate([("baseline", 0, None), ("ok", 0, -0.01), ("rejected:integrity", 0, None),
                                             ("ok", 1, 0.002), ("ok", 2, 0.001)]):
        db.record({"canonical": f"e{i}", "expression": f"-y * log(p) * {i + 1}", "constants": {}, "sign": 1.0,
                   "fitness": fit, "status": status, "rung": rung})
    db.close()
    assert discovery.trajectory([run], camp / "searches.csv") == 5
    return camp, fake


def test_heldout_report_and_ship(tmp_path, monkeypatch):
    camp, fake = _campaign(tmp_path, monkeypatch)
    # every loss had its learning rate picked from the same grid (2 seeds x 3 rates) before 10 final seeds
    for loss in ("FoundFM1", "FoundFM2", *discovery.BASELINES):
        assert len([c for c in fake.calls if c[0] == loss]) == 2 * (2 * 3 + 10)
    assert {c[1] for c in fake.calls if c[0] == "FoundFM1"} == {0.8}  # its shipped gradient scale
    # the confirmation: FoundFM1's lead (the same in both settings: the first, arch, is taken) on fresh seeds
    finals = [e["name"] for e in json.loads((camp / "finalists.json").read_text())]
    assert discovery.confirmation(discovery.heldout_rows(finals, camp), camp) is None
    assert discovery.run_confirm(camp / "confirm", camp / "finalists.json", camp,
                                 tuple(a for a in TINY if a != "10" and a != "--seeds")) == 0
    conf = discovery.confirmation(discovery.heldout_rows(finals, camp), camp)
    assert (conf["setting"], conf["finalist"], conf["seeds"]) == ("arch", "FoundFM1", list(range(10, 30)))
    assert conf["test"].mean_diff > 0 and conf["test"].p_t < 0.05
    (camp / "disc-gp").mkdir()
    (camp / "disc-gp" / "summary.json").write_text(json.dumps(
        {"chance": {"expected_best": 0.0123, "expected_best_independent": 0.0174}}))
    md = discovery.report("A note.", camp, tmp_path / "report")
    assert "| +0.10 pp | +1.23 to +1.74 pp |" in md  # the run's best, then the best its own seed noise gives
    assert "## Confirmation on fresh seeds" in md and "**confirmed** at α = 0.05" in md
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert len(rows) == 2 * 2 * 3  # settings x finalists x baselines
    won = {(r["setting"], r["finalist"], r["baseline"]) for r in rows if r["beats"] == "True"}
    assert won == {(s, "FoundFM1", b) for s in ("arch", "noise") for b in discovery.BASELINES}
    assert "A note." in md and "| disc-gp |" in md and "Shipped: FoundFM1 beat CE" in md
    assert "Over the 5 untuned candidates" in md and "Spearman -1.00" in md and "5 of 5 behind CE" in md
    assert "How large a lead does noise alone give?" in md and "disc-gp (best of 1) +0.00 to +0.00 pp" in md
    assert (tmp_path / "report.png").stat().st_size > 0
    target = tmp_path / "found.json"
    shipped = discovery.ship(camp, target)
    assert [e["name"] for e in shipped] == ["FoundFM1"] and shipped[0]["provenance"]["significant"] == "yes"
    assert shipped[0]["provenance"]["heldout"].startswith("arch +0.96 pp [")
    assert shipped[0]["provenance"]["search_report"] == "bench/results/discovery/disc-gp/"  # committed evidence
    assert shipped[0]["provenance"]["confirmation"].startswith("arch, fresh seeds 10-29: +")
    assert nlfs.losses.register_file(target) == ["FoundFM1"] and nlfs.losses.get("FoundFM1").scale == 0.8


def test_noise_ceiling(tmp_path):
    """seed_noise reads one seed's spread of the paired difference from a fidelity study's trainings."""
    (tmp_path / "f_losses.json").write_text(json.dumps(
        [{"id": 0, "name": "CE", "group": "catalogue"}, {"id": 1, "name": "A", "group": "near-ce"},
         {"id": 2, "name": "B", "group": "catalogue"}, {"id": 3, "name": "R", "group": "random-gp"}]))
    rows = [(0, "s64", 0, 0.80), (0, "s64x3", 1, 0.81), (0, "s64x3", 2, 0.82),
            (1, "s64", 0, 0.81), (1, "s64x3", 1, 0.81), (1, "s64x3", 2, 0.81),  # diffs +1, 0, -1 pp: sd 1 pp
            (2, "s64", 0, 0.80), (2, "s64x3", 1, 0.83), (2, "s64x3", 2, 0.84),  # diffs 0, +2, +2 pp
            (3, "s64", 0, 0.10), (3, "s64x3", 1, 0.70), (3, "s64x3", 2, 0.20),  # not CE-like: left out
            (1, "s32", 0, 0.10)]
    with (tmp_path / "f_trainings.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["loss_id", "variant", "level", "seed", "acc"])
        w.writerows([(i, v, lv, s, a) for i, lv, s, a in rows for v in ("ce", "none")])
    sd, n = discovery.seed_noise(tmp_path / "f")
    assert n == 2 and math.isclose(sd, (0.01 + 0.02 / math.sqrt(3)) / 2, rel_tol=1e-9)


def test_nothing_significant_ships_the_best_two_marked(tmp_path):
    rows = [dict(finalist=f, baseline="CE", setting=s, mean_diff=d, beats=False)
            for f, d in (("A", -0.01), ("B", 0.002), ("C", 0.001)) for s in ("x", "y")]
    assert discovery.chosen(rows, ["A", "B", "C"]) == (["B", "C"], False)
    rows[0]["beats"] = True  # a win against CE in one setting is enough
    assert discovery.chosen(rows, ["A", "B", "C"]) == (["A"], True)
    # and where a loss is significantly worse is said, not hidden
    for r, p in zip(rows, (0.01, 0.2, 0.01, 0.01, 0.5, 0.5), strict=True):
        r["p_t_holm"] = p
    assert discovery.worse(rows, "A") == ["x vs CE (-1.00 pp)"] and discovery.worse(rows, "B") == []


def test_committed_campaign_is_recomputed_from_its_csvs():
    """The committed report's table is what its committed transfer CSVs give, and the shipped losses are
    the ones that table supports; before the campaign has a report, nothing is shipped."""
    report_csv = discovery.REPORT.with_suffix(".csv")
    shipped = json.loads(nlfs.losses.FOUND_FILE.read_text())
    if not report_csv.exists():
        assert shipped == []
        return
    finals = json.loads((discovery.CAMPAIGN / "finalists.json").read_text())
    names = [e["name"] for e in finals]
    rows = discovery.heldout_rows(names)
    committed = list(csv.DictReader(report_csv.open()))
    assert len(rows) == len(committed) > 0
    for r, c in zip(rows, committed, strict=True):
        assert (r["setting"], r["finalist"], r["baseline"]) == (c["setting"], c["finalist"], c["baseline"])
        for k in ("mean_diff", "ci_low", "ci_high", "p_t_holm", "p_w_holm"):
            assert math.isclose(r[k], float(c[k]), rel_tol=1e-4, abs_tol=1e-9) or (
                math.isnan(r[k]) and c[k] == "nan")
    picked, _ = discovery.chosen(rows, names)
    assert [e["name"] for e in shipped] == picked


def test_campaign_script_parses_and_names_its_stages():
    import subprocess

    script = discovery.ROOT / "bench" / "discovery.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2
    stages = ("search", "refine", "heldout", "confirm", "report", "all")
    assert all(f"discovery.sh {stage}" in usage.stdout for stage in stages)


def test_search_time_leaves_out_the_pause_of_a_resumed_run():
    assert discovery.active_seconds([0, 5, 9, 20]) == 20
    assert discovery.active_seconds([0, 5, 9, 20, 2000, 2003]) == 23  # stopped after 20 s, resumed later
    rows = [dict(run="r", seconds=t, status=s, rung=g, fitness=f, expression="e")
            for t, s, g, f in ((0, "baseline", 0, ""), (10, "ok", 0, "-0.01"), (20, "ok", 2, "0.004"),
                               (5000, "ok", 0, "0.1"), (5030, "rejected:integrity", 0, ""))]
    (t,) = discovery.search_table(rows)
    assert t["wall_min"] == 50 / 60 and t["screened"] == 2 and t["last_rung"] == 1 and t["best_fitness"] == 0.004
