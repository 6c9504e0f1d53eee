"""What pip reads: the Python requirement agrees with what the pinned dependencies need."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).parent.parent


def _minimum(specifier: SpecifierSet) -> Version:
    floors = [Version(spec.version) for spec in specifier if spec.operator in (">=", "==", "~=")]
    return max(floors)


def test_requires_python_is_what_the_pins_allow() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = _minimum(SpecifierSet(project["requires-python"]))
    pins = [
        line.split("==")[0] for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    ]
    needed = {}
    for name in pins:
        try:
            requirements = metadata.metadata(name).get_all("Requires-Python") or []
        except metadata.PackageNotFoundError:
            continue  # pinned for another platform or extra
        if requirements and requirements[0]:
            needed[name] = _minimum(SpecifierSet(requirements[0]))
    strictest = max(needed.values())
    assert ours >= strictest, {name: str(v) for name, v in needed.items() if v > ours}
    assert project["requires-python"] == f">={strictest.major}.{strictest.minor}"
