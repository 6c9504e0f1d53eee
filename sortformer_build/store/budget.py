"""What the build cache holds, and keeping it within a size budget by evicting the least
recently used entries that no running job holds. Published artifacts live elsewhere and are
never touched; the checkpoints and look-up tables are counted but not evicted (the first is
slow to remake, the second small and shared by every version of this tool)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.store import atomic
from sortformer_build.store.layout import LUTS_FOLDER, CacheLayout
from sortformer_build.store.usage import ENTRY_FILE, last_use, unused

log = logging.getLogger("sortformer_build")

GB = 1e9


@dataclass(frozen=True)
class CacheEntry:
    stage: str
    path: Path
    bytes: int
    last_use: float  # seconds since the epoch


# Picks, from entries ordered least recently used first, those to remove.
Selection = Callable[[list["CacheEntry"]], list["CacheEntry"]]


@dataclass(frozen=True)
class StageSummary:
    stage: str
    entries: int
    bytes: int
    last_use: float | None


def entries(build_root: Path) -> list[CacheEntry]:
    """Finished stage entries, least recently used first (half-built `.partial-` folders and
    entries without a readable entry.json are not entries)."""
    found: list[CacheEntry] = []
    if not build_root.is_dir():
        return found
    for stage in sorted(build_root.iterdir()):
        if not stage.is_dir() or stage.name == LUTS_FOLDER or stage.name.startswith("."):
            continue
        for entry in stage.iterdir():
            if entry.name.startswith(".") or not (entry / ENTRY_FILE).is_file():
                continue
            found.append(CacheEntry(stage.name, entry, _size(entry), last_use(entry)))
    return sorted(found, key=lambda entry: entry.last_use)


def summary(layout: CacheLayout) -> list[StageSummary]:
    """Per stage of the build cache, and for the checkpoints and look-up tables."""
    by_stage: dict[str, list[CacheEntry]] = {}
    for entry in entries(layout.build):
        by_stage.setdefault(entry.stage, []).append(entry)
    rows = [
        StageSummary(stage, len(found), sum(e.bytes for e in found), max(e.last_use for e in found))
        for stage, found in sorted(by_stage.items())
    ]
    for name, folder in (("luts", layout.luts), ("checkpoints", layout.checkpoints)):
        files = [path for path in folder.glob("*") if path.is_file() and not path.name.startswith(".")]
        if files:
            newest = max(path.stat().st_mtime for path in files)
            rows.append(StageSummary(name, len(files), sum(path.stat().st_size for path in files), newest))
    return rows


def prune(build_root: Path, select: Selection) -> list[CacheEntry]:
    """Remove the entries `select` picks that no job holds; return those removed."""
    return [entry for entry in select(entries(build_root)) if _remove_unless_used(entry)]


def shrink_to(build_root: Path, max_bytes: int) -> list[CacheEntry]:
    """Remove the least recently used entries that no job holds until the cache fits."""
    found = entries(build_root)
    total = sum(entry.bytes for entry in found)
    removed = []
    for entry in found:
        if total <= max_bytes:
            break
        if _remove_unless_used(entry):
            removed.append(entry)
            total -= entry.bytes
    return removed


def _remove_unless_used(entry: CacheEntry) -> bool:
    with unused(entry.path) as free:
        if free:
            atomic.retire(entry.path)
        else:
            log.info("Keeping %s: a running job uses it", entry.path)
        return free


def older_than(seconds_since_epoch: float) -> Selection:
    return lambda found: [entry for entry in found if entry.last_use < seconds_since_epoch]


def everything(found: list[CacheEntry]) -> list[CacheEntry]:
    return found


def enforce_budget(build_root: Path, max_gb: float) -> None:
    """After a job: evict what exceeds the budget, and say so."""
    started = time.perf_counter()
    removed = shrink_to(build_root, int(max_gb * GB))
    if removed:
        freed = sum(entry.bytes for entry in removed) / GB
        log.info(
            "Cache over its %.1f GB budget: removed %d least recently used entries (%.2f GB) in %.1f s",
            max_gb,
            len(removed),
            freed,
            time.perf_counter() - started,
        )


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
