import numpy as np
import pytest
import torch

from nlfs.data import (
    DatasetError,
    canonical_name,
    load_cifar,
    load_dataset,
    load_fashion_mnist,
    make_splits,
    read_idx,
)

from .fakes import write_cifar, write_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small ops: one thread is as fast, far faster on a busy CPU


def test_digits_always_present():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.shape == (1, 8, 8) and ds.train_x.dtype == torch.uint8
    assert ds.num_classes == 10 and ds.test_x is None and len(ds.train_y) == 1797
    assert load_dataset("digits") is ds  # cached in-process


def test_fashion_mnist_idx_gz_and_raw(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fashion-mnist", gz_train=True, gz_test=False)
    ds = load_fashion_mnist(folder)
    assert ds.name == "fashion-mnist" and ds.shape == (1, 28, 28)
    assert ds.train_x.shape == (600, 1, 28, 28) and ds.test_x.shape == (200, 1, 28, 28)
    assert ds.train_y.dtype == torch.int64 and int(ds.train_y.max()) <= 9
    assert ds.source == str(folder)
    # a parent holding a fashion-mnist/ sub-folder, and $NLFS_DATA
    assert load_fashion_mnist(tmp_path).train_x.shape[0] == 600


def test_fashion_mnist_env_var(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("NLFS_DATA", str(tmp_path))
    assert load_dataset("fashion_mnist").source == str(tmp_path / "fashion-mnist")


def test_missing_fashion_mnist_names_path_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_root=missing)
    msg = str(err.value)
    assert str(missing) in msg and "apt-get install dataset-fashion-mnist" in msg


def test_corrupt_idx_names_file(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm", gz_train=False)
    bad = folder / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="corrupt") as err:
        load_fashion_mnist(folder)
    assert str(bad) in str(err.value)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x56\x78garbage")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(folder / "train-labels-idx1-ubyte")


def test_cifar10_pickle_folder(tmp_path):
    write_cifar(tmp_path, "cifar10", per_batch=20)
    ds = load_cifar("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.shape == (3, 32, 32)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert ds.classes[:2] == ["class0", "class1"] and ds.num_classes == 10
    assert load_dataset("cifar-10", data_root=tmp_path).train_x.shape[0] == 100


def test_cifar100_pickle_folder(tmp_path):
    write_cifar(tmp_path, "cifar100", per_batch=30)
    ds = load_dataset("cifar100", data_root=tmp_path)
    assert ds.num_classes == 100 and ds.train_x.shape == (30, 3, 32, 32)


def test_cifar_missing_says_download(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_root=tmp_path / "x")
    assert str(tmp_path / "x" / "cifar-10-batches-py") in str(err.value) and "--download" in str(err.value)


def test_cifar_corrupt_batch(tmp_path):
    folder = write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar("cifar10", tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        canonical_name("imagenet")


def test_splits_seeded_disjoint_and_test_free():
    ds = load_dataset("digits")
    a = make_splits(ds, 300, 500, seed=3)
    b = make_splits(ds, 300, 500, seed=3)
    c = make_splits(ds, 300, 500, seed=4)
    assert a.sizes == {"train": 500, "val": 300, "test": 360}
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val) and torch.equal(a.test, b.test)
    assert not torch.equal(a.val, c.val)
    sets = [set(a.train.tolist()), set(a.val.tolist()), set(a.test.tolist())]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert make_splits(ds, 300, seed=3, include_test=False).test is None
    with pytest.raises(ValueError, match="train_size"):
        make_splits(ds, 300, 5000)


def test_splits_official_test(tmp_path):
    ds = load_fashion_mnist(write_fashion_mnist(tmp_path / "fm"))
    s = make_splits(ds, 100, seed=0)
    assert s.sizes == {"train": 500, "val": 100, "test": 200}
    assert torch.equal(s.test, torch.arange(600, 800))
    assert np.array_equal(s.images[s.test].numpy(), ds.test_x.numpy())
