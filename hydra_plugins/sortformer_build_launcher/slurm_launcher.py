"""`hydra/launcher=slurm`: hydra-submitit-launcher's Slurm launcher for a sweep that keeps going.

The plugin collects results with submitit's `job.results()`, which raises for a job that ended
without one (cancelled, killed, out of time or memory). Hydra then stops waiting for the other
jobs and never calls `on_multirun_end`, so no summary is written. This launcher lets every job
end and writes the status a lost job could not write (its Slurm id and state as the error): the
summary lists the job as failed and the sweep exits non-zero.

Installed as `hydra_plugins.sortformer_build_launcher` (pyproject.toml) and registered by
`cli.app.main`. Hydra scans the `hydra_plugins` package on every run, so this module imports
submitit and the build only when a sweep uses it (`pip install -e '.[launchers]'`).

No `from __future__ import annotations`: Hydra's scan runs this module before it is in
`sys.modules`, where a dataclass with string annotations fails to build.
"""

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict


@dataclass(frozen=True)
class LostJob:
    """A Slurm job that ended without a result."""

    job_id: str
    state: str
    log: Path
    seconds: float  # how long it ran, as the controller's accounting has it

    def describe(self) -> str:
        return f"Slurm job {self.job_id} ended {self.state} before reporting; its log: {self.log}"


class SlurmLauncher(Launcher):
    """Takes the settings of hydra-submitit-launcher's `submitit_slurm` and hands the sweep to it."""

    def __init__(self, **params: Any) -> None:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as Submitit

        self.submitit = Submitit(**params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.submitit.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with _lost_jobs_returned():
            returns = self.submitit.launch(job_overrides, initial_job_idx)
        return [
            self._record(outcome, overrides, initial_job_idx + index)
            if isinstance(outcome, LostJob)
            else outcome
            for index, (outcome, overrides) in enumerate(zip(returns, job_overrides, strict=True))
        ]

    def _record(self, lost: LostJob, overrides: Sequence[str], job_num: int) -> JobReturn:
        """Write the lost job's status into its job folder, where the summary reads it. The
        failure is in that file, so Hydra is told the job completed and goes on."""
        from sortformer_build.cli.app import status_of
        from sortformer_build.job.status import record_lost_job

        master = self.submitit.config
        assert self.submitit.hydra_context is not None and master is not None
        config = self.submitit.hydra_context.config_loader.load_sweep_config(master, list(overrides))
        with open_dict(config.hydra.job):
            config.hydra.job.num = job_num
        job_dir = Path(str(master.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        if record_lost_job(status_of(config), job_dir, lost.describe(), lost.seconds):
            print(f"sortformer-build: error: {lost.describe()}", file=sys.stderr)
        return JobReturn(overrides=list(overrides), working_dir=str(job_dir), status=JobStatus.COMPLETED)


@contextmanager
def _lost_jobs_returned() -> Iterator[None]:
    """While the plugin collects results, a Slurm job without one returns a `LostJob` instead of
    raising, so the plugin goes on to wait for the others."""
    from submitit.core.utils import UncompletedJobError
    from submitit.slurm.slurm import SlurmJob

    collect = SlurmJob.results

    def results(job: SlurmJob) -> list[Any]:
        try:
            return collect(job)
        except UncompletedJobError:
            return [LostJob(job.job_id, job.state, job.paths.stderr, _elapsed_seconds(job.job_id))]

    own = SlurmJob.__dict__.get("results")
    SlurmJob.results = results
    try:
        yield
    finally:
        if own is None:
            del SlurmJob.results
        else:
            SlurmJob.results = own


def _elapsed_seconds(job_id: str) -> float:
    """The job's run time from `sacct` (which this launcher needs anyway: submitit reads job
    states with it); 0 if accounting does not say."""
    listed = subprocess.run(
        ["sacct", "--noheader", "--allocations", "--parsable2", "--format=ElapsedRaw", f"--jobs={job_id}"],
        capture_output=True,
        text=True,
    )
    elapsed = listed.stdout.split()
    return float(elapsed[0]) if listed.returncode == 0 and elapsed and elapsed[0].isdigit() else 0.0
