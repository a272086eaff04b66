"""Label noise as the noisy-label literature runs it: symmetric, pair-flip (Han et al. 2018) and the
class-pair asymmetric flips (Patrini et al. 2017), on the training labels only; the split seed draws the
training subset and the noise, so a campaign can give every test seed its own."""

import dataclasses

import pytest
import torch

from nlfs.data import ASYMMETRIC_PAIRS, load_dataset, make_splits, with_label_noise
from nlfs.train import TrainConfig, training_key


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _noisy(ds, kind, rate=0.3, split_seed=0, train_size=None):
    clean = make_splits(ds, 300, train_size, split_seed)
    return clean, with_label_noise(clean, rate, ds.num_classes, split_seed, kind)


def test_pairflip_moves_each_flipped_label_to_the_next_class(digits):
    clean, noisy = _noisy(digits, "pairflip")
    changed = (noisy.labels != clean.labels).nonzero().flatten()
    assert set(changed.tolist()) <= set(clean.train.tolist())  # validation and test stay clean
    assert 0.25 < len(changed) / len(clean.train) < 0.35
    assert torch.equal(noisy.labels[changed], (clean.labels[changed] + 1) % 10)


def test_asymmetric_follows_the_literature_pairs(digits):
    clean, noisy = _noisy(digits, "asymmetric", rate=0.4)
    changed = (noisy.labels != clean.labels).nonzero().flatten()
    assert set(changed.tolist()) <= set(clean.train.tolist())
    pairs = ASYMMETRIC_PAIRS["digits"]
    assert changed.numel() > 0
    for src, dst in zip(clean.labels[changed].tolist(), noisy.labels[changed].tolist(), strict=True):
        assert pairs[src] == dst
    # classes without a pair never change; about 40% of each paired class does
    train_y = clean.labels[clean.train]
    for c in range(10):
        members = clean.train[train_y == c]
        frac = (noisy.labels[members] != clean.labels[members]).float().mean().item()
        assert (frac == 0.0) if c not in pairs else (0.25 < frac < 0.55), (c, frac)


def test_asymmetric_refused_without_a_class_map():
    with pytest.raises(ValueError, match="fashion-mnist.*pairflip"):
        TrainConfig(dataset="fashion-mnist", label_noise=0.2, label_noise_kind="asymmetric").resolved()
    with pytest.raises(ValueError, match="label_noise_kind must be one of"):
        TrainConfig(dataset="digits", label_noise=0.2, label_noise_kind="pair").resolved()


def test_symmetric_draw_is_unchanged_and_keys_stay():
    """The default kind draws the labels it drew before kinds existed, and leaves training keys (so
    every recorded training) as they were; another kind is another training."""
    cfg = TrainConfig(dataset="digits", label_noise=0.2)
    assert "label_noise_kind" not in cfg.to_dict()
    pair = dataclasses.replace(cfg, label_noise_kind="pairflip")
    assert pair.to_dict()["label_noise_kind"] == "pairflip"
    assert training_key(pair.to_dict()) != training_key(cfg.to_dict())


def test_split_seed_draws_subset_and_noise_seed_does_not(digits):
    """Same split seed: the same training subset and the same noisy labels; another split seed: another
    subset and other noise. The training seed (model init, order) decides neither."""
    for kind in ("symmetric", "pairflip"):
        a_clean, a = _noisy(digits, kind, split_seed=1, train_size=500)
        b_clean, b = _noisy(digits, kind, split_seed=1, train_size=500)
        c_clean, c = _noisy(digits, kind, split_seed=2, train_size=500)
        assert torch.equal(a.train, b.train) and torch.equal(a.labels, b.labels)
        assert set(a.train.tolist()) != set(c.train.tolist())
        flipped_a = set(a.train[a.labels[a.train] != a_clean.labels[a.train]].tolist())
        flipped_c = set(c.train[c.labels[c.train] != c_clean.labels[c.train]].tolist())
        assert flipped_a != flipped_c
        assert not set(c.test.tolist()) & set(c.train.tolist())  # digits draws its test part by split seed


def test_descriptions_name_the_kind():
    from nlfs.search import make_target, training_regime

    cfg = TrainConfig(dataset="digits", label_noise=0.4, label_noise_kind="pairflip")
    assert "label noise 0.4 (pairflip)" in training_regime(cfg)
    assert "label noise 0, " in training_regime(TrainConfig(dataset="digits", label_noise_kind="pairflip"))
    t = make_target({"train_size": "all", "epochs": 8, "label_noise": 0.4, "label_noise_kind": "pairflip"})
    assert "40% pairflip label noise" in t.describe()
    sym = make_target({"train_size": "all", "epochs": 8, "label_noise": 0.4})
    assert make_target({"train_size": "all", "epochs": 8, "label_noise": 0.4,
                        "label_noise_kind": "symmetric"}).fidelity == sym.fidelity
    assert t.fidelity != sym.fidelity
    assert t.apply(TrainConfig(dataset="digits")).label_noise_kind == "pairflip"
    assert sym.apply(TrainConfig(dataset="digits", label_noise_kind="pairflip")).label_noise_kind == "symmetric"
