"""A training in phases (TrainConfig.start_step / stop_step / save_checkpoint): the late-phase proxy
trains CE to a step of the target's schedule and continues from its checkpoint with a candidate."""

import pytest
import torch

from nlfs.train import ConfigError, TrainConfig, check_config, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digits(**kw) -> TrainConfig:
    # momentum 0: plain SGD keeps no optimizer state, so two phases must equal one run exactly
    base = dict(dataset="digits", backend="torch", threads=1, epochs=3, momentum=0.0, evaluate_test=False)
    return TrainConfig(**(base | kw))


def _state(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("split", [25, 34])  # mid-epoch and on an epoch boundary (17 steps per epoch)
def test_two_phases_equal_one_run(tmp_path, split):
    whole = train("CE", digits(save_checkpoint=str(tmp_path / "whole.pt")))
    head = train("CE", digits(stop_step=split, save_checkpoint=str(tmp_path / "head.pt")))
    tail = train("CE", digits(start_step=split, checkpoint=str(tmp_path / "head.pt"),
                              save_checkpoint=str(tmp_path / "tail.pt")))
    assert head.steps == split and tail.steps == whole.steps - split
    # the history keeps the schedule's step numbers: the two phases' evaluations are the whole run's
    assert [s for s, _ in head.history + tail.history] == sorted({s for s, _ in whole.history} | {split})
    assert tail.history[-1] == whole.history[-1] and tail.val_acc == whole.val_acc
    a, b = _state(tmp_path / "whole.pt"), _state(tmp_path / "tail.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_phase_continues_the_schedule_not_a_new_one(tmp_path):
    train("CE", digits(stop_step=34, save_checkpoint=str(tmp_path / "head.pt")))
    tail = train("CE", digits(start_step=34, checkpoint=str(tmp_path / "head.pt")))
    fresh = train("CE", digits(epochs=1, checkpoint=str(tmp_path / "head.pt")))  # a new warm-up and decay
    assert tail.steps == fresh.steps == 17 and tail.val_acc != fresh.val_acc


def test_grad_scale_is_measured_at_the_phase_start(tmp_path):
    train("CE", digits(stop_step=34, save_checkpoint=str(tmp_path / "head.pt")))
    at_start = train("abs(y - p)", digits(grad_scale="ce", stop_step=1)).grad_scale_factor
    head = str(tmp_path / "head.pt")
    at_phase = train("abs(y - p)", digits(grad_scale="ce", start_step=34, checkpoint=head)).grad_scale_factor
    assert at_start != 1.0 and at_phase != 1.0 and at_phase != at_start


def test_phase_bounds_are_checked():
    with pytest.raises(ValueError, match="start_step"):
        train("CE", digits(start_step=5, stop_step=5))
    with pytest.raises(ValueError, match="leaves no steps"):
        train("CE", digits(start_step=51))
    with pytest.raises(ConfigError, match="start_step"):
        check_config(digits(start_step=-1))


def test_phase_fields_stay_out_of_the_key_when_unset():
    d = TrainConfig().to_dict()
    assert not {"start_step", "stop_step", "save_checkpoint", "resize"} & d.keys()
    assert TrainConfig(start_step=3).to_dict()["start_step"] == 3


# ------------------------------------------------------------------ stop_epoch: a schedule read early
def test_stop_epoch_is_the_whole_schedule_read_after_that_epoch():
    """The learning-curve proxy: the 8-epoch schedule trained through epoch 1 is the 8-epoch training
    as it stood after epoch 1 (same steps, same validation accuracy), not a 1-epoch schedule."""
    whole = train("CE", digits(epochs=8, momentum=0.9))
    early = train("CE", digits(epochs=8, momentum=0.9, stop_epoch=1))
    spe = whole.steps // 8
    assert early.steps == spe and early.epochs == 1.0
    assert early.history == whole.history[:1] and early.val_acc == whole.history[0][1]
    one_epoch = train("CE", digits(epochs=1, momentum=0.9))  # its own warm-up and decay: another run
    assert one_epoch.steps == spe and one_epoch.val_acc != early.val_acc


def test_stop_epoch_ends_a_steps_budget_and_meets_stop_step():
    assert train("CE", digits(steps=40, stop_epoch=1)).steps == 17  # 17 steps per epoch
    assert train("CE", digits(epochs=3, stop_epoch=2, stop_step=20)).steps == 20  # the earlier end wins


@pytest.mark.parametrize("kw, message", [
    (dict(stop_epoch=0), "stop_epoch must be >= 1"),
    (dict(stop_epoch=3), "stop_epoch=3 with epochs=3 changes nothing"),
    (dict(epochs=None, stop_epoch=8), "stop_epoch=8 with epochs=8 changes nothing"),  # digits' default
])
def test_bad_stop_epochs_are_refused_before_any_work(monkeypatch, kw, message):
    import nlfs.train._loop as loop

    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: pytest.fail("data loaded for a bad stop_epoch"))
    with pytest.raises(ValueError, match=message):
        train("CE", digits(**kw))
    with pytest.raises(ConfigError, match="stop_epoch"):
        check_config(digits(**kw))


def test_a_stop_epoch_after_the_phase_start_leaves_no_steps():
    with pytest.raises(ValueError, match="stop_epoch 1 ends it at step 17"):
        train("CE", digits(start_step=17, stop_epoch=1))


def test_stop_epoch_stays_out_of_existing_training_keys():
    from nlfs.train import training_key

    cfg = TrainConfig(dataset="digits", epochs=8)
    assert "stop_epoch" not in cfg.to_dict()
    # the key this config had before stop_epoch existed (computed with the previous nlfs)
    assert training_key(cfg.to_dict()) == "73708404bb466511c63b77433a841deb116cc29580e2a34acbd576f8d5db2afd"
    assert training_key(TrainConfig(dataset="digits", epochs=8, stop_epoch=1).to_dict()) != training_key(cfg.to_dict())
    assert TrainConfig(stop_epoch=2).to_dict()["stop_epoch"] == 2
