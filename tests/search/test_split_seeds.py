"""A job's seeds as jobs of their own (``split_by_seed``), joined again (``merge_by_seed``): the result
the whole job gives, so that the search may train a leader's seeds on every worker at once."""

import pytest

from nlfs.search import evaluate_payload, training_payload
from nlfs.search._worker import merge_by_seed, split_by_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = {"dataset": "digits", "train_size": 300, "val_size": 100, "steps": 40, "backend": "torch", "threads": 1,
         "grad_scale": "ce"}


def test_split_seeds_merged_are_the_whole_jobs_result():
    whole = training_payload("-y * log(p) + 0.3 * p * y", {}, "class_sum", TRAIN, seeds=[0, 1, 2], score="final")
    parts = split_by_seed(whole)
    assert [p["seeds"] for p in parts] == [[0], [1], [2]]
    assert all({k: v for k, v in p.items() if k != "seeds"} == {k: v for k, v in whole.items() if k != "seeds"}
               for p in parts)
    one, merged = evaluate_payload(whole), merge_by_seed([evaluate_payload(p) for p in parts])
    assert one["status"] == merged["status"] == "ok"
    assert merged["per_seed"] == one["per_seed"]  # every seed's accuracy, factor and data order, exactly
    assert merged["fitness"] == one["fitness"] > 0.3  # it learned: the seeds' equality says something
    timeless = lambda r: {k: v for k, v in r["result"].items() if k != "wall_time"}  # noqa: E731
    assert timeless(merged) == timeless(one)
    # a pack, or a single seed, is one job
    assert split_by_seed({"pack": [whole]}) == [{"pack": [whole]}]
    assert split_by_seed({**whole, "seeds": [4]}) == [{**whole, "seeds": [4]}]


def _ok(seed, acc):
    return {"status": "ok", "reason": "", "fitness": acc, "wall_time": 2.0, "cpu_time": 1.5, "result": {"s": seed},
            "per_seed": [{"seed": seed, "acc": acc, "diverged": False, "reason": ""}]}


def test_a_failed_seed_ends_the_merged_result_where_the_whole_job_stops():
    bad = {"status": "diverged", "reason": "loss is nan at step 3", "fitness": None, "wall_time": 1.0,
           "cpu_time": 0.5, "result": {"s": 1}, "per_seed": [{"seed": 1, "acc": 0.1, "diverged": True,
                                                             "reason": "loss is nan at step 3"}]}
    out = merge_by_seed([_ok(0, 0.8), bad, _ok(2, 0.9)])
    assert out["status"] == "diverged" and out["fitness"] is None and out["reason"] == bad["reason"]
    assert [s["seed"] for s in out["per_seed"]] == [0, 1] and out["result"] == {"s": 1}
    assert out["wall_time"] == 5.0 and out["cpu_time"] == 3.5  # the compute spent, the wasted seed included
    err = {"status": "error", "reason": "RuntimeError: out of memory", "fitness": None, "wall_time": 0.5}
    out = merge_by_seed([_ok(0, 0.8), err])
    assert out["status"] == "error" and out["reason"] == err["reason"] and "per_seed" not in out
    out = merge_by_seed([_ok(0, 0.8), _ok(1, 0.6)])
    assert out["status"] == "ok" and out["fitness"] == pytest.approx(0.7) and out["result"] == {"s": 0}
