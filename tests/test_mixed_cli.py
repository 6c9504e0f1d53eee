"""compression=mixed through the console script on the tiny checkpoint: a budget met and judged by
the palettized gates, the recipe in the manifest and honoured tensor by tensor, the analysis
cached and shared by every budget, and what cannot be built refused in one line.

The first build is the session's reference build (`tests.reference`, a mixed NvidiaHigh build);
the others run on copies of its cache, so that only the stages under test do any work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from sortformer_build.coreml.package import read_package
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.steps import StepStatus
from sortformer_build.verify.lint import check_tensor_bits

from .conftest import artifacts
from .forked import run_build
from .reference import BUILD, COMMON, Clean

MIXED = (*(argument for argument in COMMON if not argument.startswith("evaluate=")), "compression=mixed")
FOLDER = Path("outputs/tiny/mixed")
NAME = "SortformerNvidiaHigh_v2.1"


def _cache(clean: Clean, tmp_path: Path, *without: str) -> Path:
    """A copy of the reference build's cache, without the entries of the stages `without`."""
    cache = tmp_path / "cache"
    shutil.copytree(clean.build.cache, cache, symlinks=True)
    for stage in without:
        shutil.rmtree(cache / "build" / stage)
    return cache


def _manifest(work: Path) -> Manifest:
    return Manifest.read(work / FOLDER / f"{NAME}.json")


def _statuses(manifest: Manifest) -> dict[str, StepStatus]:
    return {step.name: step.status for step in manifest.steps}


def test_mixed_build_fits_its_budget_passes_its_gates_and_records_its_recipe(clean: Clean) -> None:
    assert "compression=mixed" in BUILD
    manifest = _manifest(clean.build.work)
    applied = manifest.compression.recipe
    assert applied is not None and applied.recipe.budget_bytes is not None
    assert manifest.artifact.bytes <= applied.recipe.budget_bytes
    assert set(applied.recipe.groups) == {"fastconformer.0", "fastconformer.1"}
    statuses = _statuses(manifest)
    assert statuses["lint"] is statuses["parity"] is StepStatus.verified
    parity = manifest.verification.parity
    assert parity is not None and parity.per_call_vs_fp16 is not None
    # Each palettized tensor's table is the size its group's width says.
    (_, head) = read_package(clean.build.work / FOLDER / f"{NAME}.mlpackage").programs
    assert list(check_tensor_bits([head], applied.tensor_bits)) == []
    by_group = {name: choice.bits for name, choice in applied.recipe.groups.items()}
    assert set(applied.tensor_bits.values()) == set(by_group.values())


def test_every_budget_shares_the_analysis(clean: Clean, tmp_path: Path) -> None:
    cache = _cache(clean, tmp_path)
    run = run_build(*MIXED, "compression.budget_ratio=0.8", f"cache_dir={cache}", cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    manifest = _manifest(tmp_path)
    statuses = _statuses(manifest)
    assert statuses["mixed-analysis"] is StepStatus.cached
    assert statuses["palettize"] is StepStatus.built
    applied = manifest.compression.recipe
    assert applied is not None and applied.recipe.budget_bytes is not None
    assert manifest.artifact.bytes <= applied.recipe.budget_bytes
    reference = _manifest(clean.build.work).compression.recipe
    assert reference is not None and reference.recipe.budget_bytes is not None
    assert applied.recipe.budget_bytes > reference.recipe.budget_bytes


def _recipe_file(path: Path, bits: dict[str, int]) -> Path:
    groups = {group: {"bits": width} for group, width in bits.items()}
    path.write_text(yaml.safe_dump({"target": "iOS17", "groups": groups}))
    return path


def test_a_recipe_file_is_applied_as_written_and_an_edit_is_another_package(
    clean: Clean, tmp_path: Path
) -> None:
    """A copy of the reference build's recipe with its widths edited: its budget, bytes and effects
    describe the old widths and are not applied; editing the file again rebuilds the head."""
    reference = _manifest(clean.build.work).compression.recipe
    assert reference is not None and reference.recipe.budget_bytes is not None
    document = reference.recipe.model_dump(mode="json")
    path, cache = tmp_path / "recipe.yaml", _cache(clean, tmp_path)
    for bits in (
        {"fastconformer.0": 8, "fastconformer.1": 16},
        {"fastconformer.0": 4, "fastconformer.1": 16},
    ):
        for group, width in bits.items():
            document["groups"][group]["bits"] = width
        path.write_text(yaml.safe_dump(document))
        run = run_build(*MIXED, f"compression.recipe={path}", f"cache_dir={cache}", cwd=tmp_path)
        assert run.returncode == 0, run.output[-3000:]
        manifest = _manifest(tmp_path)
        applied = manifest.compression.recipe
        assert applied is not None and applied.recipe.budget_bytes is None
        assert {name: choice.bits for name, choice in applied.recipe.groups.items()} == bits
        assert set(applied.tensor_bits.values()) == set(bits.values())
        assert _statuses(manifest)["palettize"] is StepStatus.built


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"fastconformer.0": 4, "fastconformer.1": 4, "transformer.40": 4}, "groups the head does not have"),
        ({"fastconformer.0": 3, "fastconformer.1": 4}, "asks for 3 bits; iOS17 look-up tables take"),
    ],
)
def test_a_recipe_that_does_not_fit_is_refused_in_one_line(
    groups: dict[str, int], message: str, clean: Clean, tmp_path: Path
) -> None:
    path = _recipe_file(tmp_path / "recipe.yaml", groups)
    cache = _cache(clean, tmp_path)
    run = run_build(*MIXED, f"compression.recipe={path}", f"cache_dir={cache}", cwd=tmp_path)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("sortformer-build: error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr[-2000:]
    assert artifacts(tmp_path / "outputs") == []


def test_an_impossible_budget_is_refused_before_the_analysis(clean: Clean, tmp_path: Path) -> None:
    cache = _cache(clean, tmp_path, "mixed-analysis")
    run = run_build(*MIXED, "compression.budget_mb=0.01", f"cache_dir={cache}", cwd=tmp_path)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("sortformer-build: error:")]
    assert len(errors) == 1 and "below the smallest package" in errors[0], run.stderr[-2000:]
    assert "Streaming a" not in run.output  # no measurement began
    assert not list((cache / "build").glob("mixed-analysis/*/sensitivity.json"))
    assert artifacts(tmp_path / "outputs") == []
