"""What a run left on disk, compared with a clean run's: the artifacts at their final paths, the
cache entries a reader would accept, and what must not stay behind (staging, scratch, temporary
files, held locks)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from sortformer_build.coreml.package import package_digest
from sortformer_build.records.base import RecordError
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.stages.artifact import PROBABILITIES_SUFFIX
from sortformer_build.store.cache import ArrayStore, BuildCache
from sortformer_build.store.digests import sha256_of
from sortformer_build.store.layout import LUTS_FOLDER

PACKAGE = ".mlpackage"


def final_state(output_dir: Path) -> dict[str, str]:
    """Every path a reader of the output folder takes as finished (hidden files and folders are
    not), with its content digest; a manifest is `manifest:<package digest it vouches for>`, a
    manifest or matrix that does not parse is `unreadable`, a report (a view of the run that wrote
    it: wall times, cache states) is `report` when it is a whole page, and the probabilities of a
    parity check are `probabilities` when every array loads. Those are measured by the run, as
    the manifest's parity figures are: NeMo's last bits follow the number of threads torch had,
    which in a sweep follows how many jobs were running then."""
    state: dict[str, str] = {}
    if not output_dir.is_dir():
        return state
    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir)
        if any(part.startswith(".") for part in relative.parts) or any(
            part.endswith(PACKAGE) for part in relative.parts[:-1]
        ):
            continue
        key = relative.as_posix()
        if path.name.endswith(PACKAGE):
            state[key] = package_digest(path)
        elif path.name == "matrix.json":
            state[key] = _parses(lambda path=path: ReleaseMatrix.read(path), "matrix")
        elif path.suffix == ".json":
            state[key] = _parses(
                lambda path=path: f"manifest:{Manifest.read(path).artifact.content_sha256}", None
            )
        elif path.name.endswith(PROBABILITIES_SUFFIX):
            state[key] = _probabilities(path)
        elif path.name.endswith(".html"):
            state[key] = "report" if path.read_text().rstrip().endswith("</html>") else "unfinished report"
        elif path.is_file() and path.name != "matrix.md":
            state[key] = sha256_of(path)
    return state


def _probabilities(path: Path) -> str:
    try:
        with np.load(path) as arrays:
            for name in arrays.files:
                arrays[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return "unreadable"
    return "probabilities"


def _parses(read, marker: str | None) -> str:
    try:
        value = read()
    except RecordError:
        return "unreadable"
    return marker if marker is not None else value


def final_problems(output_dir: Path, clean: dict[str, str]) -> list[str]:
    """Paths at which a reader finds something a clean run did not leave there: a package or RTTM
    with other content, a manifest that is unreadable, vouches for another package, or stands
    without its package."""
    state = final_state(output_dir)
    problems = [
        f"{path}: {digest[:24]} where the clean run has {clean.get(path, 'nothing')[:24]}"
        for path, digest in state.items()
        if clean.get(path) != digest and not (path.endswith("matrix.json") and digest == "matrix")
    ]
    for path, digest in state.items():
        if digest.startswith("manifest:"):
            package = path.removesuffix(".json") + PACKAGE
            if state.get(package) != digest.removeprefix("manifest:"):
                problems.append(f"{path} vouches for a package that is not beside it")
    return problems


def entry_content(entry: Path) -> dict[str, str]:
    """An entry's files by content: packages blind to coremltools' random identifiers, `.npz`
    archives by their arrays (numpy stamps the time into the archive), other files by bytes."""
    content: dict[str, str] = {}
    for path in sorted(entry.rglob("*")):
        relative = path.relative_to(entry)
        if not path.is_file() or relative.as_posix() == "entry.json":
            continue
        inside = next((index for index, part in enumerate(relative.parts) if part.endswith(PACKAGE)), None)
        if inside is not None:
            package = Path(*relative.parts[: inside + 1])
            content[package.as_posix()] = package_digest(entry / package)
        elif path.suffix == ".npz":
            digest = hashlib.sha256()
            with np.load(path) as arrays:
                for name in sorted(arrays.files):
                    array = arrays[name]
                    digest.update(f"{name}{array.dtype}{array.shape}".encode())
                    digest.update(np.ascontiguousarray(array).tobytes())
            content[relative.as_posix()] = digest.hexdigest()
        else:
            content[relative.as_posix()] = sha256_of(path)
    return content


def accepted_entries(cache_dir: Path) -> dict[str, Path]:
    """The build cache's entries a reader would use (`stage/name` -> folder), and its look-up tables."""
    build = cache_dir / "build"
    reader = BuildCache(build)
    found: dict[str, Path] = {}
    if not build.is_dir():
        return found
    for stage in sorted(build.iterdir()):
        if not stage.is_dir() or stage.name.startswith(".") or stage.name == LUTS_FOLDER:
            continue
        for entry in sorted(stage.iterdir()):
            if not entry.name.startswith(".") and reader.read(entry) is not None:
                found[f"{stage.name}/{entry.name}"] = entry
    return found


def cache_problems(cache_dir: Path, clean_cache: Path) -> list[str]:
    """Entries (and look-up tables) a reader would accept that differ from the clean run's."""
    clean = accepted_entries(clean_cache)
    problems = []
    for name, entry in accepted_entries(cache_dir).items():
        if name not in clean:
            problems.append(f"{name}: an entry the clean run does not have")
        elif entry_content(entry) != entry_content(clean[name]):
            problems.append(f"{name}: accepted, but its content differs from the clean run's")
    luts, clean_luts = (
        ArrayStore(cache_dir / "build" / LUTS_FOLDER),
        ArrayStore(clean_cache / "build" / LUTS_FOLDER),
    )
    # A killed writer's partial table is no table: readers look tables up by key.
    for record in sorted((cache_dir / "build" / LUTS_FOLDER).glob("[!.]*.json")):
        array, clean_array = luts.get(record.stem), clean_luts.get(record.stem)
        if array is not None and (clean_array is None or not np.array_equal(array, clean_array)):
            problems.append(f"look-up table {record.stem}: served, but differs from the clean run's")
    return problems


def leftovers(output_dir: Path, cache_dir: Path, temp_dir: Path) -> list[str]:
    """What no finished run may leave: anything in the temporary or scratch folders, staging or
    partial files beside the artifacts or the matrix, partial cache entries or look-up tables."""
    found = [f"temp: {path.relative_to(temp_dir)}" for path in temp_dir.rglob("*")]
    scratch = cache_dir / "scratch"
    if scratch.is_dir():
        found += [f"scratch: {path.name}" for path in scratch.iterdir()]
    if output_dir.is_dir():
        found += [
            f"output: {path.relative_to(output_dir)}"
            for path in output_dir.rglob(".partial-*")
            if ".hydra-runs" not in path.parts
        ]
    build = cache_dir / "build"
    if build.is_dir():
        found += [f"cache: {path.relative_to(build)}" for path in build.glob("*/.partial-*")]
    return found


def held_locks(*folders: Path) -> list[str]:
    """Lock and use files under `folders` that some process still holds."""
    held = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and (path.name.endswith(".lock") or path.name.endswith(".use")):
                descriptor = os.open(path, os.O_RDWR)
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held.append(str(path))
                finally:
                    os.close(descriptor)
    return held
