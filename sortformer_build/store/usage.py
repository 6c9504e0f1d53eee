"""Which cache entries are in use, and when each was last used.

A job holds a shared lock on every entry it uses until it ends; eviction takes the exclusive
lock without waiting and skips an entry it cannot get. The locks are `flock`s on a small file
beside the entry, so they vanish with a process that dies, and work across processes and, on
most shared filesystems, across machines.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ENTRY_FILE = "entry.json"


def use_lock_path(entry: Path) -> Path:
    return entry.parent / f".{entry.name}.use"


class Uses:
    """The entries one job uses: shared-locked from first use to `release()`."""

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}

    def hold(self, entry: Path) -> bool:
        """Lock `entry` for this job; False if it was evicted before the lock was granted."""
        if entry in self._held:
            return True
        descriptor = os.open(use_lock_path(entry), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        if not (entry / ENTRY_FILE).is_file():
            os.close(descriptor)
            return False
        self._held[entry] = descriptor
        touch(entry)
        return True

    def release(self) -> None:
        for descriptor in self._held.values():
            os.close(descriptor)
        self._held.clear()


def touch(entry: Path) -> None:
    """Mark the entry as used now (its entry.json's mtime is its last use)."""
    with suppress(FileNotFoundError):
        os.utime(entry / ENTRY_FILE)


def last_use(entry: Path) -> float:
    return (entry / ENTRY_FILE).stat().st_mtime


@contextmanager
def unused(entry: Path) -> Iterator[bool]:
    """Whether no job uses `entry`; while the block runs, no job can start using it."""
    descriptor = os.open(use_lock_path(entry), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)
