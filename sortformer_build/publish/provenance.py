"""Which code publishes: this project's version and, from a git checkout, its revision."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

_SOURCE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Provenance:
    version: str
    # `<sha>` or `<sha>-dirty`; None outside a git checkout (an installed wheel).
    git_revision: str | None

    def describe(self) -> str:
        return f"sortformer-build {self.version}, git {self.git_revision or 'revision unknown'}"


def current_provenance() -> Provenance:
    return Provenance(version=__version__, git_revision=_git_revision())


def _git_revision() -> str | None:
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def _git(*args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(_SOURCE), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout.strip()
