"""The documented path from a search to a shipped loss, end to end on digits with tiny budgets, each
tool reading only what the previous one wrote: search -> tune -> eliminate -> transfer -> heldout. One
name per loss all the way, and the loss trained at each step is the loss the step before exported
(constants and gradient scale)."""

import json

import pytest

import nlfs
from nlfs import eliminate, evolve, heldout, transfer, tune
from tests.runs import csv_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = ["--dataset", "digits", "--steps", "15", "--train-size", "300", "--val-size", "150", "--backend", "torch"]


def test_search_tune_eliminate_transfer_heldout(tmp_path, capsys):
    run = tmp_path / "chain"
    assert evolve.main([*DATA, "--budget", "4", "--seed", "3", "--population", "2", "--sample", "2",
                        "--initial", "2", "--seed-losses", "CE;Poly1;-y*log(p)+0.3*(1-p)**2", "--seed-mutants", "0",
                        "--rungs", "steps=15,seeds=2", "--no-progress", "--workers", "1", "--run-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    names = [b["name"] for b in summary["best"]]
    assert names and all(n.startswith("chain#") for n in names)
    assert "verdict" in summary and "regime" in summary and "pp" in capsys.readouterr().out

    assert tune.main(["--run-dir", str(run), "--top", "2", "--trials", "2", "--batch", "2"]) == 0
    tuned = json.loads((run / "tuned.json").read_text())
    assert [t["name"] for t in tuned] == names[:2]  # the two best, whatever they hold
    assert "CE with the same training" in (run / "tuned.md").read_text()

    # the README's command shape: --keep without --models (the preset's 4-entry lists must not leak in)
    assert eliminate.main(["--run-dir", str(run), "--keep", "3,1", "--seeds-per-round", "2", "--pool", "4",
                           "--tuned"]) == 0
    finalists = json.loads((run / "finalists.json").read_text())
    assert len(finalists) == 1 and set(finalists[0]) >= {"name", "expression", "constants", "scale", "class_reduction",
                                                         "provenance"}
    survivor = finalists[0]
    assert survivor["name"].startswith("chain#") and "pp" in survivor["provenance"]["elimination"]

    out = tmp_path / "transfer"
    assert transfer.main(["--from", str(run), *DATA, "--seeds", "2", "--label-noise", "0.1", "--out", str(out),
                          "--no-plot"]) == 0
    rows = csv_rows(out / "transfer.csv")
    # beside CE, the strongest published losses of the regime (label noise: GCE, SCE, NCE+RCE) by default
    assert sorted({r["loss"] for r in rows}) == sorted({"CE", survivor["name"], "GCE", "SCE", "NCEandRCE"})
    mine = [r for r in rows if r["loss"] == survivor["name"]]
    assert all(r["status"] == "ok" and float(r["scale"]) == pytest.approx(survivor["scale"]) for r in mine)
    assert all(r["label_noise"] == "0.1" for r in rows)
    md = (out / "transfer.md").read_text()
    assert "label noise 0.1" in md and "Δ 95% CI, pp" in md and "## Against the strongest baseline" in md

    report = tmp_path / "heldout"
    assert heldout.main(["--setting", f"digits={out / 'transfer.csv'}", "--from", str(run), "--baselines", "CE",
                         "--out", str(report)]) == 0
    assert [r["finalist"] for r in csv_rows(f"{report}.csv")] == [survivor["name"]]
    assert "label noise 0.1" in (tmp_path / "heldout.md").read_text()

    # the exports of every step import side by side: each name is one loss, registered once
    try:
        for path in (run / "best_losses.py", run / "tuned_losses.py"):
            exec(compile(path.read_text(), str(path), "exec"), {})
            exec(compile(path.read_text(), str(path), "exec"), {})  # importing twice is fine
        nlfs.losses.register_file(run / "finalists.json")
        spec = nlfs.losses.get(survivor["name"])
        assert spec.scale == pytest.approx(survivor["scale"])
    finally:
        for name in [*names, *(t.get("tuned_name") for t in tuned), survivor["name"]]:
            if name:
                nlfs.losses._CATALOGUE.pop(nlfs.losses._key(name), None)
