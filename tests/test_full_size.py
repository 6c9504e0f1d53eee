"""Full-size (117.7 M parameter) synthetic builds through the console script. Minutes each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sortformer_build.coreml.package import package_size, read_package
from sortformer_build.geometry import OfflineGeometry, StreamingGeometry
from sortformer_build.verify.lint import Expectation, lint_package

from .conftest import OFFLINE, RELEASE, run_cli

pytestmark = pytest.mark.slow

FILES = {variant: RELEASE[variant][0] for variant in ("default", "nvidia_high")}
FOLDERS = {"fp16": None, "palettized": 6}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """The issue's job (nvidia_high, palettized6) alone first, then Default and the fp16 twins
    in one sweep (which reuses the converted programs)."""
    work = tmp_path_factory.mktemp("full")
    for overrides in (
        ["variant=nvidia_high", "compression=palettized6"],
        ["--multirun", "variant=default,nvidia_high", "compression=fp16,palettized6"],
    ):
        run = run_cli(*overrides, "checkpoint=synthetic", f"cache_dir={shared_cache}", cwd=work)
        assert run.returncode == 0, run.output[-3000:]
    return work / "outputs" / "synthetic"


@pytest.mark.parametrize("variant", sorted(FILES))
def test_palettized_is_at_most_42_percent_of_fp16(release: Path, variant: str) -> None:
    palettized = package_size(release / "palettized" / f"{FILES[variant]}.mlpackage")
    fp16 = package_size(release / "fp16" / f"{FILES[variant]}.mlpackage")
    assert 200e6 < fp16 < 260e6
    assert palettized / fp16 <= 0.42


@pytest.mark.parametrize("folder", sorted(FOLDERS))
@pytest.mark.parametrize("variant", sorted(FILES))
def test_full_size_package_passes_every_static_check(release: Path, variant: str, folder: str) -> None:
    _, *geometry_numbers = RELEASE[variant]
    geometry = StreamingGeometry(*geometry_numbers)
    package = release / folder / f"{FILES[variant]}.mlpackage"
    assert lint_package(package, Expectation(geometry=geometry, d_model=512, nbits=FOLDERS[folder])) == []
    shapes = {
        f.name: tuple(f.type.multiArrayType.shape) for f in read_package(package).spec.description.input
    }
    assert shapes["chunk"] == (1, geometry.chunk_mel_frames, 128) and shapes["spkcache"] == (1, 188, 512)


@pytest.mark.parametrize("folder", sorted(FOLDERS))
@pytest.mark.parametrize("variant", sorted(FILES))
def test_manifest_holds_lint_and_parity_figures(release: Path, variant: str, folder: str) -> None:
    record = json.loads((release / folder / f"{FILES[variant]}.json").read_text())
    statuses = {step["name"]: step["status"] for step in record["steps"]}
    assert statuses["lint"] == "verified" and statuses["parity"] == "verified"
    parity = record["verification"]["parity"]
    per_call = parity["per_call_vs_nemo"]
    assert per_call["lengths_equal"]
    # The synthetic weights are fixed by their seed and made decisive (see README, Verification):
    # constant outputs would make parity vacuous.
    assert per_call["overall"]["prob_spread"] > 0.1, "synthetic outputs are nearly constant"
    if FOLDERS[folder] is None:
        assert per_call["overall"]["max_abs_prob_error"] <= 0.01
        assert per_call["overall"]["decision_agreement"] >= 0.999
    else:
        assert parity["per_call_vs_fp16"]["overall"]["decision_agreement"] >= 0.97
    assert parity["streaming_vs_nemo"]["chunks"] >= 2


def test_manifest_counts_the_published_architecture(release: Path) -> None:
    record = json.loads((release / "palettized" / "SortformerNvidiaHigh_v2.1.json").read_text())
    assert record["parameters"]["total"] == 117_693_960
    assert record["checkpoint"]["source"] == "synthetic"
    assert record["shapes"]["chunk_mel_frames"] == 3048


def test_full_size_offline_twins_pass_lint_and_their_gates(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: Path
) -> None:
    """The offline model at full size: both twins from one conversion, statically sound, the
    palettized one at most 42 % of the fp16 one, parity gated on all three windows."""
    work = tmp_path_factory.mktemp("full-offline")
    sweep = ["--multirun", "variant=offline", "compression=fp16,palettized6", "checkpoint=synthetic"]
    run = run_cli(*sweep, f"cache_dir={shared_cache}", cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    file_name, window = OFFLINE["offline"]
    packages = {
        folder: work / "outputs" / "synthetic" / folder / f"{file_name}.mlpackage" for folder in FOLDERS
    }
    for folder, package in packages.items():
        expected = Expectation(geometry=OfflineGeometry(window), d_model=512, nbits=FOLDERS[folder])
        assert lint_package(package, expected) == []
        record = json.loads(package.with_suffix(".json").read_text())
        assert record["parameters"]["total"] == 117_693_960
        per_call = record["verification"]["parity"]["per_call_vs_nemo"]
        assert len(per_call["cases"]) == 3 and per_call["overall"]["prob_spread"] > 0.1
        assert record["verification"]["parity"]["streaming_vs_nemo"] is None
    assert package_size(packages["palettized"]) / package_size(packages["fp16"]) <= 0.42
