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
    """A fresh folder under `parent` (the cache's scratch folder), also made the temporary folder
    of the process and of every process it starts (TMPDIR) for the block: coremltools saves
    every converted model to a temporary package it removes only at interpreter exit, NeMo
    unpacks checkpoints into temporary folders, and a worker process killed mid-way removes
    nothing."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(parent)
    folder = parent / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    lock = FileLock(str(folder) + _LOCK_SUFFIX)
    try:
        with lock:
            folder.mkdir()
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
