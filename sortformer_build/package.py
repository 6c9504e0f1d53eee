"""Facts about a saved `.mlpackage`: its content hash, size and specification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "Manifest.json"
SPEC_PATH = Path("Data/com.apple.CoreML/model.mlmodel")


def package_digest(package: Path) -> str:
    """sha256 of a package's content, blind to the random item identifiers coremltools writes
    into Manifest.json: two packages with the same programs and weights hash the same."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file()):
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
    return sum(path.stat().st_size for path in package.rglob("*") if path.is_file())


def load_spec(package: Path) -> Any:
    """The package's `Model` protobuf, read without coremltools' model loader."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((package / SPEC_PATH).read_bytes())
    return spec
