"""What an artifact was built with: tool versions and this package's own source."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sortformer_build import __version__

_TOOLS = ("torch", "coremltools", "nemo_toolkit", "numpy")


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes an artifact, read without importing the packages."""
    versions = {name: _version(name) for name in _TOOLS}
    versions["sortformer-build"] = f"{_version('sortformer-build')}+{code_fingerprint()[:12]}"
    return versions


def python_version() -> str:
    return platform.python_version()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


@functools.cache
def code_fingerprint() -> str:
    """Hash of this package's source: any code change invalidates what it built. Read once per
    process: the code a process runs is the code it imported."""
    digest = hashlib.sha256()
    root = Path(__file__).parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Provenance:
    """Which code built or publishes a release."""

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
    source = Path(__file__).resolve().parent
    completed = subprocess.run(
        ["git", "-C", str(source), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout.strip()
