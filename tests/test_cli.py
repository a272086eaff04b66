"""The command-line toolkit (nlfs._cli) and the tools that use it: defaults in --help, bad arguments
refused up front in one line, interrupts that say how to resume, the time limit, --threads."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from nlfs import _cli, eliminate, evolve, heldout, transfer, tune
from nlfs.train import __main__ as train_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--dataset", "digits", "--steps", "40", "--train-size", "400", "--val-size", "200", "--backend", "torch",
        "--population", "2", "--sample", "2", "--initial", "2", "--no-progress", "--workers", "1",
        "--threads", "1"]


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------------------ help
def test_help_shows_the_defaults():
    text = " ".join(evolve.build_parser().format_help().split())
    assert "(default: gp)" in text
    assert "1000 for quick" in text
    assert "1 with the quick preset when --budget is omitted" in text  # the quick preset: 1 minute of screening
    assert "fashion-mnist if installed, else digits" in text
    assert "(default: ce)" in text and "(default: surrogate)" in text and "(default: 3)" in text
    train_help = " ".join(train_cli.parser().format_help().split())
    assert "--dataset DATASET one of digits" in train_help and "(default: digits)" in train_help
    assert "--grad-scale {none,ce}" in train_help and "(default: cosine)" in train_help
    for parser in (tune.build_parser(), eliminate.build_parser(), transfer.build_parser(), heldout.build_parser()):
        text = " ".join(parser.format_help().split())
        assert "--threads" in text or parser.prog.endswith("heldout")
        assert "(default: " in text
    assert "(default: 12)" in " ".join(tune.build_parser().format_help().split())  # --trials


def test_training_options_come_from_one_table():
    from nlfs.backends import NAMES
    from nlfs.train import TrainConfig

    fields = {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    assert set(_cli.TRAINING_OPTIONS) <= fields and set(_cli.BUDGET_OPTIONS) <= set(_cli.TRAINING_OPTIONS)
    for parser in (train_cli.parser(), evolve.build_parser(), transfer.build_parser(), tune.build_parser()):
        backend = next(a for a in parser._actions if a.dest == "backend")
        assert tuple(backend.choices) == ("auto", *NAMES)
    # transfer's options are the table's: every TrainConfig field it had, and --grad-scale
    args = transfer.build_parser().parse_args(["--grad-scale", "ce", "--label-noise", "0.2", "--batch-size", "32"])
    assert _cli.training_overrides(args) == {"grad_scale": "ce", "label_noise": 0.2, "batch_size": 32}


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("argv", [["--budget", "0"], ["--time-limit", "-1"], ["--time-limit", "0"],
                                  ["--workers", "0"], ["--threads", "0"], ["--train-size", "-5"],
                                  ["--epochs", "0"], ["--steps", "-1"], ["--preset", "nope"],
                                  ["--population", "0"], ["--dataset", "mnist-ish"]])
def test_evolve_refuses_bad_arguments_before_any_work(tmp_path, capsys, argv):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        evolve.main(["--run-dir", str(run), "--no-progress", *argv])
    assert exc.value.code == 2
    line = _one_error_line(capsys, "nlfs.evolve")
    assert argv[0] in line
    assert not run.exists()


@pytest.mark.parametrize("tool,argv", [
    (tune, ["--loss", "CE", "--trials", "0"]), (tune, ["--loss", "CE", "--workers", "0"]),
    (tune, ["--loss", "CE", "--threads", "0"]), (tune, ["--loss", "CE", "--epochs", "-1"]),
    (eliminate, ["--run-dir", "X", "--workers", "0"]), (eliminate, ["--run-dir", "X", "--pool", "0"]),
    (eliminate, ["--run-dir", "X", "--threads", "0"]),
    (transfer, ["--out", "OUT", "--preset", "nope"]), (transfer, ["--out", "OUT", "--seeds", "0"]),
    (transfer, ["--out", "OUT", "--epochs", "0"]), (transfer, ["--out", "OUT", "--threads", "0"]),
    (transfer, ["--out", "OUT", "--label-noise", "1.5"]),
    (train_cli, ["--epochs", "0"]), (train_cli, ["--threads", "0"]), (train_cli, ["--grad-scale", "big"]),
])
def test_every_tool_refuses_bad_numbers_in_one_line(tmp_path, capsys, monkeypatch, tool, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    _one_error_line(capsys, tool.__name__.replace(".__main__", ""))
    assert list(tmp_path.iterdir()) == []  # no run directory, study or output


def test_an_expression_value_that_starts_with_a_minus_is_told_the_equals_form(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evolve.main(["--run-dir", str(tmp_path / "run"), "--seed-losses", "-y*log(p)"])
    line = _one_error_line(capsys, "nlfs.evolve")
    assert "--seed-losses" in line and "--option=VALUE" in line and not (tmp_path / "run").exists()


def test_rungs_take_stop_epoch_and_refuse_a_bad_one_in_one_line(tmp_path, capsys):
    args = evolve.build_parser().parse_args(["--dataset", "digits", "--run-dir", str(tmp_path / "ok"),
                                             "--rungs", "epochs=8,stop_epoch=1,seeds=1;epochs=8,seeds=3"])
    assert evolve.config_from_args(args).rungs == [{"epochs": 8, "stop_epoch": 1, "seeds": 1},
                                                   {"epochs": 8, "seeds": 3}]
    for rungs, message in [("epochs=8,stop_epoch=8", "rung 0: stop_epoch=8 with epochs=8 changes nothing"),
                           ("epochs=2;epochs=8,stop_epoch=0", "rung 1: stop_epoch must be a positive integer"),
                           ("stop_epoch=20", "stop_epoch=20 with epochs=8 changes nothing")]:  # digits' 8 epochs
        run = tmp_path / "run"
        assert evolve.main(["--dataset", "digits", "--run-dir", str(run), "--no-progress", "--rungs", rungs]) == 2
        assert message in _one_error_line(capsys, "nlfs.evolve")
        assert not run.exists()


def test_resume_refuses_options_that_define_the_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        evolve.main(["--resume", str(tmp_path / "run"), "--dataset", "digits", "--budget", "5"])
    assert exc.value.code == 2
    line = _one_error_line(capsys, "nlfs.evolve")
    assert "saved configuration decides" in line and "drop --dataset" in line and "--budget" not in line
    with pytest.raises(SystemExit):
        evolve.main(["--resume", str(tmp_path / "run"), "--algorithm", "regularized", "--model", "surrogate"])
    line = _one_error_line(capsys, "nlfs.evolve")
    assert "--algorithm" in line and "--model" in line
    with pytest.raises(SystemExit):
        evolve.main(["--report-only", str(tmp_path / "run"), "--dataset", "digits"])
    assert "drop --dataset" in _one_error_line(capsys, "nlfs.evolve")
    # how the run goes on may change: these reach the run (here: a missing one)
    assert evolve.main(["--resume", str(tmp_path / "run"), "--budget", "5", "--time-limit", "1",
                        "--workers", "1", "--threads", "1", "--no-progress"]) == 2
    assert "no run to resume" in _one_error_line(capsys, "nlfs.evolve")


def test_eliminate_names_its_seed_counts_unambiguously(tmp_path, capsys):
    args = eliminate.build_parser().parse_args(["--run-dir", "X", "--keep", "2,1", "--seeds-per-round", "1,3",
                                                "--budget-scale", "1,2", "--models", "surrogate,surrogate"])
    assert [r.seeds for r in eliminate.protocol_from_args(args).rounds] == [1, 3]
    with pytest.raises(SystemExit) as exc:
        eliminate.main(["--run-dir", "X", "--seeds", "1,2"])
    assert exc.value.code == 2
    assert "--seeds-per-round" in _one_error_line(capsys, "nlfs.eliminate")

@pytest.mark.parametrize("text,lines", [
    ("CE,foo(p)", ["nlfs.evolve: error: --seed-losses: 'foo(p)': unknown function at position 0 (token 'foo')",
                   "  foo(p)", "  ^"]),
    ("CE;NGLL", ["nlfs.evolve: error: --seed-losses: 'NGLL': unknown loss 'NGLL'; did you mean NGL?"])])
def test_a_bad_seed_loss_names_the_option(tmp_path, capsys, text, lines):
    run = tmp_path / "run"
    assert evolve.main(["--dataset", "digits", "--run-dir", str(run), "--no-progress", "--seed-losses", text]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] == lines[:-1] and err[-1].startswith(lines[-1]) and len(err) == len(lines)
    assert not run.exists()


def test_a_resumed_run_says_so_in_its_header(tmp_path, capsys, monkeypatch):
    def interrupt(search):
        search.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(evolve, "run_and_report", interrupt)  # the header only: nothing trains
    run = tmp_path / "run"
    assert evolve.main([*TINY, "--budget", "2", "--run-dir", str(run)]) == 130
    header = capsys.readouterr().err.splitlines()[0]
    assert header.startswith("nlfs.evolve: gp over the gp space") and header.endswith(f"run dir {run}")
    assert evolve.main(["--resume", str(run), "--no-progress", "--workers", "1", "--threads", "1"]) == 130
    assert capsys.readouterr().err.splitlines()[0] == f"{header} (resumed)"


# ------------------------------------------------------------------------------ splitter and seeds
def test_one_loss_list_splitter():
    assert _cli.split_losses("max(p, y),CE;NGL") == ["max(p, y)", "CE", "NGL"]
    assert _cli.split_losses("-y*log(p); max(p, y)") == ["-y*log(p)", "max(p, y)"]
    assert evolve.seed_losses("max(p, y),CE;NGL") == ("max(p, y)", "CE", "NGL")
    assert [e.label for e in transfer.parse_losses("max(p, y),CE;NGL")] == ["max(p, y)", "CE", "NGL"]


def test_one_seeds_parser():
    assert _cli.parse_seeds("3") == [0, 1, 2]
    assert _cli.parse_seeds("0,1,5-7") == [0, 1, 5, 6, 7]
    assert _cli.parse_seeds("4,") == [4] and _cli.parse_seeds(5) == list(range(5))
    for bad in ("0", "7-5", "a", "-3", ","):
        with pytest.raises(ValueError):
            _cli.parse_seeds(bad)
    args = transfer.build_parser().parse_args(["--seeds", "1,3-4", "--lr-seeds", "2"])
    assert args.seeds == [1, 3, 4] and args.lr_seeds == [0, 1]


def test_one_key_value_parser_names_the_option_and_the_bad_item(tmp_path, capsys, monkeypatch):
    pairs = _cli.key_values(float)
    assert pairs("a=1, b = 2.5,") == [("a", 1.0), ("b", 2.5)] and pairs("") == []
    args = tune.build_parser().parse_args(["--constants", "a=1,b=2", "--constants", "a=3", "--range", "a=0:1.5"])
    assert dict(args.constants) == {"a": 3.0, "b": 2.0} and dict(args.ranges) == {"a": (0.0, 1.5)}
    assert train_cli.parser().parse_args(["--constant", "alpha=0.5", "--constant", "beta=2"]).constant == [
        ("alpha", 0.5), ("beta", 2.0)]
    monkeypatch.chdir(tmp_path)
    for tool, argv, message in [
            (tune, ["--loss", "Focal", "--range", "a=1"], "argument --range: expected NAME=LOW:HIGH, got 'a=1'"),
            (tune, ["--loss", "Focal", "--range", "a=0:x"], "argument --range: expected NAME=LOW:HIGH, got 'a=0:x'"),
            (tune, ["--loss", "Focal", "--constants", "a=1,b"], "argument --constants: expected NAME=VALUE, got 'b'"),
            (tune, ["--loss", "Focal", "--constants", "=1"], "argument --constants: expected NAME=VALUE, got '=1'"),
            (train_cli, ["--constant", "alpha"], "argument --constant: expected NAME=VALUE, got 'alpha'"),
            (train_cli, ["--constant", "alpha=big"], "argument --constant: expected NAME=VALUE, got 'alpha=big'")]:
        with pytest.raises(SystemExit) as exc:
            tool.main(argv)
        assert exc.value.code == 2
        assert message in _one_error_line(capsys, tool.__name__.replace(".__main__", ""))
    assert list(tmp_path.iterdir()) == []  # refused before any study or run directory


def test_every_name_the_tools_import_from_the_cli_toolkit_is_exported():
    import ast
    import pathlib

    root = pathlib.Path(_cli.__file__).parent
    imported = {a.name for p in root.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module == "_cli" and node.level for a in node.names}
    assert imported and imported <= set(_cli.__all__)
    assert all(hasattr(_cli, name) for name in _cli.__all__)


# --------------------------------------------------------------------------------------- run_main
def test_run_main_ends_errors_and_interrupts_in_one_line(capsys):
    def fails(argv):
        raise FileExistsError("runs/x already holds a run")

    assert _cli.run_main("nlfs.tool", fails, []) == 2
    assert _one_error_line(capsys, "nlfs.tool") == "nlfs.tool: error: runs/x already holds a run"

    def interrupted(argv):
        with _cli.resume_with("python -m nlfs.tool --resume D"):
            raise KeyboardInterrupt

    assert _cli.run_main("nlfs.tool", interrupted, []) == 130
    assert capsys.readouterr().err == "nlfs.tool: interrupted; resume with: python -m nlfs.tool --resume D\n"

    def terminated(argv):  # SIGTERM ends like Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt")

    before = signal.getsignal(signal.SIGTERM)
    assert _cli.run_main("nlfs.tool", terminated, []) == 130
    assert capsys.readouterr().err == "nlfs.tool: interrupted\n"
    assert signal.getsignal(signal.SIGTERM) == before


def test_transfer_interrupt_names_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("nlfs.transfer._main.run_transfer", stop)
    out = tmp_path / "t"
    assert transfer.main(["--losses", "CE;max(p, y)", "--seeds", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err == f"nlfs.transfer: interrupted; resume with: python -m nlfs.transfer --losses 'CE;max(p, y)' " \
                  f"--seeds 2 --out {out}\n"


def _rows(db):
    try:
        con = sqlite3.connect(db)
        try:
            return con.execute("SELECT status FROM evaluations").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _ctrl_c_default():
    """Ctrl-C as a terminal delivers it: a background job of a shell without job control (a CI runner's,
    ``cmd &``) starts with SIGINT ignored, and Python keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,workers,group", [(signal.SIGINT, 1, False), (signal.SIGTERM, 1, False),
                                               (signal.SIGINT, 2, True)])  # the last: Ctrl-C in a terminal
def test_interrupting_a_search_prints_how_to_resume_and_no_traceback(tmp_path, sig, workers, group):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    argv = [*TINY, "--budget", "200", "--run-dir", str(run), "--workers", str(workers)]
    proc = subprocess.Popen([sys.executable, "-m", "nlfs.evolve", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=group, preexec_fn=_ctrl_c_default)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "run.db").exists() and any(r[0] != "baseline" for r in _rows(run / "run.db")):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    if group:
        time.sleep(1)  # the workers are training
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last == f"nlfs.evolve: interrupted; resume with: python -m nlfs.evolve --resume {run}"


# ------------------------------------------------------------------------------------- time limit
def test_a_time_limit_says_so_and_holds_on_resume(tmp_path, capsys):
    from nlfs.search import Search, SearchConfig

    run = tmp_path / "run"
    assert evolve.main([*TINY, "--budget", "50", "--time-limit", "0.001", "--run-dir", str(run)]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "time limit" in x)
    assert line.startswith("nlfs.evolve: time limit of 0.001 min reached after ")
    assert line.endswith(f"candidates; resume with: python -m nlfs.evolve --resume {run}")
    trained = int(line.split("after ")[1].split(" ")[0])
    assert 1 <= trained < 50

    # a resume without --time-limit keeps the run's; with one, it takes the new one
    assert evolve.main(["--resume", str(run), "--no-progress", "--workers", "1", "--threads", "1"]) == 0
    assert "time limit of 0.001 min reached" in capsys.readouterr().err
    s = Search(SearchConfig(run_dir=str(run), budget=0), resume=True)
    assert s.cfg.time_limit == pytest.approx(0.06)
    s.close()
    s = Search(SearchConfig(run_dir=str(run), budget=0, time_limit=120.0), resume=True)
    assert s.cfg.time_limit == 120.0
    s.close()


def test_a_redirected_progress_bar_writes_plain_lines(capsys):
    from nlfs.search._runner import _progress

    bar = _progress(True, 1000, 0)  # stderr is captured: not a terminal
    for i in range(200):
        bar.n = i
        bar.set_postfix_str("best 0.01 | rejected: validity 3 " + "x" * 40, refresh=True)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and len(err.splitlines()) == 1 and len(err) < 300
    assert err.startswith("search: 199/1000")


# ------------------------------------------------------------------------------------- threads
def test_threads_reach_the_library(tmp_path, monkeypatch):
    from nlfs.search import make_executor

    cfg = evolve.config_from_args(evolve.build_parser().parse_args(["--dataset", "digits", "--run-dir",
                                                                      str(tmp_path), "--threads", "2"]))
    assert cfg.threads == 2
    assert make_executor("local", 1, threads=2).threads == 2
    seen = {}

    def fake_tune(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(tune, "tune", fake_tune)
    assert tune.main(["--loss", "CE", "--threads", "1", "--run-dir", str(tmp_path / "t")]) == 130
    assert seen["threads"] == 1


# ---------------------------------------------------------------------------------------- train
def test_train_accepts_grad_scale(capsys):
    assert train_cli.main(["--loss", "0.25 * -y * log(p)", "--grad-scale", "ce", "--steps", "4", "--backend", "torch",
                           "--threads", "1", "--no-test", "--no-progress", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["grad_scale_factor"] == pytest.approx(4.0, rel=1e-4)


# --------------------------------------------------------------------------------------- heldout
def test_heldout_refuses_a_finalist_the_csvs_do_not_have(tmp_path, capsys):
    path = tmp_path / "s.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["loss", "seed", "status", "test_acc"])
        w.writeheader()
        for loss in ("CE", "found_a"):
            for seed in range(3):
                w.writerow({"loss": loss, "seed": seed, "status": "ok", "test_acc": 0.8 + seed / 100})
    with pytest.raises(SystemExit) as exc:
        heldout.main(["--setting", f"s={path}", "--finalists", "found_b", "--out", str(tmp_path / "t")])
    assert exc.value.code == 2
    line = _one_error_line(capsys, "nlfs.heldout")
    assert "found_b" in line and "CE, found_a" in line
    assert not (tmp_path / "t.csv").exists()
