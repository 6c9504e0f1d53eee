"""The executor's own threads: its work (matrix product tiles, element-wise ops, float16
rounding) split into independent chunks that run side by side.

NumPy's and SciPy's ufuncs, BLAS and the compiled rounding kernel release the GIL while they run, so
Python threads run the chunks in parallel. Each chunk is the same computation on a part of the
data, so the result is the same, bit for bit, however many threads share it. Waiting threads
block instead of spinning, so on a busy machine they give their cores away.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

# Below this many elements per chunk, handing work to a thread costs more than it saves.
MIN_CHUNK_ELEMENTS = 1 << 17

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas: ThreadpoolController | None = None
_holds = 0
_hold: Any = None  # threadpoolctl's limiter, whose class it does not export


def _workers(count: int) -> ThreadPoolExecutor:
    """A pool with at least `count` threads, kept for the life of the process."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=count, thread_name_prefix="executor"), count
        return _pool


def chunk_count(elements: int, threads: int) -> int:
    """How many chunks `elements` are worth splitting into on `threads` threads (1: do not split)."""
    return max(1, min(threads, elements // MIN_CHUNK_ELEMENTS))


def bounds(size: int, chunks: int) -> list[tuple[int, int]]:
    """`chunks` contiguous, near-equal [start, stop) ranges covering range(size)."""
    edges = [size * i // chunks for i in range(chunks + 1)]
    return [(start, stop) for start, stop in itertools.pairwise(edges) if stop > start]


def run(work: Callable[[int, int], None], size: int, chunks: int) -> None:
    """`work(start, stop)` over `chunks` ranges of range(size), the calling thread taking the first.

    Every chunk runs with NumPy's floating-point errors ignored, as the executor runs its ops
    (the error state is per thread). The first exception of any chunk is raised here, after all
    chunks have ended. An empty range is no work at all.
    """
    if size == 0:
        return
    ranges = bounds(size, chunks)

    def quiet(start: int, stop: int) -> None:
        with np.errstate(all="ignore"):
            work(start, stop)

    if len(ranges) == 1:
        quiet(*ranges[0])
        return
    pool = _workers(len(ranges) - 1)
    futures: list[Future[None]] = [pool.submit(quiet, start, stop) for start, stop in ranges[1:]]
    first_error: BaseException | None = None
    try:
        quiet(*ranges[0])
    except BaseException as error:  # still wait for the others: they write into shared arrays
        first_error = error
    for future in futures:
        failure = future.exception()
        if failure is not None and first_error is None:
            first_error = failure
    if first_error is not None:
        raise first_error


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS held to one thread inside the block: the executor's threads share its products out in
    tiles (`tiles`), whose bits do not depend on how many threads there are. BLAS's setting is
    one per process, so blocks entered by several threads at once share one hold, taken by the
    first and given back by the last."""
    global _blas, _holds, _hold
    with _lock:
        if _blas is None:  # scans the loaded libraries once, not at every call
            _blas = ThreadpoolController()
        if _holds == 0:
            _hold = _blas.limit(limits=1, user_api="blas")
        _holds += 1
    try:
        yield
    finally:
        with _lock:
            _holds -= 1
            if _holds == 0:
                _hold.restore_original_limits()
                _hold = None
