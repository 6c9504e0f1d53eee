"""Content-addressed build cache: a stage's result is keyed by everything it depends on.

An entry is a folder `<root>/<stage>/<key digest>/` holding the stage's files and `entry.json`
(the key, the stage's facts). It is built beside its final place and renamed into it, under a
lock, so parallel jobs on one machine or many machines on a shared filesystem never see a
half-written entry and never build the same one twice at once. An entry whose `entry.json` is
missing or unreadable is not an entry, and one whose files are not those its `entry.json` records
(`store.integrity`) is corrupt: either is rebuilt, never used.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build import faults
from sortformer_build.records.base import RecordError
from sortformer_build.records.facts import CacheEntryRecord, StoredArrayRecord
from sortformer_build.store import atomic, integrity, space
from sortformer_build.store.digests import digest_of
from sortformer_build.store.usage import ENTRY_FILE, Uses

log = logging.getLogger("sortformer_build")


@dataclass
class Entry:
    path: Path
    hit: bool
    facts: dict[str, Any] = field(default_factory=dict)


class BuildCache:
    """`fetch(stage, key, build)` returns the entry for `key`, running `build(folder)` on a miss.

    `build` writes its files into `folder` and returns facts to remember with them. With the
    cache disabled every fetch builds into `scratch`, a folder the job owns and removes.
    `digests`: where the stamps of entries whose content was found right are remembered (see
    `store.integrity`); None hashes every entry's files on every use.
    """

    def __init__(
        self,
        root: Path,
        enabled: bool = True,
        scratch: Path | None = None,
        uses: Uses | None = None,
        digests: Path | None = None,
    ) -> None:
        self.root = root
        self.enabled = enabled
        self._scratch = scratch
        self._digests = digests
        # Entries this cache hands out stay locked against eviction until the job releases them.
        self._uses = uses or Uses()

    def path(self, stage: str, key: dict[str, Any]) -> Path:
        """Where the entry for `key` lives once built; its name is the key's digest."""
        return self.root / stage / digest_of({"stage": stage, **key})

    def lookup(self, stage: str, key: dict[str, Any]) -> Entry | None:
        """The finished entry for `key`, or None; never builds (dry runs ask this)."""
        return self.read(self.path(stage, key)) if self.enabled else None

    def fetch(self, stage: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> Entry:
        final = self.path(stage, key)
        if not self.enabled:
            if self._scratch is None:
                raise ValueError("a disabled cache builds into a scratch folder, and none was given")
            folder = self._scratch / stage / final.name
            folder.mkdir(parents=True)
            with space.reported(self._scratch, f"the {stage} stage's files", lambda: space.tree_size(folder)):
                return Entry(folder, hit=False, facts=build(folder))
        entry = self.read(final)
        if entry is not None and self._uses.hold(final):
            return entry
        lock = atomic.lock(final)
        with lock:
            entry = self.read(final, report=True)
            if entry is not None and self._uses.hold(final):
                return entry
            atomic.sweep_stale_partials(final.parent)
            atomic.remove_partials_of(final)
            try:
                with atomic.staged(final) as folder:
                    folder.mkdir()
                    what = f"the {stage} cache entry"
                    with space.reported(final.parent, what, lambda: space.tree_size(folder)):
                        facts = build(folder)
                        files = integrity.file_digests(folder)
                        faults.point(faults.cache_point(stage), final.parent)
                        record = CacheEntryRecord(key=key, facts=facts, files=files)
                        (folder / ENTRY_FILE).write_text(record.to_json())
            except BaseException:
                # Nothing was cached: no lock file stays behind for an entry that does not exist.
                Path(lock.lock_file).unlink(missing_ok=True)
                raise
            if self._digests is not None:
                integrity.remember(final, files, self._digests)
            self._uses.hold(final)
        return Entry(final, hit=False, facts=facts)

    def read(self, folder: Path, report: bool = False) -> Entry | None:
        """The entry in `folder` if its entry.json is readable and its files are those it records;
        `report`: say in the log why an entry that is there cannot be used."""
        try:
            recorded = CacheEntryRecord.read(folder / ENTRY_FILE)
        except RecordError:
            return None
        problem = integrity.problem(folder, recorded.files, self._digests)
        if problem is not None:
            if report:
                log.warning("Cache entry %s is corrupt (%s): rebuilding it", folder, problem)
            return None
        return Entry(folder, hit=True, facts=recorded.facts)


class ArrayStore:
    """Small arrays by content key, one record file each with the array's bytes and their digest
    (palettization LUTs per weight tensor: the same tensors recur in every geometry built from one
    checkpoint). An array whose record is unreadable or whose bytes do not match their digest is
    not served. `root=None` keeps nothing, for builds with the cache off."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def get(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            record = StoredArrayRecord.read(path)
            data = base64.b64decode(record.data, validate=True)
            if hashlib.sha256(data).hexdigest() != record.sha256:
                raise ValueError("its bytes differ from the sha256 recorded when it was written")
            return np.frombuffer(data, dtype=np.dtype(record.dtype)).reshape(record.shape).copy()
        except RecordError as error:
            if path.exists():
                log.warning("Look-up table %s is unreadable (%s): computing it again", path, error)
            return None
        except (ValueError, TypeError) as error:
            log.warning("Look-up table %s is corrupt (%s): computing it again", path, error)
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        if self.root is None:
            return
        data = np.ascontiguousarray(array).tobytes()
        record = StoredArrayRecord(
            dtype=array.dtype.str,
            shape=list(array.shape),
            data=base64.b64encode(data).decode(),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        path = self._path(key)
        with (
            space.reported(self.root, "a look-up table", lambda: len(record.to_json()), exact=True),
            atomic.staged(path, self._scratch()) as temporary,
        ):
            temporary.write_text(record.to_json())
            faults.point("cache.luts", self.root)

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.json"

    def _scratch(self) -> Path | None:
        """Where a table is written before its rename: the temporary folder, which during a job is
        the job's scratch folder in the cache (a killed writer's half table then goes with it),
        when it is on the store's file system; else beside the table."""
        assert self.root is not None
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.gettempdir())
        return temporary if temporary.stat().st_dev == self.root.stat().st_dev else None
