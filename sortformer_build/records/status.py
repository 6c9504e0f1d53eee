"""What a job leaves in its Hydra job folder for the sweep summary: who it was, how it ended,
and, for a dry run, its plan. The contract between a job (which may run in another process or
on another machine) and the summary that reads it back."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field

from sortformer_build.records.base import Record
from sortformer_build.records.steps import SkipReason

JOB_STATUS_FILE = "job_status.json"


class Prediction(StrEnum):
    """What a dry run says a stage would do."""

    hit = "hit"  # served by the build cache
    miss = "miss"  # built, then cached
    off = "off"  # built, cache=false
    unknown = "unknown"  # the key needs the checkpoint's digest, and the checkpoint is not here yet
    run = "run"  # runs on every build
    present = "present"  # the checkpoint is on this machine
    obtain = "obtain"  # the checkpoint would be made or downloaded
    skipped = "skipped"


class StagePlan(Record):
    name: str
    prediction: Prediction
    skip: SkipReason | None = None
    why: str = ""  # for skipped stages and unknown cache states


class JobPlan(Record):
    package: str
    compression: str
    geometry: str  # in words
    latency_seconds: float
    latency: str  # as the matrix shows it
    checkpoint: str
    up_to_date: bool
    stages: list[StagePlan] = Field(default_factory=list)  # empty when up to date
    warnings: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        """One line (and a note on unknown cache states): what the job would do."""
        action = "up to date, nothing to build" if self.up_to_date else "would build"
        stages = "".join(f"; {stage.name} {stage.prediction.value}" for stage in self.stages)
        line = (
            f"Dry run: {self.package} {action} [{self.geometry}; latency {self.latency}; "
            f"checkpoint {self.checkpoint}{stages}]"
        )
        notes = sorted({stage.why for stage in self.stages if stage.prediction is Prediction.unknown})
        return line + "".join(f"\n  {note}" for note in notes)


class JobStatus(Record):
    # Who the job was: known from the composed config even when the job failed at once.
    variant: str | None
    compression: str | None
    fp16: bool
    file_name: str | None
    output_dir: str | None
    dry_run: bool
    # How it ended.
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    up_to_date: bool = False
    package: str | None = None
    manifest: str | None = None
    plan: JobPlan | None = None

    def write_into(self, job_dir: Path) -> None:
        self.write(job_dir / JOB_STATUS_FILE)


def read_statuses(sweep_dir: Path) -> list[JobStatus]:
    return [JobStatus.read(path) for path in sorted(sweep_dir.rglob(JOB_STATUS_FILE))]
