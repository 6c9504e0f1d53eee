"""The sweep's register of running jobs, kept by a Hydra callback around each job of a multirun.

Every job of a sweep, in whichever worker process runs it, holds its file in
`<sweep dir>/.running-jobs/` while it runs (`cores.RunningJobs`), and tells its process and the
processes it starts where the register is. Each step of the job's work then takes its share of the
cores among the jobs still running on this host (`cores.job_cores`): once a sweep has fewer jobs
left than workers, the last jobs use the cores the others left. A single run keeps no register:
it has the machine's cores.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from sortformer_build.cores import JOB_FILE_VARIABLE, REGISTER_VARIABLE, RunningJobs

FOLDER = ".running-jobs"


class RunningJobsCallback(Callback):
    """Registered under `hydra.callbacks` (sortformer_build/conf/build.yaml)."""

    def __init__(self) -> None:
        self._held = ExitStack()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN:
            return
        register = Path(hydra.sweep.dir).resolve() / FOLDER
        held = self._held.enter_context(RunningJobs(register).running())
        os.environ[REGISTER_VARIABLE] = str(register)
        os.environ[JOB_FILE_VARIABLE] = held.name

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self._held.close()
        os.environ.pop(REGISTER_VARIABLE, None)
        os.environ.pop(JOB_FILE_VARIABLE, None)
