"""nlfs._io: atomic writes with an ordinary file mode, CSV tables, the machine and date stamp."""

import csv
import os

from nlfs._io import atomic_write, machine_name, today, write_table


def test_atomic_write_gives_an_ordinary_file_mode_and_leaves_no_temporary(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "sub" / "report.md", "one\n")
        atomic_write(tmp_path / "sub" / "report.md", "two\n")  # replaces
    finally:
        os.umask(old)
    path = tmp_path / "sub" / "report.md"
    assert path.read_text() == "two\n"
    assert os.stat(path).st_mode & 0o777 == 0o644  # not a temporary file's 0600
    assert os.listdir(tmp_path / "sub") == ["report.md"]


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "private.md", "x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "private.md").st_mode & 0o777 == 0o600


def test_write_table_rows_and_cells(tmp_path):
    path = tmp_path / "t.csv"
    write_table(path, [{"a": 0.1, "b": None, "c": {"k": 1}, "extra": 5}, {"a": float("nan"), "b": "x"}],
                ["a", "b", "c"])
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"a": "0.1", "b": "", "c": '{"k": 1}'}, {"a": "", "b": "x", "c": ""}]


def test_machine_and_date():
    assert machine_name() and len(today()) == 10 and today()[4] == "-"
