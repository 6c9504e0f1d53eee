"""The status every job leaves in its Hydra job folder: the contract between a job (which may
run in another process or on another machine) and the sweep summary that reads it back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sortformer_build.job.plan import JobPlan, StagePlan
from sortformer_build.stages.base import Prediction
from sortformer_build.store import atomic

JOB_STATUS_FILE = "job_status.json"


@dataclass
class JobStatus:
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

    def write(self, job_dir: Path) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(job_dir / JOB_STATUS_FILE, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> JobStatus:
        data = json.loads(path.read_text())
        plan = data.pop("plan", None)
        return cls(**data, plan=None if plan is None else _plan(plan))


def _plan(data: dict[str, Any]) -> JobPlan:
    stages = [
        StagePlan(stage["name"], Prediction(stage["prediction"]), stage["why"])
        for stage in data.pop("stages")
    ]
    return JobPlan(**data, stages=stages)


def record_lost_job(identity: JobStatus, job_dir: Path, error: str, seconds: float) -> bool:
    """Write the failed status of a job that ended without writing one (cancelled or killed on a
    cluster), so that the summary lists it; `identity` names the job, `seconds` is how long it
    ran. A status the job wrote itself before it was lost is kept. Returns whether a status was
    written."""
    if (job_dir / JOB_STATUS_FILE).exists():
        return False
    replace(identity, ok=False, error=error, seconds=seconds).write(job_dir)
    return True


def read_statuses(sweep_dir: Path) -> list[JobStatus]:
    return [JobStatus.read(path) for path in sorted(sweep_dir.rglob(JOB_STATUS_FILE))]
