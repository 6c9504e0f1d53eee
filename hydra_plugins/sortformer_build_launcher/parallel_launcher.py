"""`hydra/launcher=parallel` (the default): Hydra's joblib launcher for a sweep that keeps going
when a worker process dies.

joblib's loky workers run the jobs. When one dies (killed, out of memory), loky ends the other
workers too and joblib raises for the whole sweep: Hydra then never calls `on_multirun_end`, so
no summary is written, and each killed job's staging folder stays in its release folder. This
launcher hands the jobs to joblib as the plugin does, but takes each result as it comes; when a
worker dies, a job that had started and left no status is recorded as failed (the summary lists
it; its staging folder, whose lock died with it, is removed), and the jobs that had not started
run in a fresh pool. On Linux each worker dies with the launcher: a sweep killed outright leaves
no worker finishing its job or idling for loky's timeout.

Installed as `hydra_plugins.sortformer_build_launcher` (pyproject.toml) and registered by
`cli.app.main`. No `from __future__ import annotations`: Hydra's scan runs this module before it
is in `sys.modules`, where string annotations of a plugin fail to resolve.
"""

import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

LOST = (
    "its worker process died before the job reported (killed, or out of memory; "
    "a worker that dies takes the sweep's other running jobs with it)"
)


class ParallelLauncher(JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed, effective_n_jobs
        from joblib.externals.loky.process_executor import BrokenProcessPool

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        settings = dict(self.joblib)
        settings["backend"] = "loky"  # as the plugin: Hydra's jobs need processes
        process_joblib_cfg(settings)
        settings.update(initializer=_die_with_the_launcher, initargs=(os.getpid(),))
        # n_jobs may be -1 (every core) or below; no more workers run at once than there are jobs.
        workers = min(len(job_overrides), effective_n_jobs(settings["n_jobs"]))
        log.info(
            "Launching %d jobs in %d worker processes, sweep output dir : %s",
            len(job_overrides),
            workers,
            sweep_dir,
        )
        for index, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        pending = dict(enumerate(job_overrides))
        returns: dict[int, JobReturn] = {}
        while pending:
            round_started = time.time()
            calls = [
                delayed(_execute)(
                    index,
                    initial_job_idx + index,
                    overrides,
                    self.hydra_context,
                    self.config,
                    self.task_function,
                    state,
                )
                for index, overrides in pending.items()
            ]
            try:
                for index, result in Parallel(**settings, return_as="generator_unordered")(calls):
                    returns[index] = result
                    del pending[index]
            except BrokenProcessPool:
                for index in list(pending):
                    outcome = self._after_broken_pool(initial_job_idx + index, pending[index], round_started)
                    if outcome is not None:
                        returns[index] = outcome
                        del pending[index]
        return [returns[index] for index in range(len(job_overrides))]

    def _after_broken_pool(self, job_num: int, overrides: Sequence[str], since: float) -> JobReturn | None:
        """A job the broken pool did not return: done if it left its status, lost (recorded as
        failed) if it had started, else None (to run again)."""
        from sortformer_build.cli.app import status_of
        from sortformer_build.job.scratch import staging_pattern, sweep_abandoned
        from sortformer_build.job.status import record_lost_job
        from sortformer_build.records.status import JOB_STATUS_FILE

        config, job_dir = self._job(job_num, overrides)
        done = JobReturn(overrides=list(overrides), working_dir=str(job_dir), status=JobStatus.COMPLETED)
        if (job_dir / JOB_STATUS_FILE).exists():
            return done
        hydra_files = job_dir / ".hydra"
        if not hydra_files.is_dir():
            return None
        seconds = round(time.time() - max(since, hydra_files.stat().st_mtime), 3)
        status = status_of(config)
        if record_lost_job(status, job_dir, LOST, seconds):
            who = f"{status.file_name or '?'} ({status.compression or '?'})"
            print(f"sortformer-build: error: job {job_num}, {who}: {LOST}", file=sys.stderr)
        output_dir, folder = (OmegaConf.select(config, key) for key in ("output_dir", "compression.folder"))
        if output_dir is not None and folder is not None:
            release_folder = Path(str(output_dir)) / str(folder)
            if release_folder.is_dir():
                sweep_abandoned(release_folder, staging_pattern())
        return done

    def _job(self, job_num: int, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config.hydra.job):
            config.hydra.job.num = job_num
        return config, Path(str(self.config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)


# prctl(2): the signal a process receives when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_the_launcher(launcher: int) -> None:
    """Runs first in each worker. Without it, a worker whose launcher was killed (SIGKILL, out of
    memory) finishes its job into the release folder with no one to record it, then idles for
    loky's timeout; only Linux has the kernel's parent-death signal."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # the launcher died before the signal was asked for
        os.kill(os.getpid(), signal.SIGKILL)


def _execute(index: int, job_num: int, *arguments: Any) -> tuple[int, JobReturn]:
    """Runs in a worker: the plugin's own job function, with the job's place in the sweep."""
    return index, execute_job(job_num, *arguments)
