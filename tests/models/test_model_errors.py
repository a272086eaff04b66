"""A bad ``--model`` (model=) is one line naming it and what is wrong, before any work: a user's module
that fails to import (a syntax error, an exception at its top level), an unknown name on any data, a
file path where module:factory belongs."""

import numpy as np
import pytest

from nlfs import evolve
from nlfs.models import ModelError, make_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHOICES = "choose one of surrogate, surrogate-narrow, resnet9v2"


def _one_line(capsys, tool="nlfs.evolve") -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{tool}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _evolve_refuses(tmp_path, capsys, *argv) -> str:
    """``nlfs.evolve`` with ``argv`` exits 2 with one line, and leaves no run directory behind."""
    run = tmp_path / "run"
    assert evolve.main(["--run-dir", str(run), "--budget", "2", "--workers", "1", "--threads", "1",
                        "--no-progress", *argv]) == 2
    assert not run.exists()  # refused before the run directory (and its run.db) was made: nothing trained
    return _one_line(capsys)


@pytest.fixture
def wine(tmp_path):
    from sklearn.datasets import load_wine

    d = load_wine()
    path = tmp_path / "wine.npz"
    np.savez(path, x_train=d.data, y_train=d.target)
    return str(path)


def test_a_module_with_a_syntax_error_is_one_line_naming_its_file_and_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "nlfs_bad_syntax_models.py").write_text("import torch\n\nthis is a syntax error\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError) as err:
        make_model("nlfs_bad_syntax_models:tiny", (1, 8, 8), 10)
    text = str(err.value)
    assert "cannot import module 'nlfs_bad_syntax_models'" in text and "SyntaxError" in text
    assert f"{tmp_path / 'nlfs_bad_syntax_models.py'} line 3" in text and "\n" not in text
    line = _evolve_refuses(tmp_path, capsys, "--dataset", "digits", "--model", "nlfs_bad_syntax_models:tiny")
    assert "model nlfs_bad_syntax_models:tiny: cannot import module 'nlfs_bad_syntax_models': SyntaxError in " \
           f"{tmp_path / 'nlfs_bad_syntax_models.py'} line 3: " in line


def test_any_exception_while_importing_is_one_line_naming_module_type_and_message(tmp_path, monkeypatch, capsys):
    (tmp_path / "nlfs_raising_models.py").write_text(
        "import torch\n\ndef _setup():\n    raise RuntimeError('no config file')\n\n_setup()\n")
    (tmp_path / "nlfs_attr_models.py").write_text("import torch\nWIDTH = torch.no_such_attribute\n"
                                                  "def tiny(shape, classes):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=r"importing module 'nlfs_raising_models' raised RuntimeError: no config "
                                         r"file \(.*nlfs_raising_models.py line 4\)"):
        make_model("nlfs_raising_models:tiny", (1, 8, 8), 10)
    # an AttributeError while importing is the module's fault, not a missing factory
    with pytest.raises(ModelError) as err:
        make_model("nlfs_attr_models:tiny", (1, 8, 8), 10)
    text = str(err.value)
    assert "importing module 'nlfs_attr_models' raised AttributeError" in text and "no_such_attribute" in text
    assert "nlfs_attr_models.py line 2" in text and "has no 'tiny'" not in text
    line = _evolve_refuses(tmp_path, capsys, "--dataset", "digits", "--model", "nlfs_raising_models:tiny")
    assert "RuntimeError: no config file" in line


@pytest.mark.parametrize("shape", [(13,), (1, 8, 8)])
def test_an_unknown_name_is_unknown_on_any_data(shape):
    for name in ("nosuchmodel", "mymodels"):
        with pytest.raises(ModelError) as err:
            make_model(name, shape, 3)
        text = str(err.value)
        assert text.startswith(f"unknown model {name!r}; {CHOICES}") and "module:factory" in text
        assert "needs images" not in text
    with pytest.raises(ModelError, match="needs images"):  # a known image model on feature vectors
        make_model("resnet18", (13,), 3)


def test_an_importable_module_without_its_factory_is_told_to_name_it(tmp_path, monkeypatch):
    (tmp_path / "nlfs_named_models.py").write_text("def tiny(shape, classes):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=r"unknown model 'nlfs_named_models'.*module 'nlfs_named_models' is "
                                         r"importable: name its factory, nlfs_named_models:FACTORY"):
        make_model("nlfs_named_models", (13,), 3)


def test_a_file_path_is_told_to_be_a_module_name(tmp_path):
    for model in (f"{tmp_path}/mymodels.py:tiny", f"{tmp_path}/mymodels.py"):
        for shape in ((13,), (1, 8, 8)):
            with pytest.raises(ModelError) as err:
                make_model(model, shape, 3)
            text = str(err.value)
            assert text.startswith(f"model {model!r} is a file path") and "importable by name" in text
            assert f"with {tmp_path} on PYTHONPATH (or as the working directory)" in text
            assert "needs images" not in text and "unknown model" not in text
    assert "mymodels:tiny with" in str(pytest.raises(ModelError, make_model, f"{tmp_path}/mymodels.py:tiny",
                                                     (13,), 3).value)
    # a file name with the colon form: its import fails, and the line says to drop the .py
    with pytest.raises(ModelError, match=r"cannot import module 'mymodels.py' .*give the module's name, not its "
                                         r"file: mymodels:tiny"):
        make_model("mymodels.py:tiny", (13,), 3)


def test_evolve_on_feature_vectors_names_the_model_problem(tmp_path, capsys, wine):
    line = _evolve_refuses(tmp_path, capsys, "--dataset", wine, "--model", "nosuchmodel")
    assert line == f"nlfs.evolve: error: unknown model 'nosuchmodel'; {CHOICES}" + line.split(CHOICES, 1)[1]
    assert "module:factory" in line and "feature vectors" not in line
    line = _evolve_refuses(tmp_path, capsys, "--dataset", wine, "--model", "mymodels")
    assert "unknown model 'mymodels'" in line and "feature vectors" not in line
    line = _evolve_refuses(tmp_path, capsys, "--dataset", wine, "--model", "/tmp/x/mymodels.py:tiny")
    assert "'/tmp/x/mymodels.py:tiny' is a file path" in line and "mymodels:tiny with /tmp/x on PYTHONPATH" in line
    assert "feature vectors" not in line
    line = _evolve_refuses(tmp_path, capsys, "--dataset", wine, "--model", "resnet18")
    assert "model 'resnet18' needs images (C, H, W); this data is feature vectors (13,)" in line
    assert line.count("resnet18") == 1  # named once, not "model 'resnet18': model 'resnet18' ..."
