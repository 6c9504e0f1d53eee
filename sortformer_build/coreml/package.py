"""Facts about a saved `.mlpackage`: its content hash, size and specification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sortformer_build.store.cache import remembered_digest

MANIFEST = "Manifest.json"
SPEC_PATH = Path("Data/com.apple.CoreML/model.mlmodel")


def package_digest(package: Path, memo_dir: Path | None = None, known: str | None = None) -> str:
    """sha256 of a package's content, blind to the random item identifiers coremltools writes
    into Manifest.json: two packages with the same programs and weights hash the same.

    With `memo_dir` the digest is remembered until a file's size or mtime changes: a warm sweep
    then checks 14 published packages (about 2 GB) by their file stamps alone. `known` seeds
    the memo with a digest just computed for the same files.
    """
    if memo_dir is None:
        return _content_digest(package)
    stamp = [[path.relative_to(package).as_posix(), *_size_mtime(path)] for path in _files(package)]
    return remembered_digest(memo_dir, package, stamp, lambda: known or _content_digest(package))


def _files(package: Path) -> list[Path]:
    return sorted(path for path in package.rglob("*") if path.is_file())


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _content_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in _files(package):
        relative = path.relative_to(package).as_posix()
        data = _manifest_without_identifiers(path) if relative == MANIFEST else path.read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _manifest_without_identifiers(path: Path) -> bytes:
    manifest = json.loads(path.read_text())
    entries = sorted(
        json.dumps(entry, sort_keys=True) for entry in manifest.get("itemInfoEntries", {}).values()
    )
    return json.dumps({"format": manifest.get("fileFormatVersion"), "items": entries}).encode()


def package_size(package: Path) -> int:
    return sum(path.stat().st_size for path in _files(package))


def make_spec_deterministic(package: Path) -> None:
    """Rewrite the package's specification with map entries (metadata, op attributes) in key
    order. Protobuf writes maps in a per-process hash order, so one model saved by two processes
    (a serial and a parallel sweep) would otherwise differ in bytes and in content hash."""
    spec_file = package / SPEC_PATH
    spec_file.write_bytes(load_spec(package).SerializeToString(deterministic=True))


def load_spec(package: Path) -> Any:
    """The package's `Model` protobuf, read without coremltools' model loader."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((package / SPEC_PATH).read_bytes())
    return spec
