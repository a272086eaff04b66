"""``--pack K`` for the search (``make_executor(pack=K)``, ``PackingExecutor``): jobs of one budget go
to a worker as one packed training, and every candidate gets the result it gets unpacked, to float
tolerance; a killed packed search resumes without training anything finished twice."""

import dataclasses

import pytest

from nlfs.search import (
    InlineExecutor,
    PackingExecutor,
    Search,
    SearchConfig,
    evaluate_payload,
    make_executor,
    resume_config,
)
from nlfs.train import TrainConfig
from tests.runs import run_search

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VAL = 100
# digits, 8 steps: a few seconds a search (longer, float-level differences of packed kernels grow)
RUNG = {"steps": 8, "seeds": 2}


def _cfg(run_dir, **kw):
    base = dict(run_dir=str(run_dir), algorithm="regularized", space="nlfs", dataset="digits", budget=5,
                population=8, sample=3, initial=8, seed=1, rungs=[RUNG], train_size=300, val_size=VAL,
                backend="torch", threads=1, finalists=0, progress=False, grad_scale="ce")
    base.update(kw)
    return SearchConfig(**base)


class Recording(InlineExecutor):
    """The inline executor, remembering each payload it trained."""

    def __init__(self, die_after: int | None = None):
        super().__init__(threads=1)
        self.payloads, self.die_after = [], die_after

    def submit(self, payload):
        self.payloads.append(payload)
        return super().submit(payload)

    def wait_one(self, handles):
        if self.die_after is not None and len(self.payloads) > self.die_after:
            raise KeyboardInterrupt  # the driver dies with trained results not yet recorded
        return super().wait_one(handles)

    def trained(self) -> list[dict]:
        """Each candidate payload trained (a pack's members one by one), baselines left out."""
        out = [m for p in self.payloads for m in p.get("pack", [p])]
        return [p for p in out if p.get("name") != "CE"]


def _by_expression(rows):
    return {r["expression"]: r for r in rows if r["status"] != "baseline"}


def test_packed_search_gives_each_candidate_its_unpacked_result(tmp_path):
    alone, packed = Recording(), Recording()
    one = _by_expression(run_search(_cfg(tmp_path / "one"), alone))
    three = _by_expression(run_search(_cfg(tmp_path / "three", pack=3), PackingExecutor(packed, 3)))
    assert not any("pack" in p for p in alone.payloads)
    sizes = [len(p["pack"]) for p in packed.payloads if "pack" in p]
    assert sizes and max(sizes) == 3  # candidates really trained three to a network
    assert set(one) == set(three)
    trained = [e for e, r in one.items() if r["status"] in ("ok", "diverged")]
    assert len(trained) == 5
    for expression, a in one.items():
        b = three[expression]
        assert (a["status"], a.get("stage")) == (b["status"], b.get("stage")), expression
        if a["status"] not in ("ok", "diverged"):
            continue
        sa, sb = a["result"]["seeds"], b["result"]["seeds"]
        assert [s["seed"] for s in sa] == [s["seed"] for s in sb]
        for x, y in zip(sa, sb):
            assert x["order_digest"] == y["order_digest"]  # same init, same batches in the same order
            assert x["diverged"] == y["diverged"]
            assert abs(x["acc"] - y["acc"]) <= 2 / VAL  # float-level differences may flip an image or two
            assert x["grad_scale_factor"] == pytest.approx(y["grad_scale_factor"], rel=1e-5)
        if a["fitness"] is not None:
            assert b["fitness"] == pytest.approx(a["fitness"], abs=2 / VAL)


def test_killed_packed_search_resumes_without_training_anything_twice(tmp_path):
    cfg = _cfg(tmp_path / "run", pack=3, rungs=[{"steps": 6, "seeds": 1}], budget=6)
    dying = Recording(die_after=2)  # the CE baseline, a pack recorded, then the driver dies waiting for the next
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, PackingExecutor(dying, 3))
    first = [p["expression"] for p in dying.trained()]
    resumed = Recording()
    again_cfg = resume_config(tmp_path / "run", budget=6, threads=1, progress=False, pack=2)
    rows = run_search(again_cfg, PackingExecutor(resumed, 3), resume=True)
    done = [r["expression"] for r in rows if r["status"] in ("ok", "diverged", "error")]
    assert len(done) == len(set(done)) == 6
    again = {p["expression"] for p in resumed.trained()}
    recorded_first = set(done) - again
    assert recorded_first and recorded_first <= set(first)  # what the killed run recorded stays
    assert not any(p.get("name") == "CE" for p in resumed.payloads)  # its baseline too
    assert len(again) == len(resumed.trained())  # and nothing trains twice in the resumed run


class Instant:
    """An executor of two slots that 'trains' at once; records what it was sent."""

    slots = 2

    def __init__(self):
        self.sent, self.results = [], {}

    def submit(self, payload):
        h = len(self.sent)
        self.sent.append(payload)
        members = payload.get("pack")
        self.results[h] = ({"pack": [{"status": "ok", "name": m["name"]} for m in members]} if members
                           else {"status": "ok", "name": payload["name"]})
        return h

    def wait_one(self, handles):
        return handles[0], self.results.pop(handles[0])

    def close(self):
        pass


def _job(name, steps=4, seeds=(0,), **kw):
    return {"name": name, "expression": "-y * log(p)", "train": {"model": "surrogate", "steps": steps},
            "seeds": list(seeds), **kw}


def test_packing_groups_jobs_of_one_budget_and_sends_the_rest_alone():
    inner = Instant()
    ex = PackingExecutor(inner, 3)
    assert ex.slots == 6
    jobs = [_job("a"), _job("b", steps=8), _job("c"), _job("f", fitness=True, budget=1.0),
            _job("d", seeds=(1,)), _job("e")]
    handles = {ex.submit(p): p["name"] for p in jobs}
    # a, c, e share a budget: a full pack, sent with the fitness job while the inner slots were free
    assert [p.get("name") or [m["name"] for m in p["pack"]] for p in inner.sent] == ["f", ["a", "c", "e"]]
    got = {}
    while len(got) < len(handles):
        h, out = ex.wait_one(list(set(handles) - set(got)))
        got[h] = out
    assert all(handles[h] == out["name"] for h, out in got.items())  # each member gets its own result
    # b and d (other steps, other seeds) waited, then went alone as the slots came free
    assert [p.get("name") for p in inner.sent[2:]] == ["b", "d"]


def test_a_worker_death_fails_each_member_of_its_pack():
    class Dying(Instant):
        def wait_one(self, handles):
            self.results.pop(handles[0])
            return handles[0], {"status": "error", "reason": "worker died (exit code -9)", "fitness": None,
                                "wall_time": 0.0}

    ex = PackingExecutor(Dying(), 2)
    a, b = ex.submit(_job("a")), ex.submit(_job("b"))
    out = dict([ex.wait_one([a, b]), ex.wait_one([b])])
    assert out[a]["status"] == out[b]["status"] == "error" and "worker died" in out[b]["reason"]


def _train_dict():
    return TrainConfig(dataset="digits", steps=4, train_size=200, val_size=VAL, backend="torch",
                       evaluate_test=False, progress=False, threads=1).to_dict()


def _member(expression, train):
    return {"expression": expression, "constants": {}, "class_reduction": "class_sum", "train": train,
            "seeds": [0, 1], "name": expression}


def test_a_pack_payload_trains_its_members_in_one_network(monkeypatch):
    import nlfs.train._packed as packed

    packs = []
    train_packed = packed.train_packed

    def spy(losses, *a, **kw):
        packs.append(len(losses))
        return train_packed(losses, *a, **kw)

    monkeypatch.setattr(packed, "train_packed", spy)  # what train_grid calls
    train = _train_dict()
    pack = [_member("-y * log(p)", train), _member("y * log(p)", train), _member("-y * log(p) + 0.1 * p", train),
            {"loss": "Poly1", "train": train, "seeds": [0, 1], "name": "Poly1"}]  # as transfer sends it
    out = evaluate_payload({"pack": pack})["pack"]
    assert packs == [3, 3]  # the rejected member left; the three others, one network per seed
    assert out[1]["status"] == "rejected:rejection"
    for i in (0, 2, 3):
        alone = evaluate_payload(pack[i])
        assert out[i]["status"] == alone["status"] == "ok"
        assert [s["seed"] for s in out[i]["per_seed"]] == [0, 1]
        for x, y in zip(out[i]["per_seed"], alone["per_seed"]):
            assert x["order_digest"] == y["order_digest"] and abs(x["acc"] - y["acc"]) <= 2 / VAL
        assert out[i]["fitness"] == pytest.approx(alone["fitness"], abs=2 / VAL)


def test_a_member_that_raises_costs_only_its_own_candidate():
    train = _train_dict()

    def broken(logits, target):
        raise RuntimeError("this loss always fails")

    out = evaluate_payload({"pack": [_member("-y * log(p)", train),
                                     {"loss": broken, "train": train, "seeds": [0, 1]}]})["pack"]
    assert out[1]["status"] == "error" and "always fails" in out[1]["reason"]
    assert out[0]["status"] == "ok" and [s["seed"] for s in out[0]["per_seed"]] == [0, 1]


def test_pack_must_be_positive():
    with pytest.raises(ValueError, match="pack must be at least 1"):
        make_executor("local", 1, pack=0)
    with pytest.raises(ValueError, match="pack must be at least 1"):
        SearchConfig(pack=0).resolve()


def test_pack_is_an_option_of_the_search_and_may_change_on_resume(tmp_path):
    from nlfs.evolve import build_parser, config_from_args

    args = build_parser().parse_args(["--pack", "4", "--dataset", "digits", "--run-dir", str(tmp_path / "run")])
    cfg = config_from_args(args)
    assert cfg.pack == 4
    assert build_parser().parse_args([]).pack == 1  # packing is asked for, never the default
    search = Search(dataclasses.replace(cfg, budget=1, progress=False, finalists=0))
    search.close()
    resumed = Search(resume_config(tmp_path / "run", pack=2), resume=True)
    try:
        assert resumed.cfg.pack == 2  # how the run goes on, as workers: a resumed run takes the new value
        assert resumed.cfg.dataset == "digits"
    finally:
        resumed.close()
