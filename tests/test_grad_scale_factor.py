"""``TrainConfig.grad_scale`` is a mode ("none" | "ce"); what a training measured under it is a factor,
``TrainResult.grad_scale_factor``, stored per seed under that name; results stored before the rename
(per seed ``grad_scale``) still read."""

import types

import nlfs.train
from nlfs.search import evaluate_payload, grad_scale_factor_of
from nlfs.train import TrainConfig, TrainResult


def test_the_factor_is_read_under_either_name():
    assert grad_scale_factor_of([{"grad_scale_factor": 2.5}, {"grad_scale_factor": 9.0}]) == 2.5
    assert grad_scale_factor_of([{"acc": 0.5, "grad_scale": 0.25}]) == 0.25  # stored by an older nlfs
    assert grad_scale_factor_of([]) is None


def test_a_training_result_and_its_per_seed_record_name_the_factor(monkeypatch):
    fields = TrainResult.__dataclass_fields__
    assert "grad_scale_factor" in fields and "grad_scale" not in fields

    def train(loss, cfg, constants=None, **kw):
        return types.SimpleNamespace(best_val_acc=0.5, diverged=False, reason="", grad_scale_factor=0.4 + cfg.seed,
                                     order_digest="d", to_dict=lambda: {})

    monkeypatch.setattr(nlfs.train, "train", train)
    out = evaluate_payload({"expression": "-y * log(p)", "constants": {}, "class_reduction": "class_sum",
                            "train": TrainConfig().to_dict(), "seeds": [0, 1], "rejection": False})
    assert out["status"] == "ok", out
    assert [s["grad_scale_factor"] for s in out["per_seed"]] == [0.4, 1.4]
    assert not any("grad_scale" in s for s in out["per_seed"])
    assert grad_scale_factor_of(out["per_seed"]) == 0.4
