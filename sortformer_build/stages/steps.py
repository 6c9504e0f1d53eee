"""What a job did, step by step: status, wall time and a word of detail for the manifest."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sortformer_build.errors import BuildError

log = logging.getLogger("sortformer_build")

BUILT, CACHED, VERIFIED, SKIPPED, FAILED = "built", "cached", "verified", "skipped", "failed"
# A measurement that judges nothing (the DER of an evaluation).
SCORED = "scored"


class StepFailed(BuildError):
    """A step that ran and found the artifact unfit; the message says why."""


@dataclass
class Step:
    name: str
    status: str
    seconds: float
    detail: str = ""


@dataclass
class StepLog:
    """Runs named steps (one per stage), logs them in words and times them; `timed` records the
    parts of a step (restore, trace, convert) in `timings` only."""

    steps: list[Step] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str, description: str) -> Iterator[Step]:
        """Time the block; it may set `.status` and `.detail` on the yielded step."""
        log.info("%s...", description)
        record = Step(name=name, status=BUILT, seconds=0.0)
        start = time.perf_counter()
        try:
            yield record
        except BaseException as error:
            record.status = FAILED
            record.detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise
        finally:
            record.seconds = round(time.perf_counter() - start, 3)
            self.steps.append(record)
            self.timings[name] = record.seconds
        log.info(
            "  %s in %.1f s%s", record.status, record.seconds, f" ({record.detail})" if record.detail else ""
        )

    @contextmanager
    def timed(self, name: str, description: str) -> Iterator[None]:
        log.info("  %s...", description)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)

    def skip(self, name: str, why: str) -> None:
        log.info("Skipping %s: %s", name, why)
        self.steps.append(Step(name=name, status=SKIPPED, seconds=0.0, detail=why))
