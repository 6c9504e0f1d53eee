"""A saved package as a step function: the contract's inputs in, its outputs out, run by the
executor at a chosen numeric mode and BLAS thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sortformer_build.config import ExecutorPrecision
from sortformer_build.contract import StepFunction


def package_step(package: Path, precision: ExecutorPrecision, blas_threads: int | None = 1) -> StepFunction:
    """The package run by the executor on `blas_threads` BLAS threads (None: the library's
    default, every core). Verification keeps one: its work is a few steps, the parallelism comes
    from running jobs side by side, and two threads per job on two busy cores made each matmul
    several times slower."""
    from threadpoolctl import ThreadpoolController

    from sortformer_build.executor import load_package

    model = load_package(package)
    if blas_threads is None:
        return lambda inputs: model.predict(inputs, precision=precision.value)
    blas = ThreadpoolController()  # scans the loaded libraries once, not on every step

    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with blas.limit(limits=blas_threads, user_api="blas"):
            return model.predict(inputs, precision=precision.value)

    return step
