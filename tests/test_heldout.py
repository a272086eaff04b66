"""The held-out table: every (finalist, baseline, setting) pair, Holm across all of them."""

import csv
import math

import pytest

from nlfs import heldout
from nlfs.stats import holm, paired_test
from tests.runs import csv_rows


def _write(path, accs, **columns):
    """A transfer CSV of ``accs`` ({loss: {seed: test accuracy}}), every row with ``columns`` too."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["loss", "seed", "status", "test_acc", *columns])
        w.writeheader()
        for loss, by_seed in accs.items():
            for seed, acc in by_seed.items():
                w.writerow({"loss": loss, "seed": seed, "status": "ok", "test_acc": acc, **columns})
        w.writerow({"loss": "A", "seed": 99, "status": "diverged", "test_acc": "", **columns})


def test_table_recomputes_from_csvs_with_holm_over_every_pair(tmp_path):
    seeds = range(10)
    strong = {"A": {s: 0.80 + 0.01 + 0.001 * (s % 3) for s in seeds}, "CE": {s: 0.80 + 0.0005 * s for s in seeds},
              "Poly1": {s: 0.805 + 0.0004 * s for s in seeds}}
    weak = {"A": {s: 0.70 + 0.002 * ((-1) ** s) for s in seeds}, "CE": {s: 0.70 for s in seeds},
            "Poly1": {s: 0.70 + 0.001 for s in seeds}}
    _write(tmp_path / "s1.csv", strong)
    _write(tmp_path / "s2.csv", weak)
    settings = {"s1": heldout.read_accuracies(tmp_path / "s1.csv"), "s2": heldout.read_accuracies(tmp_path / "s2.csv")}
    assert 99 not in settings["s1"]["A"]  # failed runs are not compared
    rows = heldout.table(settings, ["A"], ["CE", "Poly1"])
    assert [(r["setting"], r["baseline"]) for r in rows] == [("s1", "CE"), ("s1", "Poly1"), ("s2", "CE"),
                                                              ("s2", "Poly1")]
    raw = [paired_test([settings[s]["A"][k] for k in seeds], [settings[s][b][k] for k in seeds]).p_t
           for s, b in [("s1", "CE"), ("s1", "Poly1"), ("s2", "CE"), ("s2", "Poly1")]]
    assert [r["p_t_holm"] for r in rows] == pytest.approx(holm(raw))
    assert rows[0]["beats"] and not rows[2]["beats"] and not rows[3]["beats"]
    assert rows[0]["ci_low"] > 0 and rows[0]["mean_diff"] == pytest.approx(
        sum(strong["A"][s] - strong["CE"][s] for s in seeds) / 10)
    assert heldout.main(["--setting", f"s1={tmp_path / 's1.csv'}", "--setting", f"s2={tmp_path / 's2.csv'}",
                         "--finalists", "A", "--baselines", "CE,Poly1", "--out", str(tmp_path / "t")]) == 0
    with open(tmp_path / "t.csv") as fh:
        back = list(csv.DictReader(fh))
    assert [float(r["p_t_holm"]) for r in back] == pytest.approx([r["p_t_holm"] for r in rows], rel=1e-5)
    assert "s1" in (tmp_path / "t.md").read_text() and not math.isnan(float(back[0]["d_z"]))


def test_unknown_finalists_fail_and_from_takes_the_survivors(tmp_path, capsys):
    """A finalist label no CSV has is an error (it used to exit 0 with "0 comparisons"); --from DIR
    takes the elimination's survivors from DIR/finalists.json."""
    import json

    accs = {"run#4": {s: 0.8 + 0.01 * s for s in range(3)}, "CE": {s: 0.79 + 0.01 * s for s in range(3)}}
    _write(tmp_path / "s.csv", accs)
    common = ["--setting", f"s={tmp_path / 's.csv'}", "--baselines", "CE", "--out", str(tmp_path / "t")]
    with pytest.raises(SystemExit) as exc:
        heldout.main([*common, "--finalists", "run#44"])
    assert exc.value.code == 2
    assert "no finished run of run#44" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "finalists.json").write_text(json.dumps([{"name": "run#4", "expression": "p", "constants": {},
                                                     "scale": 1.0}]))
    assert heldout.main([*common, "--from", str(run)]) == 0
    with open(tmp_path / "t.csv") as fh:
        assert [r["finalist"] for r in csv.DictReader(fh)] == ["run#4"]
    assert "label noise ?" in (tmp_path / "t.md").read_text()  # a CSV without the column: regime unknown


def test_a_finalist_that_is_a_known_loss_at_other_constants_is_named_under_the_table(tmp_path):
    import json

    accs = {"run#4": {s: 0.8 + 0.01 * s for s in range(3)}, "run#5": {s: 0.8 for s in range(3)},
            "CE": {s: 0.79 + 0.01 * s for s in range(3)}}
    _write(tmp_path / "s.csv", accs)
    run = tmp_path / "run"
    run.mkdir()
    gce = {"loss": "GCE", "constants": {"q": 0.5}}
    (run / "finalists.json").write_text(json.dumps([  # as nlfs.eliminate writes them; run#5 from before it did
        {"name": "run#4", "expression": "-(y * sqrt(p))", "constants": {}, "provenance": {"known_family": gce}},
        {"name": "run#5", "expression": "-y * log(p) + 0.3 * p * y", "constants": {}}]))
    poly1 = {"loss": "Poly1", "constants": {"epsilon": -0.3}}  # fitted now
    assert heldout.finalists_from(run) == (["run#4", "run#5"], {"run#4": gce, "run#5": poly1})
    assert heldout.main(["--setting", f"s={tmp_path / 's.csv'}", "--baselines", "CE", "--out", str(tmp_path / "t"),
                         "--from", str(run)]) == 0
    md = (tmp_path / "t.md").read_text()
    assert "run#4 is GCE (q 0.5): a catalogue loss at other constants than its published ones" in md
    assert "run#5 is Poly1 (epsilon -0.3)" in md
    assert "is GCE" not in heldout.markdown(heldout.table({"s": heldout.read_accuracies(tmp_path / "s.csv")},
                                                          ["run#4"], ["CE"]))  # named only when given


def test_a_finalist_named_by_an_expression_with_a_comma_stays_whole(tmp_path):
    """--finalists and --baselines split as every tool's loss lists do: commas inside parentheses belong
    to the expression (an expression is its own label in transfer's CSV)."""
    _write(tmp_path / "s.csv", {"max(p, y)": {s: 0.8 + 0.01 * s for s in range(6)},
                                "CE": {s: 0.78 + 0.01 * s for s in range(6)}})
    assert heldout.main(["--setting", f"s={tmp_path / 's.csv'}", "--finalists", "max(p, y)", "--baselines", "CE",
                         "--out", str(tmp_path / "out")]) == 0
    assert [r["finalist"] for r in csv_rows(tmp_path / "out.csv")] == ["max(p, y)"]


def test_the_regime_line_says_how_each_setting_split_its_seeds(tmp_path):
    from nlfs.transfer import COLUMNS

    def write(name, split_seed, epochs=""):
        with open(tmp_path / f"{name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for loss, base in (("A", 0.81), ("CE", 0.80)):
                w.writerows({"loss": loss, "seed": s, "status": "ok", "test_acc": base + 0.001 * s * (loss == "A"),
                             "dataset": "digits", "model": "surrogate", "steps": 5, "epochs": epochs,
                             "label_noise": 0.4, "split_seed": split_seed(s)} for s in range(4))

    write("per", lambda seed: seed, epochs=2.0)  # a training's epochs and steps as run: both recorded
    write("fixed", lambda seed: 0)  # an older CSV with steps alone
    assert heldout.main(["--setting", f"per={tmp_path / 'per.csv'}", "--setting", f"fixed={tmp_path / 'fixed.csv'}",
                         "--finalists", "A", "--baselines", "CE", "--out", str(tmp_path / "t")]) == 0
    lines = {line.split(":")[0]: line for line in (tmp_path / "t.md").read_text().splitlines()
             if line.startswith("- ")}
    assert lines["- per"].endswith("each seed its own validation split, training subset and label noise "
                                   "(split_seed = seed)")
    assert lines["- fixed"].endswith("split seed 0 for every seed")
    assert "model surrogate, 2 epochs (5 steps)," in lines["- per"] and "model surrogate, 5 steps," in lines["- fixed"]


def test_the_csv_is_written_atomically_and_as_before(tmp_path, monkeypatch):
    """write_csv goes through nlfs._io.write_table (no half-written file): the bytes are those the plain
    csv writer gave (floats to 6 significant digits, NaN as nan, booleans and counts as they are)."""
    row = dict(setting="s", finalist="A", baseline="CE", n=3, finalist_mean=0.812345678, baseline_mean=0.8,
               mean_diff=0.0123456789, ci_low=math.nan, ci_high=math.inf, d_z=1.5, d_z_low=-0.25, d_z_high=3.0,
               wins=2, losses=1, p_t=1e-7, p_w=math.nan, p_t_holm=2e-7, p_w_holm=math.nan, beats=True)
    rows = [row, {**row, "setting": "t, with a comma", "beats": False}]
    expected = "\r\n".join([",".join(heldout.COLUMNS),
                            "s,A,CE,3,0.812346,0.8,0.0123457,nan,inf,1.5,-0.25,3,2,1,1e-07,nan,2e-07,nan,True",
                            '"t, with a comma",A,CE,3,0.812346,0.8,0.0123457,nan,inf,1.5,-0.25,3,2,1,1e-07,nan,2e-07,'
                            "nan,False", ""])
    heldout.write_csv(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_bytes() == expected.encode()
    import nlfs._io

    monkeypatch.setattr(nlfs._io.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        heldout.write_csv(tmp_path / "t.csv", [])
    assert (tmp_path / "t.csv").read_bytes() == expected.encode()  # the old file stands, no stray temporary
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_the_default_baselines_are_ce_and_the_regimes_strongest_the_csvs_hold(tmp_path):
    seeds = range(6)
    _write(tmp_path / "noisy.csv", {"A": {s: 0.80 + 0.001 * s for s in seeds}, "CE": {s: 0.78 for s in seeds},
                                    "GCE": {s: 0.81 for s in seeds}, "SCE": {s: 0.79 for s in seeds}},
           label_noise=0.4)
    assert heldout.default_baselines() == ["CE", "LabelSmoothingCE", "Poly1", "GCE", "SCE", "NCEandRCE"]
    assert heldout.main(["--setting", f"n={tmp_path / 'noisy.csv'}", "--finalists", "A",
                         "--out", str(tmp_path / "t")]) == 0
    assert [r["baseline"] for r in csv_rows(tmp_path / "t.csv")] == ["CE", "GCE", "SCE"]
    # 40% label noise: the regime's NCE+RCE is not in the CSV, and the table says so
    assert ("Setting n: its regime's strongest known losses NCEandRCE are not in its CSV"
            in (tmp_path / "t.md").read_text())
    _write(tmp_path / "old.csv", {"A": {s: 0.8 for s in seeds}, "CE": {s: 0.78 for s in seeds}})  # no label_noise
    assert heldout.main(["--setting", f"o={tmp_path / 'old.csv'}", "--finalists", "A",
                         "--out", str(tmp_path / "o")]) == 0
    assert "its regime's strongest known losses" not in (tmp_path / "o.md").read_text()  # its regime unknown
