"""What an artifact was built with (tool versions), and which code publishes a release."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from sortformer_build import __version__
from sortformer_build.records.manifest import ToolVersions
from sortformer_build.records.release import Provenance

_TOOLS = ("torch", "coremltools", "nemo_toolkit", "numpy")


def tool_versions() -> ToolVersions:
    """Versions of everything that shapes an artifact besides its config, weights and this
    package's code (whose digest each cache key names for itself), read without importing them."""
    return ToolVersions(
        python=platform.python_version(),
        **{name: _version(name) for name in _TOOLS},
        sortformer_build=_version("sortformer-build"),
    )


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


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
