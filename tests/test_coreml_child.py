"""A check run in a fresh interpreter: a child that kills itself fails the check (naming the
signal) instead of the build; one that raises reports Core ML's line; one that succeeds returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sortformer_build.coreml.child import run_in_child
from sortformer_build.coreml.coreml_errors import CoreMLError
from sortformer_build.errors import BuildError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child imports `tests.child_targets` wherever pytest was started from."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _run(function: str, argument: str = "x", timeout: float = 120) -> str:
    return run_in_child(f"tests.child_targets:{function}", argument, "the check", timeout)


def test_a_child_that_succeeds_returns_its_result() -> None:
    assert _run("shout", "first prediction") == "FIRST PREDICTION"


def test_a_child_killed_by_a_signal_fails_the_check_and_names_it() -> None:
    with pytest.raises(CoreMLError) as caught:
        _run("kill_self")
    assert str(caught.value) == "the check killed its process with SIGKILL (it said: about to be killed)"
    assert isinstance(caught.value, BuildError)


def test_a_child_that_raises_reports_core_mls_line() -> None:
    with pytest.raises(CoreMLError, match=r"^the check failed: MIL program does not compile: fp16 input$"):
        _run("raise_core_ml_error", "MIL program does not compile: fp16 input")


def test_a_child_that_exits_without_a_result() -> None:
    with pytest.raises(CoreMLError, match=r"^the check ended with exit status 3$"):
        _run("exit_without_result")


def test_a_function_that_does_not_exist() -> None:
    with pytest.raises(CoreMLError, match=r"^the check failed: module 'tests.child_targets' has no attr"):
        _run("no_such_function")


def test_a_child_that_hangs_is_killed_at_the_timeout() -> None:
    with pytest.raises(CoreMLError, match=r"^the check did not finish in 3 s; its process was killed$"):
        _run("hang", timeout=3)
