"""CI turns "backend unavailable" skips into failures (NLFS_REQUIRE_BACKENDS, set by .ci/run); a user
without a compiler still gets skips."""

from pathlib import Path

import pytest

import tests.conftest as conftest

ROOT = Path(__file__).resolve().parents[1]


def test_unavailable_backend_skips_for_users_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(conftest, "REQUIRE_BACKENDS", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.unavailable("backend 'cpp' is not available: not built")
    monkeypatch.setattr(conftest, "REQUIRE_BACKENDS", True)
    with pytest.raises(pytest.fail.Exception, match="NLFS_REQUIRE_BACKENDS is set but backend 'cpp'"):
        conftest.unavailable("backend 'cpp' is not available: not built")


def test_require_backend_reads_the_backends_own_reason(monkeypatch):
    import nlfs.backends

    monkeypatch.setattr(nlfs.backends, "available_backends", lambda: {"cpp": "not built", "torch": ""})
    monkeypatch.setattr(conftest, "REQUIRE_BACKENDS", True)
    conftest.require_backend("torch")
    with pytest.raises(pytest.fail.Exception, match="not built"):
        conftest.require_backend("cpp")


def test_ci_script_requires_the_backends():
    assert "export NLFS_REQUIRE_BACKENDS=1" in (ROOT / ".ci" / "run").read_text()
