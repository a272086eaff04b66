"""The run database: every evaluation is a row of ``evaluations`` in ``DIR/run.db`` (SQLite), and the
search state (population, random state, pending candidates) is checkpointed in the same transaction,
so a run killed at any moment (SIGKILL included) resumes from its last recorded evaluation."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    canonical TEXT NOT NULL,         -- canonical form of the candidate as generated (before orientation)
    expression TEXT NOT NULL,        -- the oriented loss expression that was (or would be) trained
    genotype TEXT,                   -- JSON of the search-space genotype
    constants TEXT NOT NULL,         -- JSON {name: value}
    sign REAL NOT NULL DEFAULT 1,
    fitness REAL,                    -- best validation accuracy; NULL when not trained
    status TEXT NOT NULL,            -- ok | rejected:<stage> | diverged | error | baseline
    stage TEXT,                      -- the filter stage that removed it, if any
    reason TEXT,
    seed INTEGER, dataset TEXT, backend TEXT, model TEXT,
    wall_time REAL,                  -- seconds spent on this candidate
    size INTEGER,
    fingerprint TEXT,
    phenotype BLOB,
    result TEXT,                     -- JSON: {"seeds": [per-seed accuracy, paired difference...], "train": ...}
    created REAL NOT NULL,
    rung INTEGER,                    -- the screening rung this row trained at (NULL: before rungs, 0)
    candidate INTEGER,               -- id of the candidate's rung-0 row (NULL on that row itself)
    fidelity TEXT,                   -- key of the rung's training budget: rows with equal keys share seeds
    accuracy REAL,                   -- mean best validation accuracy over the rung's seeds
    scale REAL,                      -- gradient-scale factor the loss was trained with
    cpu_time REAL                    -- CPU seconds of its trainings (the workers' own; NULL before recorded)
);
CREATE INDEX IF NOT EXISTS evaluations_canonical ON evaluations (canonical);
CREATE INDEX IF NOT EXISTS evaluations_fingerprint ON evaluations (fingerprint);
CREATE INDEX IF NOT EXISTS evaluations_candidate ON evaluations (candidate);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), blob BLOB NOT NULL,
                                  updated REAL NOT NULL);
-- The known losses trained in the target beside CE (SearchConfig.target_baselines: the regime's strongest,
-- such as label smoothing, or GCE under label noise), one row per (loss, target, seed): what a leader's
-- lead is measured against besides CE. Not candidates, so never rows of evaluations.
CREATE TABLE IF NOT EXISTS target_baselines (
    name TEXT NOT NULL,              -- as given: a catalogue name or an expression
    expression TEXT NOT NULL,        -- the expression trained (named constants' values in constants)
    constants TEXT NOT NULL,         -- JSON {name: value}
    class_reduction TEXT NOT NULL,
    fidelity TEXT NOT NULL,          -- the target's key, as its CE rows'
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,            -- ok | diverged | error
    accuracy REAL,                   -- the training's score, as CE's fitness there; NULL unless ok
    reason TEXT,
    wall_time REAL, cpu_time REAL,
    created REAL NOT NULL,
    PRIMARY KEY (name, fidelity, seed)
);
-- A finished training whose row waits for others (a seed of a job split across workers, or a leader
-- whose CE baseline is still training): kept so that a killed run does not train it again.
CREATE TABLE IF NOT EXISTS held (
    payload TEXT PRIMARY KEY,        -- the training job, JSON with sorted keys (same job, same result)
    result TEXT NOT NULL,            -- JSON: the worker's result
    created REAL NOT NULL
);
"""

# The elimination protocol's trainings (nlfs.eliminate), one row per (candidate, round, seed) training: created
# by a run's first elimination (``RunDB.open_elimination``), so a search's own run.db has no such table.
ELIMINATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS elimination (
    key TEXT PRIMARY KEY,        -- nlfs.train.training_key of (expression, constants, class reduction, scale
                                 -- when not 1, score when not best, training config): equal keys, equal trainings
    candidate TEXT NOT NULL,     -- 'CE' or the candidate's name, '<run>#<id>' ('<run>#<id>-tuned' for a tuning's)
    eval_id INTEGER,             -- the candidate's evaluation id in its search run (NULL for CE)
    expression TEXT NOT NULL,
    constants TEXT NOT NULL,     -- JSON {name: value}
    round INTEGER NOT NULL,      -- the round (1, 2, ...) that trained it (a later round repeating it reuses the row)
    seed INTEGER NOT NULL,
    model TEXT, steps INTEGER, epochs INTEGER,
    fitness REAL,                -- validation accuracy, scored as the search scored its own (best or final);
                                 -- NULL unless status is ok
    status TEXT NOT NULL,        -- ok | diverged | error
    reason TEXT,
    wall_time REAL,
    created REAL NOT NULL,
    scale REAL                   -- factor on the loss: its fixed scale times the one the trainer measured (1
                                 -- without rescaling); NULL when the training reported none, or before recorded
);
"""
TARGET_BASELINE_COLUMNS = ("name", "expression", "constants", "class_reduction", "fidelity", "seed", "status",
                           "accuracy", "reason", "wall_time", "cpu_time")
ELIMINATION_COLUMNS = ("key", "candidate", "eval_id", "expression", "constants", "round", "seed", "model", "steps",
                       "epochs", "fitness", "status", "reason", "wall_time", "scale")
# Columns added to the elimination table after its first release: an older one gains them on open_elimination.
ELIMINATION_ADDED = {"scale": "REAL"}

HELD_STATUSES = ("ok", "diverged")  # what a training found about its loss (an error is the machine's)
COLUMNS = ("canonical", "expression", "genotype", "constants", "sign", "fitness", "status", "stage",
           "reason", "seed", "dataset", "backend", "model", "wall_time", "size", "fingerprint",
           "phenotype", "result", "rung", "candidate", "fidelity", "accuracy", "scale", "cpu_time")
# Columns added after the first release, with their types: an older run.db gains them on open.
ADDED = {"rung": "INTEGER", "candidate": "INTEGER", "fidelity": "TEXT", "accuracy": "REAL", "scale": "REAL",
         "cpu_time": "REAL"}


class RunDirError(ValueError):
    """A run directory that cannot be used as it is; the message names the file and what to do."""


class _StateUnpickler(pickle.Unpickler):
    """Loads a search state from a run directory without running arbitrary code: only nlfs's own
    classes and the few standard ones a state holds (a deque, a random generator, containers)."""

    SAFE = {("collections", "deque"), ("random", "Random"), ("copyreg", "_reconstructor"),
            *(("builtins", n) for n in ("set", "frozenset", "tuple", "list", "dict", "object", "int", "float",
                                        "str", "bool", "bytes", "slice", "range", "complex"))}

    def find_class(self, module, name):
        if (module, name) in self.SAFE or module == "nlfs" or module.startswith("nlfs."):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which nlfs does not load from a run directory")


class RunDB:
    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        try:
            self._connect()
        except sqlite3.DatabaseError as err:
            if getattr(self, "conn", None) is not None:
                self.conn.close()
            raise RunDirError(f"{self.path} is damaged or is not an nlfs run database ({err}); move it "
                              "away and start a new --run-dir, or restore it from a copy") from None

    def _connect(self) -> None:
        if self.readonly:  # reports and reads never write to a run, not even the schema
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60, isolation_level=None)
            self.conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self._add_columns("evaluations", ADDED)
        self.conn.executescript(SCHEMA)

    def _add_columns(self, table: str, added: dict) -> None:
        """Give an existing ``table`` of an older run.db the ``added`` columns it lacks (none is created)."""
        have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in added.items():
            if have and name not in have:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction: committed when the block ends, rolled back if it raises (an interrupt
        that lands once COMMIT is done finds none to roll back, and goes on as itself)."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                cur.execute("ROLLBACK")
            raise

    def lock(self) -> None:
        """Hold an exclusive lock on the run for this process's lifetime (released on close or death),
        so two searches can never write one run."""
        import fcntl

        self._lock = open(self.path.with_name("run.lock"), "a")  # noqa: SIM115 - held until close
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(f"another process is running the search in {self.path.parent}") from None

    def close(self):
        self.conn.close()
        if getattr(self, "_lock", None) is not None:
            self._lock.close()
            self._lock = None

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- evaluations --------------------------------------------------------------------------------
    def record(self, row: dict, state=None) -> int:
        """Insert one evaluation and (optionally) the new search state in one transaction. ``state``
        may be a function of the new row's id, called inside the transaction."""
        values = [_encode(k, row.get(k)) for k in COLUMNS]
        with self._transaction() as cur:
            cur.execute(f"INSERT INTO evaluations ({', '.join(COLUMNS)}, created) "
                        f"VALUES ({', '.join('?' * len(COLUMNS))}, ?)", (*values, time.time()))
            rowid = cur.lastrowid
            if callable(state):
                state = state(rowid)
            if state is not None:
                cur.execute("INSERT OR REPLACE INTO state (id, blob, updated) VALUES (1, ?, ?)",
                            (pickle.dumps(state), time.time()))
        return rowid

    def save_state(self, state) -> None:
        self.conn.execute("INSERT OR REPLACE INTO state (id, blob, updated) VALUES (1, ?, ?)",
                          (pickle.dumps(state), time.time()))

    def load_state(self):
        row = self.conn.execute("SELECT blob FROM state WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            return _StateUnpickler(io.BytesIO(row[0])).load()
        except Exception as err:  # noqa: BLE001 - any failure here means the state cannot be used
            raise RunDirError(f"the search state in {self.path} cannot be loaded ({type(err).__name__}: "
                              f"{err}); it may come from another nlfs version or be damaged: start a new "
                              "--run-dir (the evaluations in it can still be read by reports)") from None

    # -- held results ----------------------------------------------------------------------------------
    def hold(self, payload: dict, result: dict) -> None:
        """Keep a finished training's ``result`` until the row it belongs to is recorded (``release``).
        Only a training's outcome is kept (ok or diverged): an error is tried again on resume."""
        if result.get("status") in HELD_STATUSES:
            self.conn.execute("INSERT OR REPLACE INTO held (payload, result, created) VALUES (?, ?, ?)",
                              (_payload_key(payload), json.dumps(result), time.time()))

    def held(self, payload: dict) -> dict | None:
        """The result kept for ``payload`` (an equal job), or None."""
        row = self.conn.execute("SELECT result FROM held WHERE payload = ?", (_payload_key(payload),)).fetchone()
        return None if row is None else json.loads(row[0])

    def release(self, payloads: list[dict]) -> None:
        """Forget the results kept for ``payloads`` (their row is recorded)."""
        self.conn.executemany("DELETE FROM held WHERE payload = ?", [(_payload_key(p),) for p in payloads])

    # -- the regime's strong baselines in the target ---------------------------------------------------
    def record_target_baseline(self, row: dict) -> None:
        """Record one training of a target baseline (``TARGET_BASELINE_COLUMNS``) in one transaction."""
        values = [_encode(k, row.get(k)) for k in TARGET_BASELINE_COLUMNS]
        with self._transaction() as cur:
            cur.execute(f"INSERT OR REPLACE INTO target_baselines ({', '.join(TARGET_BASELINE_COLUMNS)}, created) "
                        f"VALUES ({', '.join('?' * len(TARGET_BASELINE_COLUMNS))}, ?)", (*values, time.time()))

    def target_baseline_rows(self) -> list[dict]:
        """Every target baseline training recorded (none in a run from before them)."""
        try:
            cur = self.conn.execute("SELECT * FROM target_baselines ORDER BY name, seed")
        except sqlite3.OperationalError:  # a run from before the table, read without writing to it
            return []
        names = [d[0] for d in cur.description]
        return [_decode(dict(zip(names, r))) for r in cur.fetchall()]

    # -- elimination ------------------------------------------------------------------------------------
    def open_elimination(self) -> None:
        """Create the elimination table if the run has none, and give an older one the columns added
        since (``ELIMINATION_ADDED``)."""
        self._add_columns("elimination", ELIMINATION_ADDED)
        self.conn.executescript(ELIMINATION_SCHEMA)

    def record_elimination(self, row: dict) -> None:
        """Record one elimination training (``ELIMINATION_COLUMNS``; ``constants`` a dict) in one
        transaction, replacing the row of an equal ``key``."""
        values = [_encode(k, row.get(k)) for k in ELIMINATION_COLUMNS]
        with self._transaction() as cur:
            cur.execute(f"INSERT OR REPLACE INTO elimination ({', '.join(ELIMINATION_COLUMNS)}, created) "
                        f"VALUES ({', '.join('?' * len(ELIMINATION_COLUMNS))}, ?)", (*values, time.time()))

    def elimination_row(self, key: str) -> dict | None:
        """The elimination training recorded under ``key`` (``constants`` decoded), or None."""
        cur = self.conn.execute("SELECT * FROM elimination WHERE key = ?", (key,))
        row = cur.fetchone()
        return None if row is None else _decode(dict(zip([d[0] for d in cur.description], row)))

    def rows(self, where: str = "", params=()) -> list[dict]:
        cur = self.conn.execute(f"SELECT * FROM evaluations {where} ORDER BY id", params)
        names = [d[0] for d in cur.description]
        return [_decode(dict(zip(names, r))) for r in cur.fetchall()]

    def count(self, where: str = "", params=()) -> int:
        return self.conn.execute(f"SELECT COUNT(*) FROM evaluations {where}", params).fetchone()[0]


def _payload_key(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, default=str)


def _encode(key, value):
    if value is None:
        return None
    if key in ("genotype", "constants", "result"):
        return json.dumps(value)
    if key == "phenotype":
        import numpy as np

        return np.asarray(value, dtype=np.float32).tobytes()
    return value


def _decode(row: dict) -> dict:
    for key in ("genotype", "constants", "result"):
        if row.get(key) is not None:
            row[key] = json.loads(row[key])
    if row.get("phenotype") is not None:
        import numpy as np

        row["phenotype"] = np.frombuffer(row["phenotype"], dtype=np.float32)
    return row


def with_its_losses(saved: dict, path: Path, resuming: bool = False) -> dict:
    """``saved``, the configuration of the run in ``path``, once the losses registered in the process
    that made it (warm starts, target baselines) are registered here where missing: its names then mean
    what they meant. A reader changes no name's meaning; a resumed search refuses a name that means
    another loss here (it would train a loss its run never did). Either way a saved entry that cannot
    be read is a RunDirError naming the file."""
    from ..losses import register_entries

    entries = saved.get("registered_losses") or []
    for e in entries if isinstance(entries, list) else [entries]:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("expression"), str)):
            raise RunDirError(f"{path}: a saved loss is not a name and an expression: {e!r}")
    try:
        register_entries(entries, refuse_other=resuming)
    except ValueError as err:  # an expression that does not parse, or a name that means another loss here
        raise RunDirError(f"{path}: {err}") from None
    return saved


def read_config(run_dir: str | Path) -> dict:
    """The saved search configuration of the run in ``run_dir`` ({} where there is no run, or none saved)."""
    path = Path(run_dir) / "run.db"
    if not path.is_file():
        return {}
    db = RunDB(path, readonly=True)
    try:
        return with_its_losses(db.get_meta("config") or {}, path)
    finally:
        db.close()


def read_target_baselines(run_dir: str | Path) -> list[dict]:
    """The target baseline trainings of the run in ``run_dir`` ([] where there is no run or none)."""
    path = Path(run_dir) / "run.db"
    if not path.is_file():
        return []
    db = RunDB(path, readonly=True)
    try:
        return db.target_baseline_rows()
    finally:
        db.close()


def read_run(run_dir: str | Path) -> tuple[list[dict], dict]:
    """The evaluation rows and saved configuration of the search run in ``run_dir`` (read-only use)."""
    path = Path(run_dir) / "run.db"
    if not path.is_file():
        raise FileNotFoundError(f"no search run in {run_dir} (missing {path})")
    db = RunDB(path, readonly=True)
    try:
        try:
            return db.rows(), with_its_losses(db.get_meta("config") or {}, path)
        except sqlite3.DatabaseError as err:
            raise RunDirError(f"{path} cannot be read ({err}); it is damaged or from another tool") from None
    finally:
        db.close()
