"""One training key (nlfs.train.training_key) behind every resume store: the elimination table, transfer's
CSV (its run_key and config_hash) and a tuning's default study name. Stores written before it resume
without training again."""

import ast
import csv
import hashlib
import inspect
import json
from pathlib import Path

import nlfs.train
from nlfs import eliminate, transfer, tune
from nlfs.train import TrainConfig, training_key
from nlfs.transfer import _entries as transfer_entries
from nlfs.transfer import _run as transfer_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_four_keys_are_made_by_training_key_and_nothing_else_hashes():
    for fn in (eliminate._key, transfer.run_key, transfer_run.config_hash, tune.default_study_name):
        assert "training_key(" in inspect.getsource(fn), fn.__qualname__
    for path in (ROOT / "nlfs" / "eliminate.py", *sorted((ROOT / "nlfs" / "transfer").glob("*.py")),
                 ROOT / "nlfs" / "tune.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "hashlib" not in imported, f"{path.relative_to(ROOT)} hashes on its own"


# the keys as the code before training_key computed them, copied verbatim
def _old_eliminate_key(expression, constants, reduction, train):
    text = json.dumps([expression, sorted((constants or {}).items()), reduction, train], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _old_config_hash(cfg):
    d = cfg.to_dict()
    key = {k: d.get(k) for k in transfer_run.CONFIG_KEYS}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _old_run_key(entry, cfg):
    from nlfs.losses import resolve_spec

    spec = resolve_spec(entry.loss)
    loss = [spec.text, spec.class_reduction, spec.scale, sorted({**spec.constants, **(entry.constants or {})}.items())]
    text = json.dumps([loss, cfg.backend, cfg.device, cfg.grad_scale, cfg.lr], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _old_study_name(spec, constants, train_cfg):
    key = json.dumps([str(spec.expr), spec.class_reduction, sorted(constants.items()), train_cfg.to_dict()],
                     sort_keys=True, default=str)
    return f"tune-{spec.name[:40]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}".replace(" ", "_")


def test_keys_are_those_the_stores_already_hold():
    cfg = TrainConfig(dataset="digits", steps=7, grad_scale="ce", lr=0.05)
    assert eliminate._key("-y * log(p) * c0", {"c0": 2.0}, "class_sum", cfg.to_dict()) == \
        _old_eliminate_key("-y * log(p) * c0", {"c0": 2.0}, "class_sum", cfg.to_dict())
    assert transfer_run.config_hash(cfg) == _old_config_hash(cfg)
    for entry in (transfer.LossEntry("NGL", "NGL"), transfer.LossEntry("x", "-y * log(p) * c0", {"c0": 0.5})):
        assert transfer.run_key(entry, cfg) == _old_run_key(entry, cfg)
    from nlfs.losses import resolve_spec

    spec = resolve_spec("NGL")
    assert tune.default_study_name(spec, dict(spec.constants), cfg) == \
        _old_study_name(spec, dict(spec.constants), cfg)
    assert training_key([1, {"b": 2, "a": 1}]) == training_key([1, {"a": 1, "b": 2}])
    assert len(training_key("x", length=10)) == 10


def test_a_transfer_csv_keyed_the_old_way_resumes_without_training(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(nlfs.train, "train", lambda *a, **kw: calls.append(a))
    cfg = transfer.build_config(dict(dataset="digits", model="surrogate", steps=5))
    entries = transfer_entries.with_reference(transfer.parse_losses("NGL"))
    rows = []
    for e in entries:
        for seed in (0, 1):
            rows.append(dict(loss=e.label, seed=seed, model="surrogate", dataset="digits", augment="none",
                             test_acc=0.8 + 0.01 * seed, val_acc=0.8, best_val_acc=0.8, status="ok", reason="",
                             wall_time=1.0, expression=e.expression, backend="torch",
                             config_hash=_old_config_hash(cfg), run_key=_old_run_key(e, cfg)))
    path = tmp_path / "transfer.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=transfer.COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    got = transfer.run_transfer(entries, cfg, [0, 1], tmp_path, log=lambda *a: None, plot=False)
    assert calls == [] and len(got) == 4 and {r["status"] for r in got} == {"ok"}


def test_an_elimination_table_keyed_the_old_way_resumes_without_training(tmp_path, monkeypatch):
    from tests.test_eliminate import make_run

    run = make_run(tmp_path)
    protocol = eliminate.Protocol.from_lists(keep=(2,), seeds=(2,), budget_scale=(1,), models=("surrogate",),
                                             pool=3)
    e = eliminate.Elimination(run, protocol, log=lambda m: None)
    try:
        rnd = protocol.rounds[0]
        ce = {"label": "CE", "id": None, "expression": eliminate.CE_EXPRESSION, "constants": {}}
        for cand in [ce, *e.candidates()]:
            for seed in (1, 2):
                cfg = eliminate.round_config(e.base, rnd, seed)
                reduction = "class_sum" if cand["label"] == "CE" else e.class_reduction
                key = _old_eliminate_key(cand["expression"], cand.get("constants") or {}, reduction, cfg.to_dict())
                out = {"status": "ok", "fitness": 0.7 + 0.01 * seed, "reason": "", "wall_time": 1.0,
                       "per_seed": [{"grad_scale": 1.0}]}
                e._record(key, cand, 1, seed, cfg, out)
        e.db.conn.commit()
    finally:
        e.close()
    calls = []
    monkeypatch.setattr(nlfs.train, "train", lambda *a, **kw: calls.append(a))
    e = eliminate.Elimination(run, protocol, log=lambda m: None)
    try:
        res = e.run()
    finally:
        e.close()
    assert calls == [] and e.trained == 0 and len(res["survivors"]) == 2
