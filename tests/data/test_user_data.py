"""A user's own data: ImageFolder directories, .npz/.pt files, module:function, arrays in memory; the
stratified seeded splits; one clear error for each kind of bad input."""

import sys

import numpy as np
import pytest
import torch

import nlfs.data._user
from nlfs.data import (
    USER_TEST_FRACTION,
    Augment,
    DatasetError,
    UnlearnableClassWarning,
    as_dataset,
    canonical_name,
    load_dataset,
    make_splits,
    save_dataset,
    split_indices,
)

from .user_data import digits_images, write_image_folder, write_png, write_wine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_image_folder_classes_and_seeded_stratified_splits(tmp_path):
    root = write_image_folder(tmp_path / "digits", per_class=10)
    ds = load_dataset(str(root))
    assert ds.name == str(root.resolve()) and ds.shape == (1, 8, 8) and ds.train_x.dtype == torch.uint8
    assert ds.classes == sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    assert ds.num_classes == 10 and len(ds.train_y) == 100 and ds.test_x is None and ds.split_by_fraction
    assert load_dataset(str(root)) is ds  # cached per path and modification time
    # the folder name "eight" is class 0: its images are digit 8
    x, y = digits_images(10)
    assert torch.equal(ds.train_x[ds.train_y == 0][0, 0], torch.from_numpy(x[y == 8][0]))
    sp = make_splits(ds, None, seed=3)
    assert sp.sizes == {"train": 60, "val": 20, "test": 20}  # 20% test per class, then 20% of the rest
    for part in (sp.train, sp.val, sp.test):  # stratified: every class in every part
        assert torch.bincount(ds.train_y[part], minlength=10).min() >= 1
    assert len(set(sp.train.tolist()) | set(sp.val.tolist()) | set(sp.test.tolist())) == 100
    other = make_splits(ds, None, seed=4)
    assert torch.equal(sp.test, other.test)  # one test part for every run
    assert not torch.equal(sp.val.sort()[0], other.val.sort()[0])
    assert torch.equal(make_splits(ds, None, seed=3).train, sp.train)
    assert make_splits(ds, 30, seed=3).sizes["val"] == 30  # an int is still a count
    assert make_splits(ds, None, train_size=7, seed=3).sizes["train"] == 7


def test_image_folder_with_split_folders(tmp_path):
    root = write_image_folder(tmp_path / "split", per_class=8, splits=True)
    ds = load_dataset(str(root))
    assert len(ds.train_y) == 40 and len(ds.val_y) == 20 and len(ds.test_y) == 20
    sp = make_splits(ds, None, seed=1)
    assert sp.sizes == {"train": 40, "val": 20, "test": 20}
    assert torch.equal(sp.labels[sp.val].cpu(), ds.val_y) and torch.equal(sp.labels[sp.test].cpu(), ds.test_y)
    with pytest.raises(ValueError, match="own validation part"):
        split_indices(ds, 10)


def test_image_sizes_refused_then_resized(tmp_path):
    root = write_image_folder(tmp_path / "mixed", per_class=3)
    write_png(root / "one" / "big.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"different sizes.*8x8.*big.png is 12x10.*--resize"):
        load_dataset(str(root))
    ds = load_dataset(str(root), resize=(16, 16))
    assert ds.shape == (1, 16, 16) and len(ds.train_y) == 31


def test_npz_features_pt_images_and_function(tmp_path, monkeypatch):
    ds = load_dataset(str(write_wine(tmp_path / "wine.npz")))
    assert ds.features and ds.shape == (13,) and ds.train_x.dtype == torch.float32
    assert ds.classes == ["class_0", "class_1", "class_2"] and len(ds.train_y) == 178
    assert np.allclose(ds.mean, ds.train_x.double().mean(0).numpy())  # per feature, from the training part
    sp = make_splits(ds, None)
    assert sp.sizes["test"] == pytest.approx(178 * USER_TEST_FRACTION, abs=2)
    a = Augment("none", ds.mean, ds.std, 3, 13, features=True)
    z = a.eval(sp.images[sp.train])
    assert z.shape == (len(sp.train), 13) and abs(float(z.mean())) < 0.2
    with pytest.raises(ValueError, match="feature vectors"):
        Augment("flipcrop", ds.mean, ds.std, 3, 13, features=True)

    x, y = digits_images(6)
    path = tmp_path / "digits.pt"  # (N, H, W, C) float images in [0, 1], given train and test parts
    hwc = torch.from_numpy(x[..., None] / 255.0).float()
    torch.save({"x_train": hwc[:40], "y_train": torch.from_numpy(y[:40]), "x_test": hwc[40:],
                "y_test": torch.from_numpy(y[40:])}, path)
    monkeypatch.setattr(nlfs.data._user, "_WARNED", set())  # warned about nothing yet in this process
    with pytest.warns(UnlearnableClassWarning, match=r"y_test holds classes 7, 8, 9 that y_train lacks \(18 of its 20"):
        ds = load_dataset(str(path))  # allowed, and said
    assert ds.shape == (1, 8, 8) and ds.train_x.dtype == torch.float32 and len(ds.test_y) == 20
    assert Augment("none", ds.mean, ds.std, 10, 8).eval(ds.train_x).std() == pytest.approx(1, abs=0.05)

    (tmp_path / "my_source.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    rng = np.random.default_rng(0)\n"
        "    x = rng.normal(size=(60, 4))\n"
        "    return x, np.where(x[:, 0] > 0, 'pos', 'neg')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert canonical_name("my_source:load") == "my_source:load"
    ds = load_dataset("my_source:load")
    assert ds.features and ds.classes == ["neg", "pos"] and ds.num_classes == 2


def test_as_dataset_takes_arrays_tensors_and_torch_datasets(tmp_path):
    x, y = digits_images(5)
    from_arrays = as_dataset((x, y))
    assert from_arrays.shape == (1, 8, 8) and from_arrays.train_x.dtype == torch.uint8
    tds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    assert torch.equal(as_dataset(tds).train_x, from_arrays.train_x)
    path = save_dataset(from_arrays, tmp_path / "saved.pt")
    back = as_dataset(path)
    assert torch.equal(back.train_x, from_arrays.train_x) and back.classes == from_arrays.classes


@pytest.mark.parametrize("data, message", [
    ({"x_train": np.zeros((10, 3)), "y_train": np.zeros(9, np.int64)}, "x_train has 10 rows but y_train has 9"),
    ({"x_train": np.zeros((10, 3)), "y_train": np.arange(10) % 2 * 0.5}, r"whole numbers.*y_train\[1\] is 0.5"),
    ({"x_train": np.zeros((10, 3)), "y_train": np.arange(10) - 1}, r"label -1 in y_train is outside"),
    ({"x_train": np.zeros((4, 3)), "y_train": np.array([0, 1, 2, 1]), "classes": np.array(["a", "b"])},
     r"label 2 in y_train is outside 0..1 \(2 classes\)"),
    ({"x_train": np.where(np.eye(10, 3) > 0, np.nan, 0.0), "y_train": np.arange(10) % 2},
     "row 0 holds NaN or Inf"),
    ({"x_train": np.zeros((10, 3)), "y_train": np.arange(10) % 2, "x_test": np.zeros((2, 4)),
      "y_test": np.zeros(2, np.int64)}, "different sample shapes"),
    ({"x": np.zeros((10, 3))}, "needs x_train and y_train"),
])
def test_bad_arrays_one_clear_error(tmp_path, data, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **data)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_stray_label_names_the_empty_classes_not_a_small_one(tmp_path):
    from sklearn.datasets import load_wine

    d = load_wine()
    y = d.target.copy()
    y[0] = 7  # 3 classes
    path = tmp_path / "wine7.npz"
    np.savez(path, x_train=d.data, y_train=y)
    with pytest.raises(DatasetError, match=r"labels in y_train run 0..7 but classes 3, 4, 5, 6 have no samples "
                                           r"\(labels must be 0..C-1; is a label out of range\?\)") as err:
        as_dataset(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    named = tmp_path / "wine7_classes.npz"
    np.savez(named, x_train=d.data, y_train=y, classes=np.array(d.target_names))
    with pytest.raises(DatasetError, match=r"label 7 in y_train is outside 0..2 \(3 classes\)"):
        as_dataset(named)


def test_a_stray_label_in_the_validation_or_test_labels_is_named_too(tmp_path, monkeypatch):
    from sklearn.datasets import load_wine

    d = load_wine()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = d.data[order], d.target[order]
    y_test = y[:20].copy()
    y_test[3] = 9  # 3 classes
    path = tmp_path / "wine_test9.npz"
    np.savez(path, x_train=x[20:], y_train=y[20:], x_test=x[:20], y_test=y_test)
    with pytest.raises(DatasetError, match=r"label 9 in y_test is above y_train's 0..2 and leaves classes "
                                           r"3, 4, 5, 6, 7, ... \(6 classes\) with no samples in any part") as err:
        as_dataset(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    # a class only the held-out labels hold (a small training split missed it) stays a class
    keep = y[20:] != 2
    fine = tmp_path / "wine_train_misses_2.npz"
    np.savez(fine, x_train=x[20:][keep], y_train=y[20:][keep], x_test=x[:20], y_test=y[:20])
    monkeypatch.setattr(nlfs.data._user, "_WARNED", set())  # warned about nothing yet in this process
    with pytest.warns(UnlearnableClassWarning, match="y_test holds class 2 that y_train lacks"):  # allowed, and said
        assert as_dataset(fine).num_classes == 3
    # a test part that lacks the highest classes is no gap
    ds = as_dataset({"x_train": d.data, "y_train": d.target, "x_test": d.data[:5], "y_test": d.target[:5]})
    assert ds.num_classes == 3 and set(ds.test_y.tolist()) == {0}


def test_class_too_small_for_the_validation_split(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=np.random.default_rng(0).normal(size=(21, 2)), y_train=np.r_[np.zeros(20), 1].astype(int))
    ds = load_dataset(str(path))
    with pytest.raises(DatasetError, match="class 1 has only 1 sample: too few for the test split"):
        split_indices(ds)


def test_bad_folders_and_sources(tmp_path):
    flat = tmp_path / "flat"
    write_png(flat / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="not an ImageFolder layout: no class subfolders"):
        load_dataset(str(flat))
    (tmp_path / "broken" / "cat").mkdir(parents=True)
    (tmp_path / "broken" / "cat" / "x.png").write_bytes(b"not a png")
    (tmp_path / "broken" / "dog").mkdir()
    write_png(tmp_path / "broken" / "dog" / "d.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"x.png: cannot decode the image"):
        load_dataset(str(tmp_path / "broken"))
    with pytest.raises(DatasetError, match="no such file or directory"):
        canonical_name(str(tmp_path / "missing.npz"))
    with pytest.raises(DatasetError, match="cannot import module 'no_such_module_xyz'"):
        load_dataset("no_such_module_xyz:load")
    sys.modules.pop("no_such_module_xyz", None)
    with pytest.raises(DatasetError, match="has no 'missing'"):
        load_dataset("json:missing")
    with pytest.raises(DatasetError, match=r"json:dumps: dumps\(\) raised TypeError"):
        load_dataset("json:dumps")


@pytest.mark.parametrize("given, size", [(14, (14, 14)), ("14", (14, 14)), ("14x12", (14, 12)), ("14,12", (14, 12)),
                                         ((14, 12), (14, 12)), ([9], (9, 9))])
def test_one_reading_of_an_image_size(given, size):
    from nlfs.data import image_size

    assert image_size(given) == size


@pytest.mark.parametrize("given", [0, "a", True, 14.5, (1, 2, 3), "14x0", None, (14.5, 3)])
def test_a_bad_image_size_says_what_is_expected(given):
    from nlfs.data import image_size

    with pytest.raises(ValueError, match=r"resize must be S or \(H, W\) of positive pixels"):
        image_size(given)


def test_resize_on_feature_vectors_is_refused_not_ignored(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(40, 8)).astype("float32"), np.arange(40) % 2
    with pytest.raises(DatasetError, match=r"resize is for images; this data holds feature vectors \(samples of "
                                           r"shape \(8,\)\)"):
        as_dataset((x, y), resize=4)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=y)
    with pytest.raises(DatasetError, match=r"f\.npz: resize is for images"):
        load_dataset(str(tmp_path / "f.npz"), resize=(4, 4))
