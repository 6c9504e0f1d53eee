"""What a job did, step by step: one record per stage that ran, was served or was skipped."""

from __future__ import annotations

from enum import StrEnum

from sortformer_build.records.base import Record


class StepStatus(StrEnum):
    built = "built"
    cached = "cached"  # served by the build cache (or, for the checkpoint, found on disk)
    verified = "verified"  # a check that ran and passed
    scored = "scored"  # a measurement that judges nothing (an evaluation's DER)
    skipped = "skipped"
    failed = "failed"


class SkipReason(StrEnum):
    """Why a stage did not run, as data: publishing accepts some reasons and refuses others."""

    needs_macos = "needs-macos"
    parity_off = "parity-off"

    @property
    def could_not_run_here(self) -> bool:
        """The stage needs a platform this machine is not; another machine can run it."""
        return self is SkipReason.needs_macos

    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    SkipReason.needs_macos: "needs macOS (Core ML cannot compile, load or run models on this platform)",
    SkipReason.parity_off: "verify.parity=false",
}


class StepRecord(Record):
    name: str
    status: StepStatus
    seconds: float
    detail: str = ""
    skip: SkipReason | None = None  # set when status is skipped

    def describe(self) -> str:
        """`parity verified (figures)`, `on-device skipped (needs macOS ...)`."""
        return f"{self.name} {self.status.value}{f' ({self.detail})' if self.detail else ''}"
