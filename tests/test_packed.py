"""Packed training (``nlfs.train.train_packed``): each member of a pack is the training it would be alone
(same init seed, same data order, same learning rate), to float tolerance, BatchNorm statistics
included; a diverging member leaves the pack without changing the others."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import nlfs.train._loop as loop
import nlfs.train._packed as packed_mod
from nlfs.models import PackedSurrogate, SurrogateNet
from nlfs.train import ConfigError, TrainConfig, train, train_grid, train_packed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# digits, 8 steps of 64 images, validation (300 images) every 4 steps: about a second per training
# (longer, the float-level differences of the packed kernels grow chaotically on this tiny task)
CFG = TrainConfig(dataset="digits", device="cpu", backend="torch", threads=1, steps=8, eval_every=4)


class NaNAfter:
    """CE that turns NaN from its ``n``-th call on (a loss that diverges mid-training)."""

    def __init__(self, n: int):
        self.n, self.calls, self.name = n, 0, f"nan_after_{n}"

    def __call__(self, logits, target):
        self.calls += 1
        value = F.cross_entropy(logits, target)
        return value * float("nan") if self.calls >= self.n else value


@pytest.fixture
def captured(monkeypatch):
    """The trained networks: single trainings' models and packs, in the order they were built."""
    seen = {"single": [], "pack": []}
    model_for, packed_net = loop._model_for, packed_mod._packed_net

    def single(*a, **kw):
        out = model_for(*a, **kw)
        seen["single"].append(out[0])
        return out

    def pack(*a, **kw):
        out = packed_net(*a, **kw)
        seen["pack"].append(out[0])
        return out

    monkeypatch.setattr(loop, "_model_for", single)
    monkeypatch.setattr(packed_mod, "_packed_net", pack)
    return seen


def assert_same_training(alone, member, n_val: int, n_test: int):
    assert member.diverged == alone.diverged and member.reason == alone.reason
    assert member.order_digest == alone.order_digest  # same initial weights, same batches in the same order
    assert member.steps == alone.steps and member.grad_scale_factor == pytest.approx(alone.grad_scale_factor, rel=1e-6)
    assert [s for s, _ in member.history] == [s for s, _ in alone.history]
    for (_, a), (_, b) in zip(alone.history, member.history):
        assert abs(a - b) <= 2 / n_val  # float-level differences may flip a borderline image or two
    if alone.final_train_loss is None:
        assert member.final_train_loss is None
    else:
        assert member.final_train_loss == pytest.approx(alone.final_train_loss, rel=1e-4, nan_ok=True)
    if alone.test_acc is not None:
        assert abs(member.test_acc - alone.test_acc) <= 3 / n_test
    assert (member.loss, member.lr, member.seed) == (alone.loss, alone.lr, alone.seed)


def assert_same_weights(model: torch.nn.Module, state: dict, rel: float = 2e-3, atol: float = 2e-5):
    """Every tensor (BatchNorm statistics included) equal to float tolerance: the packed kernels
    (grouped convolutions, a batched head) round differently from the single ones, as the single
    trainer's own kernels do between channels_last and contiguous tensors, and a few SGD steps at
    lr 0.1 grow those roundings by about the same factor in both cases."""
    ref = model.state_dict()
    assert list(state) == list(ref)
    for name, t in ref.items():
        if t.dtype == torch.int64:  # num_batches_tracked
            assert torch.equal(state[name], t), name
        else:
            bound = rel * float(t.abs().max()) + atol
            assert float((state[name] - t).abs().max()) <= bound, name


def test_packed_model_computes_each_member():
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(SurrogateNet(1, 10, 8))
    pack = PackedSurrogate(nets)
    x = torch.randn(16, 1, 8, 8)
    out = pack(x)
    assert out.shape == (3, 16, 10)
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net(x))
        assert_same_weights(net, pack.member_state_dict(k))
    pack.select([2, 0])
    torch.testing.assert_close(pack(x)[0], nets[2](x))


def test_each_member_trains_as_it_would_alone(captured):
    losses, seeds, lrs = ["CE", "NGL", "Focal"], [0, 1, 2], [0.1, 0.05, 0.1]
    results = train_packed(losses, CFG, seeds=seeds, lrs=lrs)
    pack = captured["pack"][0]
    assert pack.k == 3
    for k, (loss, seed, lr, member) in enumerate(zip(losses, seeds, lrs, results)):
        alone = train(loss, dataclasses.replace(CFG, init_seed=seed, lr=lr))
        assert_same_training(alone, member, alone.val_size, alone.test_size)
        assert_same_weights(captured["single"][-1], pack.member_state_dict(k))
    assert len({r.order_digest.split("-")[0] for r in results}) == 3  # three initialisations
    assert len({r.order_digest.split("-")[1] for r in results}) == 1  # one data order


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_the_pack_optimizer_is_torch_optim_per_member(optimizer):
    cfg = dataclasses.replace(CFG, optimizer=optimizer).resolved()
    lrs = [0.1, 0.03, 0.002]
    torch.manual_seed(0)
    flat = torch.nn.Parameter(torch.randn(3, 50))
    singles = [torch.nn.Parameter(flat.detach()[k].clone()) for k in range(3)]
    opts = [loop._optimizer(dataclasses.replace(cfg, lr=lr), torch.nn.Linear(1, 1)) for lr in lrs]
    for opt, p in zip(opts, singles):
        opt.param_groups[0]["params"] = [p]
    pack_opt = packed_mod._PackedOptimizer(cfg, flat)
    for step in range(5):
        factor = loop.lr_factor(step, 5, 1, "cosine")
        grads = torch.randn(3, 50)
        flat.grad = grads.clone()
        pack_opt.step(flat, torch.tensor(lrs, dtype=torch.float64).view(3, 1) * factor)
        for k, (opt, p) in enumerate(zip(opts, singles)):
            opt.param_groups[0]["lr"] = lrs[k] * factor
            p.grad = grads[k].clone()
            opt.step()
    for k, p in enumerate(singles):
        torch.testing.assert_close(flat.detach()[k], p.detach(), rtol=1e-6, atol=1e-7)
    pack_opt.select(torch.tensor([2, 0]))
    assert all(t.shape[0] == 2 for t in pack_opt.state.values())


def test_adamw_and_ce_gradient_scale_per_member(captured):
    cfg = dataclasses.replace(CFG, optimizer="adamw", grad_scale="ce", evaluate_test=False)
    losses, lrs = ["CE", "0.1 * (1 - p) ** 2"], [2e-3, 4e-3]
    results = train_packed(losses, cfg, seeds=[3, 3], lrs=lrs)
    assert results[1].grad_scale_factor != pytest.approx(1.0)  # the squared loss is rescaled to CE's gradient
    for k, (loss, lr) in enumerate(zip(losses, lrs)):
        alone = train(loss, dataclasses.replace(cfg, init_seed=3, lr=lr))
        assert_same_training(alone, results[k], alone.val_size, 1)
        # Adam's normalised step turns a rounding-level difference in a near-zero gradient into a step
        # of up to lr, so elementwise bounds do not hold: the two trainings' difference is small next
        # to how far training moved the weights (a wrong lr or state would make them comparable)
        torch.manual_seed(3)
        init = SurrogateNet(1, 10, 8).state_dict()
        got, ref = captured["pack"][0].member_state_dict(k), captured["single"][-1].state_dict()
        for name, t in ref.items():
            if t.dtype == torch.int64:
                assert torch.equal(got[name], t), name
            else:
                assert float((got[name] - t).norm()) <= 0.1 * float((t - init[name]).norm()), name


def test_a_diverging_member_leaves_the_pack_and_changes_no_other(captured):
    cfg = dataclasses.replace(CFG, evaluate_test=False)
    with_bad = train_packed(["CE", NaNAfter(6), "NGL"], cfg, seeds=[0, 1, 2])
    without = train_packed(["CE", "NGL"], cfg, seeds=[0, 2])
    bad = with_bad[1]
    assert bad.diverged and bad.reason == "loss is NaN by step 6" and bad.steps == 6
    assert [s for s, _ in bad.history] == [4]  # evaluated once before it failed
    alone = train(NaNAfter(6), dataclasses.replace(cfg, init_seed=1))
    assert_same_training(alone, bad, alone.val_size, 1)
    pack_with, pack_without = captured["pack"]
    assert pack_with.k == 2  # the NaN member was removed
    for k, (a, b) in enumerate(zip([with_bad[0], with_bad[2]], without)):
        assert not a.diverged and a.steps == b.steps == 8
        assert_same_training(b, a, b.val_size, 1)
        reference = SurrogateNet(1, 10, 8)
        reference.load_state_dict(pack_without.member_state_dict(k))
        assert_same_weights(reference, pack_with.member_state_dict(k))


def test_every_member_diverging_ends_the_pack():
    results = train_packed([NaNAfter(1), NaNAfter(3)], dataclasses.replace(CFG, evaluate_test=False))
    assert [r.reason for r in results] == ["loss is NaN by step 1", "loss is NaN by step 3"]
    assert all(r.diverged and r.test_acc is None for r in results)


def test_bf16_autocast_member_tracks_its_alone_training():
    cfg = dataclasses.replace(CFG, amp="bf16", evaluate_test=False)
    results = train_packed(["CE", "NGL"], cfg, seeds=[0, 1])
    for loss, seed, member in zip(["CE", "NGL"], [0, 1], results):
        alone = train(loss, dataclasses.replace(cfg, init_seed=seed))
        assert member.amp == alone.amp == "bf16" and member.order_digest == alone.order_digest
        # bf16 rounds the convolutions: a few images may flip, the loss agrees to bf16's precision
        assert member.final_train_loss == pytest.approx(alone.final_train_loss, rel=2e-2)
        for (_, a), (_, b) in zip(alone.history, member.history):
            assert abs(a - b) <= 0.05


def test_init_seed_sets_the_weights_and_seed_the_data_order():
    cfg = dataclasses.replace(CFG, steps=2, eval_every=2, evaluate_test=False)
    a = train("CE", dataclasses.replace(cfg, seed=5))
    b = train("CE", dataclasses.replace(cfg, seed=0, init_seed=5))
    init_a, order_a = a.order_digest.split("-")
    init_b, order_b = b.order_digest.split("-")
    assert init_a == init_b and order_a != order_b
    assert "init_seed" not in cfg.to_dict()  # the keys of trainings recorded before init_seed stay
    assert dataclasses.replace(cfg, init_seed=5).to_dict()["init_seed"] == 5


def test_bad_packs_raise_a_clear_error():
    with pytest.raises(ValueError, match="2 lrs for 3 losses"):
        train_packed(["CE", "NGL", "CE"], CFG, lrs=[0.1, 0.2])
    with pytest.raises(ConfigError, match="surrogate CNN only"):
        train_packed(["CE"], CFG, model="resnet9v2")
    with pytest.raises(ConfigError, match="fp16"):
        train_packed(["CE"], CFG, amp="fp16")
    with pytest.raises(ConfigError, match="could not be built"):
        train_packed(["CE", "no_such_loss(p"], CFG)


def test_a_grid_packed_is_the_grid_one_at_a_time(captured):
    cfg = dataclasses.replace(CFG, steps=6, evaluate_test=False)
    losses = ["CE", NaNAfter(2), "NGL"]
    packed = train_grid(losses, cfg, seeds=[4, 5], pack=3)
    losses[1] = NaNAfter(2)
    alone = train_grid(losses, cfg, seeds=[4, 5], pack=1)
    assert len(captured["pack"]) == 2 and len(captured["single"]) == 5  # seed 5: the NaN loss is skipped
    assert [len(r) for r in packed] == [len(r) for r in alone] == [2, 1, 2]
    for row_packed, row_alone in zip(packed, alone):
        for p, a in zip(row_packed, row_alone):
            assert a.seed == p.seed and a.order_digest == p.order_digest  # seed: data order and init
            assert_same_training(a, p, a.val_size, 1)
    assert packed[1][0].diverged and packed[1][0].reason == "loss is NaN by step 2"


def test_a_compiled_pack_retires_a_diverging_member_in_place(captured, monkeypatch):
    # torch.compile as the identity (compiling takes minutes on this CPU): what is tested is what a
    # compiled pack does with a failed member, keep its shape and zero the member
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    monkeypatch.setattr(packed_mod, "_COMPILED", {})
    cfg = dataclasses.replace(CFG, evaluate_test=False)
    with_bad = train_packed(["CE", NaNAfter(3), "NGL"], dataclasses.replace(cfg, compile=True), seeds=[0, 1, 2])
    without = train_packed(["CE", "NGL"], cfg, seeds=[0, 2])
    assert with_bad[1].diverged and with_bad[1].reason == "loss is NaN by step 3"
    pack_with, pack_without = captured["pack"]
    assert pack_with.k == 3 and float(pack_with.flat.detach()[1].abs().max()) == 0.0  # retired, not removed
    assert torch.isfinite(pack_with.flat.detach()).all()
    for k_with, k_without in ((0, 0), (2, 1)):
        a, b = with_bad[k_with], without[k_without]
        assert not a.diverged and a.compiled and not b.compiled
        assert_same_training(b, dataclasses.replace(a, compiled=False), b.val_size, 1)
        reference = SurrogateNet(1, 10, 8)
        reference.load_state_dict(pack_without.member_state_dict(k_without))
        assert_same_weights(reference, pack_with.member_state_dict(k_with))


def test_a_phase_of_a_schedule_is_refused_by_name():
    cfg = TrainConfig(dataset="digits", steps=4, start_step=2, evaluate_test=False, threads=1)
    with pytest.raises(ConfigError, match="start_step"):
        train_packed(["CE", "NGL"], cfg, seeds=[0, 1])
    # stop_epoch is a phase too (the schedule's end cut short): refused alike, and never packed by a search
    from nlfs.search._worker import packable

    cfg = TrainConfig(dataset="digits", epochs=2, stop_epoch=1, evaluate_test=False, threads=1)
    with pytest.raises(ConfigError, match="stop_epoch"):
        train_packed(["CE", "NGL"], cfg, seeds=[0, 1])
    assert packable({"train": {"epochs": 2}}) and not packable({"train": {"epochs": 2, "stop_epoch": 1}})
