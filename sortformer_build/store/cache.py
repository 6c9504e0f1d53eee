"""Content-addressed build cache: a stage's result is keyed by everything it depends on.

An entry is a folder `<root>/<stage>/<key digest>/` holding the stage's files and `entry.json`
(the key, the stage's facts). It is built beside its final place and renamed into it, under a
lock, so parallel jobs on one machine or many machines on a shared filesystem never see a
half-written entry and never build the same one twice at once. An entry whose `entry.json` is
missing or unreadable is not an entry: it is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.records.base import RecordError
from sortformer_build.records.facts import CacheEntryRecord
from sortformer_build.store import atomic
from sortformer_build.store.digests import digest_of
from sortformer_build.store.usage import ENTRY_FILE, Uses


@dataclass
class Entry:
    path: Path
    hit: bool
    facts: dict[str, Any] = field(default_factory=dict)


class BuildCache:
    """`fetch(stage, key, build)` returns the entry for `key`, running `build(folder)` on a miss.

    `build` writes its files into `folder` and returns facts to remember with them. With the
    cache disabled every fetch builds into `scratch`, a folder the job owns and removes.
    """

    def __init__(
        self, root: Path, enabled: bool = True, scratch: Path | None = None, uses: Uses | None = None
    ) -> None:
        self.root = root
        self.enabled = enabled
        self._scratch = scratch
        # Entries this cache hands out stay locked against eviction until the job releases them.
        self._uses = uses or Uses()

    def path(self, stage: str, key: dict[str, Any]) -> Path:
        """Where the entry for `key` lives once built; its name is the key's digest."""
        return self.root / stage / digest_of({"stage": stage, **key})

    def lookup(self, stage: str, key: dict[str, Any]) -> Entry | None:
        """The finished entry for `key`, or None; never builds (dry runs ask this)."""
        return self._read(self.path(stage, key)) if self.enabled else None

    def fetch(self, stage: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> Entry:
        final = self.path(stage, key)
        if not self.enabled:
            if self._scratch is None:
                raise ValueError("a disabled cache builds into a scratch folder, and none was given")
            folder = self._scratch / stage / final.name
            folder.mkdir(parents=True)
            return Entry(folder, hit=False, facts=build(folder))
        entry = self._read(final)
        if entry is not None and self._uses.hold(final):
            return entry
        lock = atomic.lock(final)
        with lock:
            entry = self._read(final)
            if entry is not None and self._uses.hold(final):
                return entry
            atomic.sweep_stale_partials(final.parent)
            try:
                with atomic.staged(final) as folder:
                    folder.mkdir()
                    facts = build(folder)
                    (folder / ENTRY_FILE).write_text(CacheEntryRecord(key=key, facts=facts).to_json())
            except BaseException:
                # Nothing was cached: no lock file stays behind for an entry that does not exist.
                Path(lock.lock_file).unlink(missing_ok=True)
                raise
            self._uses.hold(final)
        return Entry(final, hit=False, facts=facts)

    @staticmethod
    def _read(folder: Path) -> Entry | None:
        try:
            recorded = CacheEntryRecord.read(folder / ENTRY_FILE)
        except RecordError:
            return None
        return Entry(folder, hit=True, facts=recorded.facts)


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
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        if self.root is not None:
            with atomic.staged(self.root / f"{key}.npy") as temporary, temporary.open("wb") as stream:
                np.save(stream, array)
