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
    """Why a stage did not run, as data: publishing accepts the reasons that mean "this machine
    could not run it" and refuses the others."""

    not_macos = "not-macos"  # Core ML exists on macOS alone
    macos_too_old = "macos-too-old"  # older than the deployment target needs
    no_native_library = "no-native-library"  # coremltools has no Core ML library for this Python
    parity_off = "parity-off"  # verify.parity=false

    @property
    def could_not_run_here(self) -> bool:
        """Another machine (a Mac new enough, a Python coremltools supports) can run the stage."""
        return self is not SkipReason.parity_off


class Skip(Record):
    """A stage that will not run: why, as data, and in words for this machine."""

    reason: SkipReason
    detail: str


class StepRecord(Record):
    name: str
    status: StepStatus
    seconds: float
    detail: str = ""
    skip: SkipReason | None = None  # set when status is skipped

    def describe(self) -> str:
        """`parity verified (figures)`, `on-device skipped (needs macOS ...)`."""
        return f"{self.name} {self.status.value}{f' ({self.detail})' if self.detail else ''}"
