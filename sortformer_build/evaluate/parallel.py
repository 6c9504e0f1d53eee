"""A dataset's recordings diarized side by side by worker processes.

Each worker loads the package once into the executor and diarizes whole recordings with its
share of the job's cores (`cores.job_cores`, which the workers split between them); the job's
process reads the audio, computes the features with the checkpoint's preprocessor, and
post-processes and writes each recording's RTTM in the dataset's order. Recordings are
independent, so the workers give each recording what the job's process would give it on the
same number of threads.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from sortformer_build.config import EvaluationBackend, ExecutorPrecision
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.cores import CORE_PART_VARIABLE, available_memory, job_cores
from sortformer_build.geometry import Geometry
from sortformer_build.records.base import Record

# Peak memory of one worker: the package's weights decoded to float32 (about 470 MB at full
# size), NeMo's streaming modules, one step's values. Measured 1.4 GB (Default) and 1.8 GB
# (NvidiaHigh) with float16 packages.
WORKER_BYTES = 2 << 30


class BackendRecipe(Record):
    """How a worker process makes the package backend the job's process would use."""

    package: Path
    geometry: Geometry
    d_model: int
    kind: EvaluationBackend
    precision: ExecutorPrecision
    target: DeploymentTarget

    def backend(self) -> Any:
        from sortformer_build.evaluate.backends import package_backend

        return package_backend(
            self.package, self.geometry, self.d_model, self.kind, self.precision, self.target
        )


def recording_workers(recordings: int) -> int:
    """How many worker processes diarize `recordings` recordings: one per core the job may use,
    as far as memory goes, no more than there are recordings; 1 means in the job's process."""
    return max(1, min(recordings, job_cores(), available_memory() // WORKER_BYTES))


# The worker process's backend, made once by `_start`.
_backend: Any = None


def _start(recipe: str, parts: Any, workers: int) -> None:
    from sortformer_build.cli.logs import quiet_third_party

    global _backend
    # The job's process has shown the libraries' import chatter once already; a worker's errors
    # reach the job through the results.
    quiet_third_party()
    os.environ[CORE_PART_VARIABLE] = f"{parts.get()}/{workers}"
    _backend = BackendRecipe.parse(recipe, "the backend recipe").backend()


def _predict(mel: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    preds = _backend.predict(mel)
    return preds, time.perf_counter() - started


class RecordingPool:
    """`workers` processes, each with the backend of `recipe` and the i-th of `workers` shares of
    the job's cores."""

    def __init__(self, recipe: BackendRecipe, workers: int) -> None:
        # joblib's loky starts fresh interpreters (the job's process holds BLAS, OpenMP and torch
        # threads, which a fork would copy in an unknown state), and works inside a sweep's joblib
        # worker too, where multiprocessing's own spawning cannot find loky's start method.
        from joblib.externals.loky import ProcessPoolExecutor
        from joblib.externals.loky.backend.context import get_context

        context = get_context("loky")
        parts = context.Queue()
        for index in range(workers):
            parts.put(index)
        self._executor = ProcessPoolExecutor(
            workers, context=context, initializer=_start, initargs=(recipe.to_json(), parts, workers)
        )

    def submit(self, mel: np.ndarray) -> Future[tuple[np.ndarray, float]]:
        """Speaker probabilities of one recording's features, and the seconds they took."""
        return self._executor.submit(_predict, mel)

    def __enter__(self) -> RecordingPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        # After a failure the queued recordings are of no use: stop the workers at once.
        self._executor.shutdown(wait=True, kill_workers=error is not None)
