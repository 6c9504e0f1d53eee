"""Publish files and folders all at once: write beside the destination, then rename.

A reader never sees a half-written checkpoint, cache entry or artifact, whether the writer
fails, runs out of disk or is killed: leftovers carry a `.partial-` prefix and are ignored
(and swept) by the next writer.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock

PARTIAL_PREFIX = ".partial-"
# A partial older than this belongs to a writer that died.
_STALE_SECONDS = 24 * 3600


def partial_path(final: Path) -> Path:
    return final.parent / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{final.name}"


@contextmanager
def staged(final: Path, scratch: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final` (or in `scratch`, a folder on the same file system);
    move it onto `final` if the block succeeds.

    Works for a file or a folder. An existing `final` is replaced in one rename for a file,
    and swapped out then removed for a folder (POSIX cannot rename over a non-empty folder).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path((scratch or final.parent) / final.name)
    try:
        yield temporary
        replace(temporary, final, scratch)
    finally:
        remove(temporary)


@contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A fresh folder inside `parent` (same filesystem, so its files can be renamed into
    place), removed when the block ends."""
    folder = partial_path(parent / "scratch")
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        remove(folder)


def replace(source: Path, final: Path, scratch: Path | None = None) -> None:
    """Move `source` onto `final`. A folder it replaces is first moved beside `final`, or into
    `scratch` (a job's staging folder: then a kill leaves nothing beside the artifacts)."""
    if source.is_dir() and final.exists():
        retired = partial_path((scratch or final.parent) / final.name)
        os.replace(final, retired)
        os.replace(source, final)
        remove(retired)
    else:
        os.replace(source, final)


def retire(path: Path, scratch: Path | None = None) -> None:
    """Take `path` away in one rename (beside it, or into `scratch`), then delete it: no reader
    sees it half removed. Nothing there: nothing to do."""
    retired = partial_path((scratch or path.parent) / path.name)
    try:
        os.replace(path, retired)
    except FileNotFoundError:
        return
    remove(retired)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def remove_if_empty(folder: Path) -> None:
    """Remove `folder` if it holds nothing (a concurrent writer's file keeps it)."""
    with suppress(OSError):
        folder.rmdir()


def write_text(final: Path, text: str, scratch: Path | None = None) -> None:
    with staged(final, scratch) as temporary:
        temporary.write_text(text)


def lock(path: Path) -> FileLock:
    """An inter-process lock next to `path` (works across processes and, on most shared
    filesystems, across machines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / f".{path.name}.lock"))


def remove_partials_of(final: Path) -> None:
    """Remove what writers of `final` that died left beside it. Call it holding `lock(final)`,
    which every writer of `final` holds while it writes: then no live writer owns a partial."""
    for leftover in final.parent.glob(f"{PARTIAL_PREFIX}*-{final.name}"):
        remove(leftover)


def sweep_stale_partials(folder: Path) -> None:
    if not folder.is_dir():
        return
    now = time.time()
    for entry in folder.glob(f"{PARTIAL_PREFIX}*"):
        try:
            if now - entry.lstat().st_mtime > _STALE_SECONDS:
                remove(entry)
        except FileNotFoundError:
            continue
