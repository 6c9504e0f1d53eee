"""A saved package as a step function: the contract's inputs in, its outputs out, run by the
executor at a chosen numeric mode on the job's share of the cores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sortformer_build.config import ExecutorPrecision
from sortformer_build.contract import StepFunction
from sortformer_build.cores import job_cores


def package_step(
    package: Path, precision: ExecutorPrecision, threads: Callable[[], int] = job_cores
) -> StepFunction:
    """The package run by the executor on `threads()` threads, asked again at every step: by
    default the job's share of the cores (`cores.job_cores`: one per joblib worker's share in a
    sweep, growing when the sweep's other jobs end). The thread count never changes a result."""
    from sortformer_build.executor import load_package

    model = load_package(package)

    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return model.predict(inputs, precision=precision.value, threads=threads())

    return step
