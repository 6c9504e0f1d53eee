"""Full-size (117.7 M parameter) synthetic builds through the console script. Minutes each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sortformer_build.lint import Expectation, lint_package
from sortformer_build.package import load_spec, package_size

from .conftest import RELEASE, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nvidia_high(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """The palettized build the issue names, then its fp16 twin (which reuses the conversion)."""
    work = tmp_path_factory.mktemp("full")
    for compression in ("palettized6", "fp16"):
        run = run_cli(
            "variant=nvidia_high",
            f"compression={compression}",
            "checkpoint=synthetic",
            f"cache_dir={shared_cache}",
            cwd=work,
        )
        assert run.returncode == 0, run.output[-3000:]
    return work / "outputs" / "synthetic"


def test_palettized_is_at_most_42_percent_of_fp16(nvidia_high: Path) -> None:
    palettized = package_size(nvidia_high / "palettized" / "SortformerNvidiaHigh_v2.1.mlpackage")
    fp16 = package_size(nvidia_high / "fp16" / "SortformerNvidiaHigh_v2.1.mlpackage")
    assert 200e6 < fp16 < 260e6
    assert palettized / fp16 <= 0.42


@pytest.mark.parametrize(("folder", "nbits"), [("fp16", None), ("palettized", 6)])
def test_full_size_package_passes_every_static_check(
    nvidia_high: Path, folder: str, nbits: int | None
) -> None:
    _, *geometry_numbers = RELEASE["nvidia_high"]
    package = nvidia_high / folder / "SortformerNvidiaHigh_v2.1.mlpackage"
    from sortformer_build.geometry import StreamingGeometry

    expected = Expectation(geometry=StreamingGeometry(*geometry_numbers), d_model=512, nbits=nbits)
    assert lint_package(package, expected) == []
    shapes = {f.name: tuple(f.type.multiArrayType.shape) for f in load_spec(package).description.input}
    assert shapes["chunk"] == (1, 3048, 128) and shapes["spkcache"] == (1, 188, 512)


def test_manifest_counts_the_published_architecture(nvidia_high: Path) -> None:
    record = json.loads((nvidia_high / "palettized" / "SortformerNvidiaHigh_v2.1.json").read_text())
    assert record["parameters"]["total"] == 117_693_960
    assert record["checkpoint"]["source"] == "synthetic"
    assert record["geometry"]["chunk_mel_frames"] == 3048
