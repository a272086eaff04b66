"""Labels in the wrong form and files that are not .npz archives are one line naming the file and the
problem; a validation or test class the training part lacks is allowed, and said once."""

import warnings

import numpy as np
import pytest

import nlfs.data._user
from nlfs.data import DatasetError, UnlearnableClassWarning, as_dataset, clear_cache, load_dataset

from .user_data import write_image_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def wine():
    from sklearn.datasets import load_wine

    d = load_wine()
    return d.data, d.target


def _refused(path, *match) -> str:
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    for m in match:
        assert m in text, text
    return text


def test_one_hot_labels_are_named_with_how_to_convert(tmp_path, wine):
    x, y = wine
    path = tmp_path / "onehot.npz"
    np.savez(path, x_train=x, y_train=np.eye(3)[y])
    text = _refused(path, "y_train has shape (178, 3) and looks one-hot (N, C)",
                    "labels must be class indices of shape (N,) = (178,)", "convert with y_train.argmax(1)")
    assert "rows" not in text  # not "y_train has 534 rows"
    scores = tmp_path / "scores.npz"
    np.savez(scores, x_train=x, y_train=np.random.default_rng(0).random((len(y), 3)))
    _refused(scores, "y_train has shape (178, 3)", "one column per class", "y_train.argmax(1)")
    val = tmp_path / "val_onehot.npz"
    np.savez(val, x_train=x, y_train=y, x_val=x[:10], y_val=np.eye(3)[y[:10]])
    _refused(val, "y_val has shape (10, 3) and looks one-hot", "y_val.argmax(1)")
    # a column or row of labels is still one label per sample
    assert as_dataset((x, y[:, None])).num_classes == 3 and as_dataset((x, y[None, :])).num_classes == 3


def test_a_file_that_is_not_an_npz_archive_is_named(tmp_path, wine):
    text = tmp_path / "notes.npz"
    text.write_text("just some text, renamed\n")
    message = _refused(text, "not an .npz archive (a zip of .npy arrays)", "np.savez('notes.npz'")
    assert "pickled" not in message
    single = tmp_path / "single.npz"
    with open(single, "wb") as fh:
        np.save(fh, wine[0])
    _refused(single, "not an .npz archive", "a single .npy array")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _refused(empty, "not an .npz archive", "the file is empty")
    objects = tmp_path / "objects.npz"
    np.savez(objects, x_train=np.array([[1.0, 2.0], [3.0]], dtype=object), y_train=np.array([0, 1]))
    _refused(objects, "x_train is an object array")


def test_a_class_only_the_validation_part_holds_is_warned_once(tmp_path, wine, monkeypatch):
    monkeypatch.setattr(nlfs.data._user, "_WARNED", set())  # warned about nothing yet in this process
    x, y = wine
    path = tmp_path / "w.npz"
    np.savez(path, x_train=x[y != 2], y_train=y[y != 2], x_val=x[y == 2], y_val=y[y == 2])
    clear_cache()
    with pytest.warns(UnlearnableClassWarning) as caught:
        ds = load_dataset(str(path))
    assert ds.num_classes == 3  # allowed
    texts = [str(w.message) for w in caught if "lacks" in str(w.message)]
    assert len(texts) == 1
    assert texts[0].startswith(f"nlfs: {path}: y_val holds class 2 that y_train lacks (48 of its 48 samples)")
    assert "No loss can learn a class its training split lacks" in texts[0] and "\n" not in texts[0]
    # loaded again (the cache cleared, or as the data in memory), trained, checked: not said again
    from nlfs.train import TrainConfig, check_config, train

    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        clear_cache()
        load_dataset(str(path))
        as_dataset(path)
        cfg = TrainConfig(dataset=str(path), epochs=1, backend="torch", threads=1)
        check_config(cfg)
        train("CE", cfg)
        train("CE", cfg)
    assert not [w for w in again if "lacks" in str(w.message)]


def test_the_warning_names_classes_and_folders_of_an_image_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(nlfs.data._user, "_WARNED", set())  # warned about nothing yet in this process
    root = write_image_folder(tmp_path / "digits", per_class=8, splits=True)
    for f in (root / "train" / "nine").iterdir():
        f.unlink()
    (root / "train" / "nine").rmdir()
    with pytest.warns(UnlearnableClassWarning,
                      match=r"val/ holds class 'nine' that train/ lacks \(2 of its 20 samples\); "
                                         r"test/ holds class 'nine' that train/ lacks \(2 of its 20 samples\)\. "
                                         r"No loss can learn"):
        ds = as_dataset(root)
    assert ds.num_classes == 10


def test_no_warning_when_the_training_part_holds_every_class(tmp_path, wine, monkeypatch):
    monkeypatch.setattr(nlfs.data._user, "_WARNED", set())  # warned about nothing yet in this process
    x, y = wine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = as_dataset({"x_train": x, "y_train": y, "x_test": x[:5], "y_test": y[:5]})
    assert ds.num_classes == 3


def test_a_searchs_worker_processes_do_not_say_it_again(tmp_path, wine, capfd):
    # the driver checks the data (and warns) before any work; each worker loads it again, quietly
    from nlfs.search import make_executor, run_jobs, training_payload
    from nlfs.train import TrainConfig

    x, y = wine
    path = tmp_path / "w.npz"
    np.savez(path, x_train=x[y != 2], y_train=y[y != 2], x_val=x[y == 2], y_val=y[y == 2])
    cfg = TrainConfig(dataset=str(path), steps=2, backend="torch", threads=1).to_dict()
    executor = make_executor("local", workers=2, threads=1)
    try:
        jobs = [(i, training_payload("-y * log(p)", {}, "class_sum", {**cfg, "seed": i}, name="CE")) for i in (0, 1)]
        outs = list(run_jobs(executor, jobs))
    finally:
        executor.close()
    assert all(out["status"] == "ok" for _, out in outs)
    assert "lacks" not in capfd.readouterr().err
