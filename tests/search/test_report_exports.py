"""What a search run's report hands its user: simplified formulas with their constants (summary,
hall of fame, summary.json), best_losses.tex, loss_shapes.png, and best_losses_standalone.py, which,
imported in a fresh process where nlfs cannot be imported, matches nlfs.Loss for every found loss."""

import json

import nlfs
from nlfs.search._report import format_summary, write_report
from tests.test_export import assert_matches_loss, run_standalone, standalone_cases

TAYLOR = nlfs.losses.get("TaylorGLO").text


def _rows():
    def row(i, expression, fitness, constants=None, size=9, **extra):
        return {"id": i, "expression": expression, "constants": constants or {}, "fitness": fitness,
                "size": size, "status": "ok", "dataset": "digits", **extra}

    taylor = {f"t{k}": 0.25 * k - 0.5 for k in range(8)}
    return [
        {"id": 0, "expression": "-y * log(p)", "constants": {}, "fitness": 0.90, "size": 4, "status": "baseline"},
        row(1, TAYLOR, 0.93, taylor, size=40),
        row(2, TAYLOR, 0.92, {k: v + 1.0 for k, v in taylor.items()}, size=40),
        row(3, "-max(sqrt(max(2.413, 1) + y - sin(0.8425 * p)), cos(2.496))", 0.91, size=12),
        row(4, "min(aq(p, y * -1), aq(p, y * -1))", 0.89, size=7, scale=2.5),
        {"id": 5, "expression": "p", "constants": {}, "fitness": None, "size": 1, "status": "rejected:validity",
         "stage": "validity"},
    ]


def test_report_shows_simplified_formulas_with_constants(tmp_path):
    rows = _rows()
    summary = write_report(tmp_path, rows)
    best = summary["best"]
    assert [b["id"] for b in best] == [1, 2, 3, 4]
    assert best[0]["expression"] == TAYLOR  # as trained, parseable
    assert best[0]["formula"] != best[1]["formula"] and "t1" not in best[0]["formula"]
    assert best[2]["formula"] == "-sqrt(2.413 + y - sin(0.8425 * p))"
    assert best[3]["formula"] == "2.5 * (aq(p, y))"
    assert json.loads((tmp_path / "summary.json").read_text())["best"][2]["formula"] == best[2]["formula"]
    text = format_summary(summary, "digits")
    assert "-sqrt(2.413 + y - sin(0.8425 * p))" in text and TAYLOR not in text
    hof = (tmp_path / "hall_of_fame.md").read_text()
    assert "| 12 | 0 | 0.9100 | `-sqrt(2.413 + y - sin(0.8425 * p))` |" in hof
    assert "`2.5 * (aq(p, y))`" in hof
    tex = (tmp_path / "best_losses.tex").read_text()
    assert tex.count(r"\begin{equation}") == 4 and r"-\sqrt{\left|2.413 + y" in tex
    assert (tmp_path / "loss_shapes.png").read_bytes()[:4] == b"\x89PNG"


def test_standalone_file_matches_every_found_loss_without_nlfs(tmp_path):
    rows = _rows()
    write_report(tmp_path, rows)
    cases = standalone_cases(c=5)
    results = run_standalone(tmp_path / "best_losses_standalone.py", tmp_path, cases)
    assert list(results) == ["found_1", "found_2", "found_3", "found_4"]
    for i, r in enumerate(rows[1:5], 1):
        spec = nlfs.losses.LossSpec(f"found_{i}", nlfs.parse(r["expression"]), "class_sum",
                                    nlfs.losses.MappingProxyType(r["constants"]), scale=r.get("scale", 1.0))
        assert_matches_loss(f"found_{i}", spec, results[f"found_{i}"], cases)
