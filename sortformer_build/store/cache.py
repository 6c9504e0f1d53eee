"""Content-addressed build cache: a stage's result is keyed by everything it depends on.

An entry is a folder `<root>/<stage>/<key digest>/` holding the stage's files and `entry.json`
(the key, the stage's facts). It is built beside its final place and renamed into it, under a
lock, so parallel jobs on one machine or many machines on a shared filesystem never see a
half-written entry and never build the same one twice at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.store import atomic

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"


def digest_of(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes an artifact, read without importing the packages."""
    versions = {name: _version(name) for name in ("torch", "coremltools", "nemo_toolkit", "numpy")}
    versions["sortformer-build"] = f"{_version('sortformer-build')}+{code_fingerprint()[:12]}"
    return versions


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def remembered_digest(memo_dir: Path, path: Path, stamp: object, compute: Callable[[], str]) -> str:
    """`compute()` for `path`, remembered while `stamp` (sizes and mtimes, JSON-plain) is unchanged:
    warm builds then skip re-reading hundreds of MB of checkpoint or package."""
    memo = memo_dir / hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    try:
        remembered = json.loads(memo.read_text())
        if remembered["stamp"] == stamp:
            return str(remembered["sha256"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    digest = compute()
    atomic.write_text(memo, json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


@functools.cache
def code_fingerprint() -> str:
    """Hash of this package's source: any code change invalidates what it built. Read once per
    process: the code a process runs is the code it imported."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Entry:
    path: Path
    hit: bool
    facts: dict[str, Any] = field(default_factory=dict)


class BuildCache:
    """`fetch(stage, key, build)` returns the entry for `key`, running `build(folder)` on a miss.

    `build` writes its files into `folder` and returns facts to remember with them. With the
    cache disabled every fetch builds, into a scratch folder that lives as long as the cache
    object.
    """

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self._scratch = None if enabled else tempfile.TemporaryDirectory(prefix="sortformer-build-")

    def path(self, stage: str, key: dict[str, Any]) -> Path:
        """Where the entry for `key` lives once built; its name is the key's digest."""
        return self.root / stage / digest_of({"stage": stage, **key})

    def lookup(self, stage: str, key: dict[str, Any]) -> Entry | None:
        """The finished entry for `key`, or None; never builds (dry runs ask this)."""
        return self._read(self.path(stage, key)) if self.enabled else None

    def fetch(self, stage: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> Entry:
        final = self.path(stage, key)
        if not self.enabled:
            folder = Path(self._scratch.name) / stage / final.name
            folder.mkdir(parents=True)
            return Entry(folder, hit=False, facts=build(folder))
        entry = self._read(final)
        if entry is not None:
            return entry
        with atomic.lock(final):
            entry = self._read(final)
            if entry is not None:
                return entry
            atomic.sweep_stale_partials(final.parent)
            with atomic.staged(final) as folder:
                folder.mkdir()
                facts = build(folder)
                (folder / ENTRY_FILE).write_text(
                    json.dumps({"key": key, "facts": facts}, indent=1, default=str)
                )
        return Entry(final, hit=False, facts=facts)

    @staticmethod
    def _read(folder: Path) -> Entry | None:
        try:
            recorded = json.loads((folder / ENTRY_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return Entry(folder, hit=True, facts=recorded.get("facts", {}))


class ArrayStore:
    """Small arrays by content key, one `.npy` file each (palettization LUTs per weight tensor:
    the same tensors recur in every geometry built from one checkpoint). `root=None` keeps
    nothing, for builds with the cache off."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def get(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        try:
            return np.load(self.root / f"{key}.npy")
        except (FileNotFoundError, ValueError):
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        if self.root is not None:
            with atomic.staged(self.root / f"{key}.npy") as temporary, temporary.open("wb") as stream:
                np.save(stream, array)
