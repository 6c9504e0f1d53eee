"""A job's own folders, each held under a lock for the job's life and removed when the job ends,
however it ends: its scratch folder in the cache (every temporary file the job or its libraries
make) and its staging folder beside the artifacts (the package before it is verified and renamed
into place). A killed job cannot remove them itself; the next job into the same folder removes
the folders whose lock is free, since a lock (`flock`) goes with the process that held it."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from sortformer_build.store import atomic

_LOCK_SUFFIX = ".lock"
STAGING_SUFFIX = "-staging"


@contextmanager
def job_scratch(parent: Path) -> Iterator[Path]:
    """A fresh folder under `parent` (the cache's scratch folder), also made the temporary folder
    of the process and of every process it starts (TMPDIR) for the block: coremltools saves
    every converted model to a temporary package it removes only at interpreter exit, NeMo
    unpacks checkpoints into temporary folders, and a worker process killed mid-way removes
    nothing."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(parent)
    with _held(parent / f"{os.getpid()}-{uuid.uuid4().hex[:12]}") as folder:
        previous, previous_environment = tempfile.tempdir, os.environ.get("TMPDIR")
        tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = previous
            if previous_environment is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = previous_environment


@contextmanager
def job_staging(release_folder: Path) -> Iterator[Path]:
    """A fresh hidden folder in `release_folder` (the same file system, so what is staged there is
    renamed into place), after removing the staging folders of jobs that no longer run."""
    release_folder.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(release_folder, staging_pattern())
    name = f"{atomic.PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}{STAGING_SUFFIX}"
    with _held(release_folder / name) as folder:
        yield folder


def staging_pattern() -> str:
    """The names of jobs' staging folders in a release folder."""
    return f"{atomic.PARTIAL_PREFIX}*{STAGING_SUFFIX}"


@contextmanager
def _held(folder: Path) -> Iterator[Path]:
    lock = FileLock(str(folder) + _LOCK_SUFFIX)
    try:
        with lock:
            folder.mkdir()
            try:
                yield folder
            finally:
                atomic.remove(folder)
    finally:
        atomic.remove(Path(lock.lock_file))


def sweep_abandoned(parent: Path, pattern: str = "*") -> None:
    """Remove the folders matching `pattern` in `parent` whose job no longer runs (nobody holds
    their lock), and the lock files such a job left without a folder."""
    for lock_file in parent.glob(pattern + _LOCK_SUFFIX):
        folder = lock_file.with_name(lock_file.name.removesuffix(_LOCK_SUFFIX))
        if not folder.exists():
            _remove_if_free(folder, lock_file)
    for folder in parent.glob(pattern):
        if folder.is_dir() and not folder.name.endswith(_LOCK_SUFFIX):
            _remove_if_free(folder, Path(str(folder) + _LOCK_SUFFIX))


def _remove_if_free(folder: Path, lock_file: Path) -> None:
    probe = FileLock(str(lock_file), timeout=0)
    try:
        with probe:
            atomic.remove(folder)
    except Timeout:
        return
    atomic.remove(lock_file)
