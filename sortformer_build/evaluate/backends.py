"""What turns a recording's mel features into speaker probabilities: NeMo itself, a package run
by sortformer-build's executor, or Core ML (macOS). A backend is one model call; the model kind
drives it over a recording as the runtime would (NeMo's streaming loop, or overlapping windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.config import EvaluationBackend, ExecutorPrecision
from sortformer_build.contract import StepFunction
from sortformer_build.coreml import host, macos
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.evaluate.parallel import BackendRecipe
from sortformer_build.geometry import Geometry
from sortformer_build.kinds import kind_of


@dataclass(frozen=True)
class Backend:
    name: str
    geometry: Geometry
    d_model: int
    step: StepFunction | None  # None: cannot run on this platform
    unavailable: str | None = None  # why not, in words for this machine
    recipe: BackendRecipe | None = None  # how a worker process makes it again; None: it cannot

    def predict(self, mel: np.ndarray) -> np.ndarray:
        """Speaker probabilities (output frames, speakers) of a whole recording."""
        if self.step is None:
            raise RuntimeError(f"this backend cannot run here: {self.unavailable}")
        return kind_of(self.geometry).recording_probabilities(self.geometry, self.d_model, mel, self.step)


def nemo_backend(model: Any, geometry: Geometry) -> Backend:
    """NeMo's own forward for the model's kind."""
    return Backend("nemo", geometry, int(model.encoder.d_model), kind_of(geometry).nemo_call(model))


def package_backend(
    package: Path,
    geometry: Geometry,
    d_model: int,
    kind: EvaluationBackend,
    precision: ExecutorPrecision,
    target: DeploymentTarget,
) -> Backend:
    """The package run by the executor (`precision` is its numeric mode, on the job's share of
    the cores), or by Core ML with every compute unit (compiled, its first prediction checked in
    a fresh process); where Core ML cannot run a model built for `target`, the backend says why."""
    if kind is EvaluationBackend.executor:
        from sortformer_build.executor.step import package_step

        recipe = BackendRecipe(
            package=package, geometry=geometry, d_model=d_model, kind=kind, precision=precision, target=target
        )
        step = package_step(package, precision)
        return Backend(f"executor-{precision.value}", geometry, d_model, step, recipe=recipe)
    found = host.for_target(target)
    if found.skip is not None:
        return Backend(kind.value, geometry, d_model, None, found.detail)
    return Backend(kind.value, geometry, d_model, macos.load_package(package).predict)
