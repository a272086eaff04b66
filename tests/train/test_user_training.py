"""Training on a user's data and model: the trainer, check_config and ``python -m nlfs.train``."""

import json

import numpy as np
import pytest
import torch

from nlfs.models import MLP, ModelError, check_model, make_model
from nlfs.train import ConfigError, TrainConfig, check_config, train
from nlfs.train import __main__ as train_cli

from ..data.user_data import write_image_folder, write_png, write_wine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTORIES = '''
from torch import nn

def linear(input_shape, num_classes):
    size = 1
    for s in input_shape:
        size *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(size, num_classes))

def wrong_outputs(input_shape, num_classes):
    return linear(input_shape, num_classes + 1)

def not_a_module(input_shape, num_classes):
    return "a model"
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models"


def test_wine_npz_trains_the_mlp_well_above_chance(tmp_path):
    path = write_wine(tmp_path / "wine.npz")
    cfg = TrainConfig(dataset=str(path), backend="torch", threads=1)
    check_config(cfg)
    r = train("CE", cfg)
    assert not r.diverged and r.model == "mlp" and r.dataset == str(path.resolve())
    assert (r.train_size, r.val_size, r.test_size) == (114, 28, 36)
    assert r.best_val_acc > 0.8 and r.test_acc > 0.8  # chance is about 0.4


def test_image_folder_and_factory_model(tmp_path, factories):
    root = write_image_folder(tmp_path / "digits", per_class=10)
    cfg = TrainConfig(dataset=str(root), model=f"{factories}:linear", epochs=10, backend="torch", threads=1)
    check_config(cfg)
    r = train("CE", cfg)
    assert not r.diverged and r.model == f"{factories}:linear" and r.test_acc > 0.5
    model = make_model(f"{factories}:linear", (1, 8, 8), 10)
    assert isinstance(model[1], torch.nn.Linear) and model[1].in_features == 64
    assert isinstance(make_model("mlp", (13,), 3), MLP)


def test_bad_models_one_clear_error(tmp_path, factories):
    with pytest.raises(ModelError, match=r"user_models:wrong_outputs: .* gave outputs of shape \(2, 11\), "
                                         r"expected \(2, 10\)"):
        check_model(make_model(f"{factories}:wrong_outputs", (1, 8, 8), 10), (1, 8, 8), 10,
                    f"{factories}:wrong_outputs")
    with pytest.raises(ModelError, match=r"not_a_module\(\(1, 8, 8\), 10\) returned a str, not a torch.nn.Module"):
        make_model(f"{factories}:not_a_module", (1, 8, 8), 10)
    with pytest.raises(ModelError, match="cannot import module 'nowhere_models'"):
        make_model("nowhere_models:f", (3,), 2)
    with pytest.raises(ModelError, match="needs images"):
        make_model("resnet18", (13,), 3)
    wine = str(write_wine(tmp_path / "wine.npz"))
    for model, message in ((f"{factories}:wrong_outputs", "expected \\(2, 3\\)"),
                           (f"{factories}:not_a_module", "not a torch.nn.Module"),
                           ("resnet9v2", "needs images")):
        with pytest.raises(ConfigError, match=message):
            check_config(TrainConfig(dataset=wine, model=model))
    with pytest.raises(ConfigError, match="feature vectors"):
        check_config(TrainConfig(dataset=wine, augment="flipcrop"))


def test_cli_end_to_end_with_a_user_dataset_and_model(tmp_path, factories, capsys):
    root = write_image_folder(tmp_path / "split", per_class=8, splits=True)
    write_png(root / "train" / "one" / "big.png", np.zeros((10, 10), np.uint8))
    args = ["--dataset", str(root), "--model", f"{factories}:linear", "--epochs", "3", "--backend", "torch",
            "--threads", "1", "--no-progress", "--json"]
    assert train_cli.main(args) == 2  # mixed sizes: refused before training
    err = capsys.readouterr().err.strip()
    assert err.startswith("nlfs.train: error: dataset:") and "big.png is 10x10" in err and "--resize" in err
    assert "\n" not in err
    assert train_cli.main([*args, "--resize", "8"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["dataset"] == str(root.resolve()) and record["train_size"] == 41 and record["test_size"] == 20


@pytest.mark.parametrize("data, message", [
    (dict(x_train=np.zeros((10, 3)), y_train=np.zeros(9, np.int64)), "x_train has 10 rows but y_train has 9"),
    (dict(x_train=np.zeros((10, 3)), y_train=np.arange(10) * 0.5), "whole numbers"),
    (dict(x_train=np.zeros((10, 3)), y_train=np.arange(10) - 1), "outside"),
    (dict(x_train=np.full((10, 3), np.inf), y_train=np.arange(10) % 2), "NaN or Inf"),
    (dict(x_train=np.zeros((21, 3)), y_train=np.r_[np.zeros(20), 1].astype(int)), "too few for the test split"),
])
def test_cli_bad_data_exit_2(tmp_path, capsys, data, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **data)
    assert train_cli.main(["--dataset", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nlfs.train: error:") and message in err and str(path) in err and "\n" not in err


def test_cli_refuses_a_missing_path_and_a_bad_function(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train_cli.main(["--dataset", str(tmp_path / "nothing.npz")])
    assert stop.value.code == 2 and "no such file or directory" in capsys.readouterr().err
    assert train_cli.main(["--dataset", "json:dumps", "--no-progress"]) == 2
    assert "json:dumps: dumps() raised TypeError" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["--dataset", str(tmp_path), "--resize", "0"])
    assert "expected H or H,W" in capsys.readouterr().err


def test_flat_folder_refused_by_check_config(tmp_path):
    write_png(tmp_path / "flat" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ConfigError, match="not an ImageFolder layout"):
        check_config(TrainConfig(dataset=str(tmp_path / "flat")))


def test_resize_is_left_out_of_the_config_dict_when_unset():
    assert "resize" not in TrainConfig().to_dict()
    d = TrainConfig(resize=(8, 8)).to_dict()
    assert d["resize"] == (8, 8) and TrainConfig(**d).resolved().resize == (8, 8)
    assert TrainConfig(resize=[12]).resolved().resize == (12, 12)
