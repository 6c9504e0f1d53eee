"""Progress on long work: a bar on a terminal; elsewhere (a log file, a sweep's job log) a line
at least every 30 seconds saying what is done and what remains."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger("sortformer_build")

T = TypeVar("T")
INTERVAL_SECONDS = 30.0


def _terminal() -> bool:
    return sys.stderr.isatty()


def counted(items: Iterable[T], total: int, what: str, unit: str) -> Iterator[T]:
    """`items`, one at a time, with their progress: `what` in words, `unit` plural."""
    if _terminal():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=f"  {what}", unit=f" {unit}", leave=False, disable=False)
        return
    started = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= INTERVAL_SECONDS and done < total:
            last = now
            remaining = (now - started) / done * (total - done)
            log.info(
                "  %s: %d of %d %s after %.0f s, about %.0f s left",
                what,
                done,
                total,
                unit,
                now - started,
                remaining,
            )


@contextmanager
def heartbeat(what: str) -> Iterator[None]:
    """For work that cannot be counted (a conversion by coremltools): a line every 30 seconds
    saying it still runs and for how long, on a terminal and in logs alike."""
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(INTERVAL_SECONDS):
            log.info("  %s: still running after %.0f s", what, time.monotonic() - started)

    thread = threading.Thread(target=beat, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
