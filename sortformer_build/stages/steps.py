"""What a job did, step by step: status, wall time and a word of detail for the manifest."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sortformer_build.errors import BuildError
from sortformer_build.progress import heartbeat
from sortformer_build.records.steps import Skip, StepRecord, StepStatus

log = logging.getLogger("sortformer_build")


class StepFailed(BuildError):
    """A step that ran and found the artifact unfit; the message says why."""


@dataclass
class Outcome:
    """How a running step ends: the block may change both."""

    status: StepStatus = StepStatus.built
    detail: str = ""


@dataclass
class StepLog:
    """Runs named steps (one per stage), logs them in words and times them; `timed` records the
    parts of a step (restore, trace, convert) in `timings` only."""

    steps: list[StepRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str, description: str, announce: bool = True) -> Iterator[Outcome]:
        """Time the block; it may set `.status` and `.detail` on the yielded outcome. Without
        `announce` (a stage the cache will serve) only the outcome is logged, under the stage's
        name: the description says what it would have done."""
        if announce:
            log.info("%s...", description)
        outcome = Outcome()
        start = time.perf_counter()
        try:
            with heartbeat(name):
                yield outcome
        except BaseException as error:
            outcome.status = StepStatus.failed
            outcome.detail = one_line(error)
            raise
        finally:
            seconds = round(time.perf_counter() - start, 3)
            self.steps.append(
                StepRecord(name=name, status=outcome.status, seconds=seconds, detail=outcome.detail)
            )
            self.timings[name] = seconds
        log.info(
            "  %s%s in %.1f s%s",
            "" if announce else f"{name}: ",
            outcome.status.value,
            seconds,
            f" ({outcome.detail})" if outcome.detail else "",
        )

    @contextmanager
    def timed(self, name: str, description: str) -> Iterator[None]:
        log.info("  %s...", description)
        start = time.perf_counter()
        with heartbeat(name):
            yield
        self.timings[name] = round(time.perf_counter() - start, 3)

    def skip(self, name: str, skip: Skip) -> None:
        log.info("Skipping %s: %s", name, skip.detail)
        self.steps.append(
            StepRecord(
                name=name, status=StepStatus.skipped, seconds=0.0, detail=skip.detail, skip=skip.reason
            )
        )


def one_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
