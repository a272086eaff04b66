"""``class_reduction`` (how a loss combines over classes) is written under that name everywhere, and what
older runs wrote under ``reduction`` (run.db's configuration, job payloads, survivors files, exported
``best_losses.py`` calling ``register(..., reduction=...)``) still reads, as the same loss."""

import json
import warnings

import pytest

import nlfs
from nlfs import losses
from nlfs.search import RunDB, SearchConfig


def _forget(*names):
    for name in names:
        losses._CATALOGUE.pop(losses._key(name), None)


def test_an_old_saved_configuration_reads_and_the_new_key_is_written():
    old = {k: v for k, v in SearchConfig().to_dict().items() if k != "class_reduction"}
    old["reduction"] = "element_mean"
    cfg = SearchConfig.from_dict(old)  # strict: the old key is not an unknown one
    assert cfg.class_reduction == "element_mean"
    saved = cfg.to_dict()
    assert saved["class_reduction"] == "element_mean" and "reduction" not in saved


def test_an_old_export_registers_the_same_loss_with_a_deprecation_warning():
    old_export = ("import nlfs\n\nnlfs.losses.register('old-run#3', '-y * log(p) * c', reduction='element_mean',\n"
                  "                     constants={'c': 2.0}, source='an export of an older run', scale=1.5)\n")
    try:
        with pytest.warns(DeprecationWarning, match="class_reduction"):
            exec(old_export, {})
        spec = losses.get("old-run#3")
        assert spec.class_reduction == "element_mean" and spec.scale == 1.5 and dict(spec.constants) == {"c": 2.0}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the new keyword: no warning, and the same loss again is no clash
            again = losses.register("old-run#3", "-y * log(p) * c", class_reduction="element_mean",
                                    constants={"c": 2.0}, scale=1.5)
        assert again is spec
    finally:
        _forget("old-run#3")


def test_an_export_writes_class_reduction(tmp_path):
    from nlfs.search._report import write_report

    run = tmp_path / "run-2"
    run.mkdir()
    db = RunDB(run / "run.db")
    old = {k: v for k, v in SearchConfig(run_dir=str(run)).to_dict().items() if k != "class_reduction"}
    db.set_meta("config", {**old, "reduction": "element_mean"})  # a run written before the rename
    db.close()
    rows = [{"id": 0, "expression": "-y * log(p)", "constants": {}, "fitness": 0.9, "size": 4, "status": "baseline"},
            {"id": 1, "expression": "-y * log(p + 0.1) + 0.5 * p", "constants": {}, "fitness": 0.91, "size": 7,
             "status": "ok", "dataset": "digits"}]
    write_report(run, rows)
    text = (run / "best_losses.py").read_text()
    assert "class_reduction='element_mean'" in text and " reduction=" not in text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(text, {})
        assert losses.get("run-2#1").class_reduction == "element_mean"
    finally:
        _forget("run-2#1")


def test_an_old_losses_file_registers_its_class_reduction(tmp_path):
    path = tmp_path / "found.json"
    path.write_text(json.dumps([{"name": "old_found_1", "expression": "-y * log(p)", "constants": {},
                                 "reduction": "element_mean", "scale": 1.0, "provenance": {}}]))
    try:
        assert losses.register_file(path) == ["old_found_1"]
        assert losses.get("old_found_1").class_reduction == "element_mean"
    finally:
        _forget("old_found_1")


@pytest.mark.parametrize("key", ["class_reduction", "reduction"])
def test_a_payload_of_either_version_trains_its_class_reduction(monkeypatch, key):
    from nlfs.search import _worker
    from nlfs.train import TrainConfig

    trained = []
    monkeypatch.setattr(_worker, "_train_seeds", lambda loss, *args: trained.append(loss))
    payload = {"expression": "-y * log(p)", "constants": {}, key: "element_mean",
               "train": TrainConfig().to_dict(), "rejection": False}
    _worker._evaluate(payload, 0.0)
    assert trained[0].class_reduction == "element_mean"


def test_loss_takes_class_reduction_and_its_old_keyword_with_a_warning():
    assert nlfs.Loss("-y * log(p)", class_reduction="element_mean").spec.class_reduction == "element_mean"
    with pytest.warns(DeprecationWarning, match="class_reduction"):
        old = nlfs.Loss("-y * log(p)", reduction_kind="element_mean")
    assert old.spec.class_reduction == "element_mean"
