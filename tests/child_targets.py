"""Functions the child-process tests run in a fresh interpreter (named `tests.child_targets:...`)."""

from __future__ import annotations

import os
import signal
import sys


def shout(argument: str) -> str:
    return argument.upper()


def kill_self(argument: str) -> str:
    print("about to be killed", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return argument


def raise_core_ml_error(argument: str) -> str:
    raise RuntimeError(f'{{\n    NSLocalizedDescription = "{argument}";\n}}')


def exit_without_result(argument: str) -> str:
    os._exit(3)


def hang(argument: str) -> str:
    signal.pause()
    return argument
