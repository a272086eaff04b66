import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nlfs
from nlfs.backends import available_backends
from nlfs.train import DatasetError, TrainConfig, TrainResult, train

from ..data.fakes import write_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small ops: one thread is as fast, far faster on a busy CPU

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FIELDS = ["val_acc", "best_val_acc", "test_acc", "final_train_loss", "steps", "wall_time", "device",
          "dataset", "model", "augment", "seed", "loss", "backend", "diverged", "reason"]
BACKENDS = available_backends()


def digits(**kw) -> TrainConfig:
    base = dict(dataset="digits", backend="torch", threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=800, n_test=200)


def test_digits_ce_learns():
    r = train("CE", digits())
    assert isinstance(r, TrainResult) and not r.diverged, r.reason
    assert r.val_acc > 0.85 and r.best_val_acc >= r.val_acc and r.test_acc > 0.8
    assert r.dataset == "digits" and r.model == "surrogate" and r.backend == "torch" and r.device == "cpu"
    assert r.loss == "CE" and r.loss_text == "-y * log(p)" and r.steps == 8 * (1137 // 64)
    d = r.to_dict()
    assert all(f in d for f in FIELDS)
    json.dumps(d)


def test_digits_ngl_and_expression_learn():
    r = train("NGL", digits())
    assert not r.diverged and r.val_acc > 0.5 and r.loss == "NGL"
    r = train("-y * log(p) + 0.1 * (1 - p) ** 2", digits(epochs=4))
    assert not r.diverged and r.val_acc > 0.5 and "log(p)" in r.loss_text
    r = train(nlfs.Loss("Focal", backend="torch"), digits(epochs=4), constants={"gamma": 1.0})
    assert not r.diverged and r.val_acc > 0.5 and r.loss == "Focal"


def test_same_seed_bit_identical():
    a = train("CE", digits(epochs=3, augment="cutout", seed=7)).to_dict()
    b = train("CE", digits(epochs=3, augment="cutout", seed=7)).to_dict()
    c = train("CE", digits(epochs=3, augment="cutout", seed=8)).to_dict()
    for k in ("wall_time",):
        a.pop(k), b.pop(k), c.pop(k)
    assert a == b
    assert a["final_train_loss"] != c["final_train_loss"]


def test_fashion_mnist_tiny_idx(fmnist_dir):
    r = train("CE", TrainConfig(dataset="fashion-mnist", data_root=str(fmnist_dir), val_size=200, epochs=4,
                                batch_size=64, backend="torch", threads=1))
    assert not r.diverged and r.dataset == "fashion-mnist" and r.data_source == str(fmnist_dir)
    assert r.val_acc > 0.5 and r.test_acc > 0.5  # chance is 0.1
    assert (r.train_size, r.val_size, r.test_size) == (600, 200, 200)


@pytest.mark.skipif(not (REAL_FMNIST / "train-images-idx3-ubyte.gz").exists()
                    and not (REAL_FMNIST / "train-images-idx3-ubyte").exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real():
    r = train("CE", TrainConfig(dataset="fashion-mnist", train_size=3000, val_size=1000, epochs=2,
                                backend="torch", evaluate_test=False, threads=1,
                                data_root=str(REAL_FMNIST)))
    assert not r.diverged and r.val_acc > 0.6 and r.test_acc is None and r.test_size == 0


def test_missing_dataset_raises_with_path(tmp_path):
    with pytest.raises(DatasetError) as err:
        train("CE", TrainConfig(dataset="fashion-mnist", data_root=str(tmp_path / "void")))
    assert str(tmp_path / "void") in str(err.value) and "dataset-fashion-mnist" in str(err.value)
    with pytest.raises(DatasetError, match="--download"):
        train("CE", TrainConfig(dataset="cifar10", data_root=str(tmp_path / "void")))


class NaNLoss(torch.nn.Module):
    def forward(self, logits, target):
        return logits.sum() * float("nan")


def test_nan_loss_is_a_failed_evaluation():
    r = train(NaNLoss(), digits(epochs=2))
    assert r.diverged and "NaN" in r.reason and r.steps == 1 and r.test_acc is None
    assert r.loss == "NaNLoss" and r.backend == "custom"
    json.dumps(r.to_dict())


def test_exploding_loss_is_a_failed_evaluation():
    calls = []

    def exploding(logits, target):
        calls.append(1)
        return torch.nn.functional.cross_entropy(logits, target) * 10.0 ** len(calls)

    r = train(exploding, digits(epochs=2))
    assert r.diverged and "exploded" in r.reason and r.loss == "exploding"


def test_loss_exceptions_are_errors_not_divergence():
    from nlfs.train import ConfigError, TrainingError

    def raising(logits, target):
        raise RuntimeError("kernel exploded")

    with pytest.raises(TrainingError, match="RuntimeError.*kernel exploded"):
        train(raising, digits(epochs=1))
    with pytest.raises(ConfigError, match="could not be built"):
        train("y * * p", digits(epochs=1))  # syntax error
    with pytest.raises(ConfigError, match="nonsense"):
        train("CE", digits(epochs=1, backend="nonsense"))


def test_check_config_stops_before_any_work():
    from nlfs.train import ConfigError, check_config

    check_config(digits(epochs=1), "CE")
    for cfg, loss, match in [(digits(backend="triton"), "CE", "triton"),
                             (digits(model="no-such-net"), "CE", "no-such-net"),
                             (digits(dataset="imagenet"), "CE", "imagenet"),
                             (digits(optimizer="lion"), "CE", "optimizer"),
                             (digits(), "y * * p", "position|column|\\^")]:
        if match == "triton" and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET")):
            continue
        with pytest.raises(ConfigError, match=match):
            check_config(cfg, loss)


def test_train_cli_exits_non_zero_naming_the_token(capsys):
    from nlfs.train.__main__ import main

    assert main(["--loss", "y * * p", "--dataset", "digits", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "*" in err and "error" in err


def test_accuracy_collapse_detected():
    step = []

    def sabotage(logits, target):
        step.append(1)
        ce = torch.nn.functional.cross_entropy(logits, target)
        # learn for 4 epochs, then push every image to class 0 (accuracy collapses, loss stays bounded)
        if len(step) > 4 * 17:
            return -torch.log_softmax(logits, 1)[:, 0].mean()
        return ce

    r = train(sabotage, digits(epochs=8, lr=0.05))
    assert r.diverged and "collapsed" in r.reason, r


def _backends_for_probs():
    out = []
    for name in ("torch", "cpp", "triton"):
        reason = BACKENDS.get(name, "unknown")
        out.append(pytest.param(name, marks=pytest.mark.skipif(bool(reason), reason=reason or "")))
    return out


@pytest.mark.parametrize("backend", _backends_for_probs())
@pytest.mark.parametrize("augment", ["mixup", "cutmix"])
def test_probability_targets(backend, augment):
    # triton runs on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py)
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    r = train("CE", digits(epochs=6, augment=augment, backend=backend, device=device))
    assert not r.diverged and r.backend == backend and r.augment == augment
    assert r.val_acc > 0.35 and math.isfinite(r.final_train_loss)  # chance 0.1; flips hurt 8x8 digits


@pytest.mark.parametrize("augment", ["flipcrop", "cutout", "randaugment", "autoaugment"])
def test_other_augments_run(augment):
    r = train("CE", digits(epochs=2, augment=augment))
    assert not r.diverged and r.val_acc > 0.2


def test_steps_budget_adam_no_test():
    r = train("CE", digits(steps=25, optimizer="adam", evaluate_test=False, eval_every=10,
                           schedule="linear"))
    assert r.steps == 25 and r.test_acc is None and [h[0] for h in r.history] == [10, 20, 25]
    assert not r.diverged and r.optimizer == "adam" and r.lr == pytest.approx(3e-3)


def test_resnet9v2_trains():
    r = train("CE", digits(model="resnet9v2", epochs=3))
    assert not r.diverged and r.model == "resnet9v2" and r.val_acc > 0.15


def test_cli_json_last_line():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "nlfs.train", "--loss", "CE", "--dataset", "digits",
                          "--epochs", "2", "--backend", "torch", "--seed", "0", "--json", "--threads", "1"],
                         capture_output=True, text=True, check=True, env=env, timeout=120)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["dataset"] == "digits" and rec["loss"] == "CE" and rec["steps"] == 2 * 17
    bad = subprocess.run([sys.executable, "-m", "nlfs.train", "--dataset", "fashion-mnist", "--data-root",
                          "/no/such/dir"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "/no/such/dir" in bad.stderr


def test_single_spike_is_not_divergence_and_progress_bar(capsys):
    calls = []

    def spiky(logits, target):
        calls.append(1)
        ce = torch.nn.functional.cross_entropy(logits, target)
        return ce + ce.detach() * 1e6 if len(calls) == 5 else ce  # huge value, normal gradient

    r = train(spiky, digits(epochs=2, progress=True))
    assert not r.diverged, r.reason


def test_label_noise_flips_training_labels_only():
    from nlfs.data import load_dataset, make_splits, with_label_noise

    ds = load_dataset("digits")
    sp = make_splits(ds, 300, None, 0)
    noisy = with_label_noise(sp, 0.2, ds.num_classes, seed=0)
    changed = (noisy.labels != sp.labels).nonzero().flatten()
    assert set(changed.tolist()) <= set(sp.train.tolist())  # validation and test labels stay clean
    assert 0.15 < len(changed) / len(sp.train) < 0.25  # about the rate, each flip to another class
    again = with_label_noise(sp, 0.2, ds.num_classes, seed=0)
    assert torch.equal(again.labels, noisy.labels) and with_label_noise(sp, 0.0, 10) is sp
    r = train("CE", digits(epochs=2, label_noise=0.2))
    assert not r.diverged and r.val_acc > 0.5


def test_cpu_evaluation_in_slices_counts_what_one_batch_counts():
    """The CPU evaluates at most ``CPU_EVAL_BATCH`` images at a time, for speed: the accuracy is the
    one a single forward pass over the whole evaluation batch gives."""
    from types import SimpleNamespace

    from nlfs.data import Augment
    from nlfs.models import make_model
    from nlfs.train._loop import CPU_EVAL_BATCH, evaluate

    torch.manual_seed(0)
    model = make_model("surrogate", (1, 28, 28), 10).to(memory_format=torch.channels_last).eval()
    n = 4 * CPU_EVAL_BATCH + 37  # a ragged last slice
    images, labels = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    with torch.no_grad():  # one batch of all n: the logits a larger evaluation batch gives
        logits = model(images.contiguous(memory_format=torch.channels_last))
    splits = SimpleNamespace(images=images, labels=labels)
    augment = Augment("none", 0.0, 1.0, 10, 28)
    sizes = []
    model.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    acc = evaluate(model, model, splits, torch.arange(n), augment, torch.device("cpu"), "none", True, n)
    assert sum(sizes) == n and max(sizes) == CPU_EVAL_BATCH  # in slices, though asked for one batch of n
    assert acc == (logits.argmax(1) == labels).sum().item() / n
    assert 0.02 < acc < 0.5  # an untrained network: neither all right nor all one class
