"""What an artifact was built with: tool versions and this package's own source."""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib import metadata
from pathlib import Path

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
