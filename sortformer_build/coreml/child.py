"""Run one function in a fresh interpreter, so that a model which kills its process (Core ML has
been seen to load a model, then die at the first prediction) fails a check instead of the build.

The function is named `module:function`, takes one string and returns one string (JSON of a
record, by convention); the child writes what it returned, or its error in one line, to a
record file the parent reads.
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from sortformer_build.coreml.coreml_errors import CoreMLError, readable
from sortformer_build.records.base import Record, RecordError


class ChildOutcome(Record):
    result: str | None = None
    error: str | None = None


def run_in_child(function: str, argument: str, what: str, timeout: float) -> str:
    """`function(argument)` run in a new interpreter; CoreMLError naming `what` and the signal
    that killed the child, its error, its exit status or the timeout."""
    with tempfile.TemporaryDirectory(prefix="child-") as folder:
        outcome_file = Path(folder) / "outcome.json"
        command = [sys.executable, "-m", __name__, function, argument, str(outcome_file)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CoreMLError(f"{what} did not finish in {timeout:g} s; its process was killed") from None
        said = _last_line(completed.stderr)
        if completed.returncode < 0:
            raise CoreMLError(f"{what} killed its process with {_signal_name(-completed.returncode)}{said}")
        try:
            outcome = ChildOutcome.read(outcome_file)
        except RecordError:
            raise CoreMLError(f"{what} ended with exit status {completed.returncode}{said}") from None
    if outcome.error is not None:
        raise CoreMLError(f"{what} failed: {outcome.error}")
    if outcome.result is None:
        raise CoreMLError(f"{what} returned nothing (exit status {completed.returncode}){said}")
    return outcome.result


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(stderr: str) -> str:
    """What the child said last, often the only clue to why Core ML killed it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f" (it said: {lines[-1]})" if lines else ""


def main(argv: list[str]) -> int:
    function, argument, outcome_file = argv
    try:
        module, _, name = function.partition(":")
        outcome = ChildOutcome(result=getattr(importlib.import_module(module), name)(argument))
    except Exception as error:
        outcome = ChildOutcome(error=readable(error))
    outcome.write(Path(outcome_file))
    return 0 if outcome.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
