"""The status a job leaves for the sweep summary (`records.status.JobStatus`), written for a job
that could not write its own."""

from __future__ import annotations

from pathlib import Path

from sortformer_build.records.status import JOB_STATUS_FILE, JobStatus


def record_lost_job(identity: JobStatus, job_dir: Path, error: str, seconds: float) -> bool:
    """Write the failed status of a job that ended without writing one (cancelled or killed on a
    cluster), so that the summary lists it; `identity` names the job, `seconds` is how long it
    ran. A status the job wrote itself before it was lost is kept. Returns whether a status was
    written."""
    if (job_dir / JOB_STATUS_FILE).exists():
        return False
    identity.model_copy(update={"ok": False, "error": error, "seconds": seconds}).write_into(job_dir)
    return True
