"""A job's scratch folder: every temporary file the job or its libraries make goes there, and
the folder goes when the job ends, however it ends. Folders of jobs that were killed are swept
by the next job (their lock is free once the process is gone)."""

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


@contextmanager
def job_scratch(parent: Path) -> Iterator[Path]:
    """A fresh folder under `parent` (the cache's scratch folder), also made the process's
    temporary folder for the block: coremltools saves every converted model to a temporary
    package it removes only at interpreter exit, and NeMo unpacks checkpoints into temporary
    folders."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(parent)
    folder = parent / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    lock = FileLock(str(folder) + _LOCK_SUFFIX)
    try:
        with lock:
            folder.mkdir()
            previous = tempfile.tempdir
            tempfile.tempdir = str(folder)
            try:
                yield folder
            finally:
                tempfile.tempdir = previous
                atomic.remove(folder)
    finally:
        atomic.remove(Path(lock.lock_file))


def sweep_abandoned(parent: Path) -> None:
    """Remove scratch folders whose job no longer runs (nobody holds their lock)."""
    for folder in parent.iterdir():
        if folder.name.endswith(_LOCK_SUFFIX) or not folder.is_dir():
            continue
        probe = FileLock(str(folder) + _LOCK_SUFFIX, timeout=0)
        try:
            with probe:
                atomic.remove(folder)
        except Timeout:
            continue
        atomic.remove(Path(probe.lock_file))
