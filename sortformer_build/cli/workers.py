"""How many sweep jobs this machine runs at once: one per core, as far as memory goes."""

from __future__ import annotations

from sortformer_build.cores import available_memory, usable_cores

_GIB = 1 << 30


def parallel_jobs(gb_per_job: float) -> int:
    """min(usable cores, available memory / `gb_per_job`), at least 1."""
    by_memory = int(available_memory() / (gb_per_job * _GIB))
    return max(1, min(usable_cores(), by_memory))
