"""How many cores a job's work may use right now: its share of this machine.

A job alone has every core this process may run on. In a sweep, joblib starts each worker with
a fixed share (it sets `OMP_NUM_THREADS` and friends to cores / workers in the worker's
environment), and that share is respected. When the sweep keeps a register of its running jobs
(`RunningJobs`: one locked file per job, under the sweep's folder), the share follows the
number of jobs still running on this host instead, read again at every call: when a sweep has
fewer jobs left than workers, the last jobs take the cores the finished ones left.

A process that does one part of a job's work (a recording diarized in a worker process) is told
its part with `CORE_PART_VARIABLE` ("i/n") and takes the i-th of n shares of the job's cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

REGISTER_VARIABLE = "SORTFORMER_BUILD_RUNNING_JOBS"  # the register's folder
JOB_FILE_VARIABLE = "SORTFORMER_BUILD_JOB_FILE"  # this job's file in it
CORE_PART_VARIABLE = "SORTFORMER_BUILD_CORE_PART"  # "i/n": this process does part i of n

# What joblib sets in its workers (and what users set to cap a process's threads).
THREAD_LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_MEMINFO = Path("/proc/meminfo")
_JOB_SUFFIX = ".job"


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_memory() -> int:
    """Bytes a new process can take without swapping: MemAvailable on Linux, else physical memory."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def share(total: int, parts: int, index: int) -> int:
    """The `index`-th of `parts` near-equal shares of `total` (the first ones take the remainder),
    at least 1."""
    return max(1, total // parts + (1 if index < total % parts else 0))


def thread_limit() -> int | None:
    """The smallest thread cap set in this process's environment, or None."""
    limits = []
    for name in THREAD_LIMIT_VARIABLES:
        with contextlib.suppress(ValueError):
            limits.append(int(os.environ.get(name, "")))
    positive = [limit for limit in limits if limit > 0]
    return min(positive) if positive else None


def job_cores() -> int:
    """The cores this job (or this part of it) may use now; cheap enough to ask at every step."""
    cores = usable_cores()
    register = os.environ.get(REGISTER_VARIABLE)
    held = None
    if register:
        held = RunningJobs(Path(register)).share_of(os.environ.get(JOB_FILE_VARIABLE, ""), cores)
    if held is None:
        limit = thread_limit()
        held = cores if limit is None else min(cores, limit)
    part = os.environ.get(CORE_PART_VARIABLE)
    if part:
        index, parts = (int(value) for value in part.split("/"))
        return share(held, parts, index)
    return held


class RunningJobs:
    """The jobs of one sweep running now, as files in `folder` each held locked by its job.

    A job that dies releases its lock with its process, so a killed job stops counting at once;
    its file is removed by the next reader. Files are named by host and by the set of cores the
    job may run on: only jobs on this host competing for the same cores share them (Slurm tasks
    on one node get disjoint cores and do not count against each other).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def _group() -> str:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        digest = hashlib.sha256(repr(cores).encode()).hexdigest()[:12]
        return f"{socket.gethostname()}-{digest}-"

    @contextlib.contextmanager
    def running(self) -> Iterator[Path]:
        """Count this job as running until the block ends; yields its file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{self._group()}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path = self.folder / f"{name}{_JOB_SUFFIX}"
        # Locked before it gets the name readers look for: a reader never takes it for stale.
        unnamed = self.folder / f".{name}"
        with unnamed.open("w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            unnamed.rename(path)
            try:
                yield path
            finally:
                path.unlink(missing_ok=True)

    def members(self) -> list[str]:
        """Names of the files of the running jobs that share this process's cores, sorted."""
        group = self._group()
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self.folder)
                if entry.name.startswith(group) and entry.name.endswith(_JOB_SUFFIX)
            )
        except OSError:
            return []
        return [name for name in names if self._held(self.folder / name)]

    @staticmethod
    def _held(path: Path) -> bool:
        """Whether a live process holds `path` locked; a stale file (its job died) is removed."""
        try:
            with path.open("r") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                path.unlink(missing_ok=True)
                return False
        except OSError:  # removed meanwhile: its job ended
            return False

    def share_of(self, name: str, cores: int) -> int | None:
        """The cores of the job whose file is `name`, shared with the other running jobs; None when
        that job is not (or no longer) registered."""
        members = self.members()
        if name not in members:
            return None
        return share(cores, len(members), members.index(name))
