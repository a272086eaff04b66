"""The target regime: parsing, its errors, and how it describes itself."""

import pytest

from nlfs.search._target import Target, default_target, make_target, parse_target


def test_parse_target_reads_the_rungs_keys_and_the_regime():
    spec = parse_target("train_size=all, epochs=8, seeds=3, label_noise=0.2, augment=cutout")
    assert spec == {"train_size": "all", "epochs": 8, "seeds": 3, "label_noise": 0.2, "augment": "cutout"}
    t = make_target(spec)
    assert t.train["train_size"] is None and t.seeds == 3
    assert t.describe() == "target: all training images, 8 epochs, 20% label noise, augmentation cutout"


def test_a_count_of_images_and_steps_are_kept():
    t = make_target(parse_target("train_size=8192,steps=500"))
    assert t.train == {"train_size": 8192, "steps": 500}
    assert t.seeds == 2
    assert "8192 training images, 500 steps, clean labels" in t.describe()


@pytest.mark.parametrize("text, message", [
    ("epochs=8,colour=red", r"unknown keys \['colour'\]"),
    ("epochs", "expected key=value"),
    ("epochs=eight", "epochs must be an integer"),
    ("epochs=0", "epochs must be a positive integer"),
    ("label_noise=1.5", r"label_noise must be in \[0, 1\)"),
    ("augment=rotate", "augment must be one of"),
    ("seeds=0", "seeds must be >= 1"),
    ("epochs=8,epochs=9", "epochs given twice"),
    ("", "empty"),
])
def test_bad_targets_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def test_fidelity_separates_regimes_and_ignores_seeds():
    a = make_target({"train_size": "all", "epochs": 8, "seeds": 2})
    assert a.fidelity == make_target({"train_size": "all", "epochs": 8, "seeds": 5}).fidelity
    assert a.fidelity != make_target({"train_size": "all", "epochs": 8, "label_noise": 0.4}).fidelity
    assert a.fidelity != make_target({"train_size": "all", "epochs": 9}).fidelity


def test_default_targets_are_the_whole_split():
    for name in ("fashion-mnist", "digits", "cifar10"):
        t = make_target(default_target(name))
        assert t.train["train_size"] is None
    assert make_target(default_target("fashion_mnist")).train["epochs"] == 8
    assert isinstance(make_target(default_target("digits")), Target)


def test_a_target_is_a_whole_training_so_it_refuses_stop_epoch():
    # a rung may read its schedule early (stop_epoch); a target is the training a user runs to its end
    with pytest.raises(ValueError, match=r"unknown keys \['stop_epoch'\]; allowed: seeds, train_size") as err:
        parse_target("train_size=all,epochs=8,stop_epoch=1")
    assert "stop_epoch" not in str(err.value).split("allowed:")[1]


def test_a_target_names_the_noise_and_augmentation_it_keeps_from_the_run():
    # a target that sets no label noise trains with the run's (apply keeps it): its words say so
    from nlfs.search import SearchConfig
    from nlfs.search._report import target_describe

    noisy = {"label_noise": 0.3}  # the CLI's --label-noise
    base = SearchConfig(dataset="digits", augment="flip", train_overrides=noisy).train_config()
    t = make_target(parse_target("train_size=all,epochs=5"))
    trained = t.apply(base)
    assert (trained.label_noise, trained.augment) == (0.3, "flip")
    words = t.describe(base=base)
    assert "30% symmetric label noise" in words and "augmentation flip" in words and "clean" not in words
    assert "clean labels" in t.describe()  # without the run, only what the target sets
    own = make_target(parse_target("train_size=all,epochs=5,label_noise=0"))
    assert "clean labels" in own.describe(base=base) and own.apply(base).label_noise == 0
    saved = SearchConfig(dataset="digits", train_overrides=noisy, target=parse_target("train_size=all,epochs=5"))
    assert "30% symmetric label noise" in target_describe(saved.to_dict())
