"""A cache entry whose files changed after it was written (a flipped byte, a truncated file) is
found when it is used, said in one line, and rebuilt: never assembled into a package nor used as
a reference. One test per cached stage, on a copy of the reference build's cache, building into
an empty output folder (so that the build uses the entries rather than finding its artifact up
to date); the package it delivers must be the clean build's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sortformer_build.coreml.package import package_digest
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.steps import StepStatus
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.layout import LUTS_FOLDER

from .forked import run_forked
from .outcomes import entry_content
from .reference import BUILD, Clean

PALETTIZED = "mixed/SortformerNvidiaHigh_v2.1"


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _largest_file(folder: Path) -> Path:
    return max(
        (path for path in folder.rglob("*") if path.is_file() and path.name != "entry.json"), key=_size
    )


def _size(path: Path) -> int:
    return path.stat().st_size


def _entries(cache: Path, stage: str) -> list[Path]:
    return sorted(path for path in (cache / "build" / stage).iterdir() if not path.name.startswith("."))


def _case(clean: Clean, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(clean.build.cache, cache, symlinks=True)
    return cache


def _rebuild(clean: Clean, cache: Path, tmp_path: Path, name: str) -> tuple[str, Manifest]:
    run = run_forked(
        "sortformer-build", *BUILD, f"cache_dir={cache}", f"output_dir={tmp_path / name}", cwd=tmp_path
    )
    assert run.returncode == 0, run.output[-3000:]
    manifest = Manifest.read(tmp_path / name / f"{PALETTIZED}.json")
    # Delivered: the clean build's package, byte for byte (coremltools' identifiers aside).
    assert manifest.artifact.content_sha256 == clean.build_state[f"{PALETTIZED}.mlpackage"]
    assert package_digest(tmp_path / name / f"{PALETTIZED}.mlpackage") == manifest.artifact.content_sha256
    return run.output, manifest


@pytest.mark.parametrize(
    ("stage", "steps"),
    [
        ("programs", ("programs",)),
        ("mixed-analysis", ("mixed-analysis",)),
        ("palettize", ("palettize",)),
        ("nemo-reference", ("nemo-reference",)),
        ("fp16-outputs", ("fp16-outputs",)),
        ("nemo-diarization", ("nemo-diarization",)),
        ("diarization", ("diarization", "fp16-diarization")),
    ],
)
def test_a_changed_entry_is_found_said_and_rebuilt(
    clean: Clean, tmp_path: Path, stage: str, steps: tuple[str, ...]
) -> None:
    cache = _case(clean, tmp_path)
    for damage, name in ((_flip, "flipped"), (_truncate, "truncated")):
        corrupted = _entries(cache, stage)
        for entry in corrupted:
            damage(_largest_file(entry))
            assert BuildCache(cache / "build").read(entry) is None  # a reader refuses it
        output, manifest = _rebuild(clean, cache, tmp_path, name)
        said = [line for line in output.splitlines() if "is corrupt" in line]
        assert len(said) == len(corrupted), output[-3000:]
        assert all(f"/build/{stage}/" in line and "rebuilding it" in line for line in said)
        if damage is _truncate:
            assert all("bytes where" in line for line in said)
        else:
            assert all("differs from the sha256 recorded" in line for line in said)
        assert [getattr(manifest.step(step), "status", None) for step in steps] == [StepStatus.built] * len(
            steps
        )
        for entry in corrupted:  # rebuilt as the clean run made it
            assert entry_content(entry) == entry_content(clean.build.cache / "build" / stage / entry.name)


def test_a_changed_look_up_table_is_found_said_and_computed_again(clean: Clean, tmp_path: Path) -> None:
    """Tables are read when a head's groups are measured (every width) and when it is palettized
    (the recipe's widths): those entries go too, so that the damaged table is read."""
    cache = _case(clean, tmp_path)
    tables = sorted((cache / "build" / LUTS_FOLDER).glob("*.json"))
    for damage, name in ((_flip, "flipped"), (_truncate, "truncated")):
        for entry in _entries(cache, "mixed-analysis") + _entries(cache, "palettize"):
            shutil.rmtree(entry)
        damage(tables[0])
        output, manifest = _rebuild(clean, cache, tmp_path, name)
        said = [line for line in output.splitlines() if "Look-up table" in line]
        assert len(said) == 1 and tables[0].name in said[0] and "computing it again" in said[0], output[
            -3000:
        ]
        assert getattr(manifest.step("palettize"), "status", None) is StepStatus.built
        assert (
            tables[0].read_bytes()
            == (clean.build.cache / "build" / LUTS_FOLDER / tables[0].name).read_bytes()
        )
