"""bench/_schema.py's trainings CSVs: one appender for every study (bench/fidelity.py, target_fidelity.py,
target_proxies.py, target_curve.py), which survives a line a kill cut short, and the reader beside it."""

import csv
import io
import multiprocessing
import types

import pytest

from bench import fidelity
from bench import target_curve as tc
from bench._schema import append_row, dataset_stem, read_rows

COLUMNS = ["loss_id", "level", "seed", "acc", "reason"]


def _plain(rows, columns=COLUMNS) -> bytes:
    """What the studies' own appenders wrote: csv.DictWriter, header first, values as they are."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


ROWS = [dict(loss_id=0, level="s16", seed=0, acc=0.8125, reason=""),
        dict(loss_id=1, level="final", seed=2, acc=0.0, reason="diverged: nan, at step 3\nstop"),
        dict(loss_id=12, level="target8", seed=1, acc=0.91234567890123, reason=None)]


def test_rows_are_appended_as_the_plain_csv_writer_wrote_them(tmp_path):
    path = tmp_path / "new" / "t.csv"
    assert read_rows(path) == []
    for r in ROWS:
        append_row(path, {**r, "history": [[1, 0.5]]}, COLUMNS)  # a key outside the columns is left out
    assert path.read_bytes() == _plain(ROWS)
    assert [r["acc"] for r in read_rows(path)] == ["0.8125", "0.0", "0.91234567890123"]
    assert read_rows(path)[1]["reason"] == "diverged: nan, at step 3\nstop"
    assert dataset_stem("fashion-mnist") == "fashion_mnist" and dataset_stem("digits") == "digits"


@pytest.mark.parametrize("cut", [3, 9, 14, 1])  # in a row, after a row's first cell, just before its line end
def test_a_line_a_kill_cut_short_is_no_training_and_is_dropped(tmp_path, cut):
    path = tmp_path / "t.csv"
    whole = _plain(ROWS[:2])
    path.write_bytes(whole + _plain(ROWS[2:3]).split(b"\r\n", 1)[1][:-cut])
    assert [r["loss_id"] for r in read_rows(path)] == ["0", "1"]
    append_row(path, ROWS[2], COLUMNS)
    assert path.read_bytes() == _plain(ROWS)


def test_a_cut_header_starts_the_file_again_and_a_short_line_is_skipped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"loss_id,lev")
    append_row(path, ROWS[0], COLUMNS)
    assert path.read_bytes() == _plain(ROWS[:1])
    with path.open("ab") as fh:
        fh.write(b"3,s16\r\n")  # a whole line with too few cells, or too many, is no training either
        fh.write(b"4,s16,0,0.5,,extra\r\n")
    assert [r["loss_id"] for r in read_rows(path)] == ["0"]


def test_an_older_file_gains_the_new_columns_and_another_studys_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(_plain([{k: r[k] for k in COLUMNS[:4]} for r in ROWS[:1]], COLUMNS[:4]))
    append_row(path, ROWS[1], COLUMNS)
    assert path.read_bytes() == _plain([{**ROWS[0], "reason": ""}, ROWS[1]])
    other = tmp_path / "other.csv"
    other.write_bytes(_plain([{"x": 1}], ["x"]))
    with pytest.raises(SystemExit, match="not the study's"):
        append_row(other, ROWS[0], COLUMNS)
    assert other.read_bytes() == _plain([{"x": 1}], ["x"])


def _shard(path, first):
    for i in range(first, first + 40):
        append_row(path, {**ROWS[1], "loss_id": i, "reason": "x" * 3000}, COLUMNS)


def test_shards_appending_to_one_file_take_turns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(_plain(ROWS[:1])[:-5])  # a kill's leftover, which only one shard may drop
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_shard, args=(path, first)) for first in (100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = read_rows(path)
    assert sorted(int(r["loss_id"]) for r in rows) == [*range(100, 140), *range(200, 240)]
    assert all(r["reason"] == "x" * 3000 for r in rows)


def test_the_fidelity_study_appends_each_training_as_it_finishes(tmp_path, monkeypatch):
    import nlfs.search

    jobs = [({"id": i}, "ce", "s16", 0, "digits") for i in range(3)]
    results = [{"status": "ok", "wall_time": 1.5 + i,
                "result": {"diverged": i == 1, "best_val_acc": 0.5 + i / 10, "grad_scale_factor": 2.0 ** i,
                           "reason": "nan loss" if i == 1 else ""}} for i in range(3)]

    def run_jobs(executor, pending):
        for (job, _payload), out in zip(pending, results, strict=True):
            yield job, out

    monkeypatch.setattr(nlfs.search, "make_executor", lambda *a, **k: types.SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(nlfs.search, "run_jobs", run_jobs)
    monkeypatch.setattr(fidelity, "_payload", lambda job: {})
    path = tmp_path / "fidelity_digits_trainings.csv"
    fidelity.run_trainings(jobs, path, 1)
    expected = [fidelity._row(j, out) for j, out in zip(jobs, results, strict=True)]
    assert path.read_bytes() == _plain(expected, fidelity.TRAIN_COLUMNS)
    assert [r["acc"] for r in read_rows(path)] == ["0.5", "0.0", "0.7"]


def test_the_curve_study_appends_each_training_and_resumes(tmp_path, monkeypatch):
    import nlfs.train

    calls = []

    def train(loss, cfg):
        calls.append((cfg.epochs, cfg.seed))
        return types.SimpleNamespace(dataset=cfg.dataset, model=cfg.model, train_size=1000, val_acc=0.9,
                                     best_val_acc=0.91, steps=10 * cfg.epochs)

    monkeypatch.setattr(nlfs.train, "train", train)
    monkeypatch.setattr(tc, "RESULTS", tmp_path)
    argv = ["--dataset", "digits", "--epochs", "2,4", "--seeds", "0"]
    assert tc.main(argv) == 0
    path = tmp_path / "target_curve_digits_surrogate.csv"
    rows = read_rows(path)
    assert [(r["epochs"], r["val_acc"], r["steps"]) for r in rows] == [("2", "0.90000", "20"), ("4", "0.90000", "40")]
    assert path.read_bytes() == _plain(rows, tc.COLUMNS)
    with path.open("ab") as fh:
        fh.write(b"digits,surrogate,CE,6,0,10")  # killed while writing E=6
    assert tc.main([*argv[:2], "--epochs", "2,4,6", "--seeds", "0"]) == 0
    assert calls == [(2, 0), (4, 0), (6, 0)] and [r["epochs"] for r in read_rows(path)] == ["2", "4", "6"]
