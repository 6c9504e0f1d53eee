"""The build cache under concurrency, and the remembered package digests, with real processes
and files (no conversion needed: the cache is indifferent to what a stage makes)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sortformer_build import faults
from sortformer_build.coreml.package import package_digest
from sortformer_build.store.cache import BuildCache

from .rendezvous import Rendezvous

KEY = {"checkpoint": "0" * 64, "geometry": [6, 1, 7]}


def _fetch(root: str, builds_log: str, fault: str | None) -> bool:
    """Runs in a fresh process: fetch one entry (with `fault`, held where its files are written)."""
    if fault is not None:
        os.environ[faults.FAULT_VARIABLE] = fault

    def build(folder: Path) -> dict[str, int]:
        with open(builds_log, "a") as log:
            log.write(f"{os.getpid()}\n")
        (folder / "payload.bin").write_bytes(b"x" * 1000)
        return {"size": 1000}

    return BuildCache(Path(root)).fetch("programs", KEY, build).hit


def test_two_processes_fetching_one_entry_build_it_once(tmp_path: Path) -> None:
    """The second fetch starts while the first holds the entry's lock, its files half made."""
    builds_log = tmp_path / "builds.log"
    root = str(tmp_path / "cache")
    spawn = multiprocessing.get_context("spawn")
    with Rendezvous() as meeting, ProcessPoolExecutor(2, mp_context=spawn) as pool:
        first = pool.submit(_fetch, root, str(builds_log), meeting.fault("cache.programs"))
        held = meeting.wait()
        second = pool.submit(_fetch, root, str(builds_log), None)
        assert not second.done()  # it cannot finish: the entry is not made and its lock is taken
        held.release()
        hits = [first.result(), second.result()]
    assert sorted(hits) == [False, True]
    assert len(builds_log.read_text().splitlines()) == 1
    entry = BuildCache(tmp_path / "cache").lookup("programs", KEY)
    assert entry is not None and entry.facts == {"size": 1000}
    assert (entry.path / "payload.bin").stat().st_size == 1000


def test_remembered_package_digest_follows_the_files(tmp_path: Path) -> None:
    package = tmp_path / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    weights = package / "Data" / "weight.bin"
    weights.write_bytes(b"a" * 4096)
    memo = tmp_path / "memo"
    first = package_digest(package, memo)
    assert first == package_digest(package) == package_digest(package, memo)
    assert len(list(memo.iterdir())) == 1

    # File times tick coarsely and real rebuilds are seconds apart: each rewrite gets its own mtime.
    weights.write_bytes(b"b" * 4096)
    os.utime(weights, (1, 1))
    second = package_digest(package, memo)
    assert second == package_digest(package) != first

    replacement = tmp_path / "replacement.mlpackage"
    shutil.copytree(package, replacement)
    (replacement / "Data" / "weight.bin").write_bytes(b"c" * 4096)
    os.utime(replacement / "Data" / "weight.bin", (2, 2))
    shutil.rmtree(package)
    replacement.rename(package)
    assert package_digest(package, memo) == package_digest(package) not in (first, second)


def test_a_corrupt_entry_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    builds: list[Path] = []

    def build(folder: Path) -> dict[str, int]:
        builds.append(folder)
        (folder / "payload.bin").write_bytes(b"x" * 10)
        return {"size": 10}

    first = cache.fetch("stage", KEY, build)
    entry_file = first.path / "entry.json"
    entry_file.write_text(entry_file.read_text()[:5])  # truncated, as by a full disk
    assert cache.lookup("stage", KEY) is None
    second = cache.fetch("stage", KEY, build)
    assert not second.hit and len(builds) == 2
    assert cache.lookup("stage", KEY) is not None and second.facts == {"size": 10}


def test_two_processes_write_the_same_entry_bytes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Converted and palettized programs are the same files whichever process made them (protobuf
    writes maps in a per-process order unless asked not to); only Manifest.json's identifiers are
    coremltools' random ones."""
    from .conftest import run_cli

    contents = []
    for name in ("first", "second"):
        cache = tmp_path / name / "cache"
        cache.mkdir(parents=True)
        (cache / "checkpoints").symlink_to(tiny_checkpoint.parent, target_is_directory=True)
        run = run_cli(
            "checkpoint=tiny",
            "variant=default",
            "compression=palettized6",
            "verify.parity=false",
            f"cache_dir={cache}",
            cwd=tmp_path / name,
        )
        assert run.returncode == 0, run.output[-3000:]
        contents.append(
            {
                path.relative_to(cache).as_posix(): path.read_bytes()
                for stage in ("programs", "palettize")
                for path in (cache / "build" / stage).rglob("*.mlpackage/Data/**/*")
                if path.is_file()
            }
        )
    assert contents[0].keys() == contents[1].keys() and len(contents[0]) >= 3
    assert [name for name in contents[0] if contents[0][name] != contents[1][name]] == []
