"""What pip reads: the Python requirement agrees with what the pinned dependencies need."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
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


def test_the_wheel_holds_every_package_its_configs_and_plugins(tmp_path: Path) -> None:
    """Packages are found, not listed: a new module or config file ships without editing pyproject."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sortformer_build-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(path.relative_to(ROOT))
        for folder in ("sortformer_build", "hydra_plugins")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".yaml") or path.name == "py.typed"
    }
    assert sources <= names, sorted(sources - names)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    info = metadata.metadata("sortformer-build")
    assert info["License-Expression"] == "Apache-2.0"
    from sortformer_build import __version__

    assert __version__ == info["Version"]
