"""How many sweep jobs this machine runs at once: one per core, as far as memory goes."""

from __future__ import annotations

import os
from pathlib import Path

_GIB = 1 << 30
_MEMINFO = Path("/proc/meminfo")


def parallel_jobs(gb_per_job: float) -> int:
    """min(usable cores, available memory / `gb_per_job`), at least 1."""
    by_memory = int(available_memory() / (gb_per_job * _GIB))
    return max(1, min(usable_cores(), by_memory))


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
