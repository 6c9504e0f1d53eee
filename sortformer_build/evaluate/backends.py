"""What turns a recording's mel features into speaker probabilities: NeMo itself, a package run
by sortformer-build's executor, or Core ML (macOS).

A streaming backend supplies one model call (a `StepFunction`) inside NeMo's own streaming loop
(`verify.reference.stream`: chunk loader, state update, speaker-cache compression); an offline
backend supplies one call per window, tiled over the recording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.config import EvaluationBackend, ExecutorPrecision
from sortformer_build.coreml import macos
from sortformer_build.evaluate.parallel import BackendRecipe
from sortformer_build.geometry import NUM_SPEAKERS, SUBSAMPLING_FACTOR, OfflineGeometry, StreamingGeometry
from sortformer_build.verify.reference import StepFunction

# Output frames two neighbouring offline windows share: their speakers are matched over it.
OFFLINE_OVERLAP_FRAMES = 100


@dataclass(frozen=True)
class StreamingBackend:
    name: str
    geometry: StreamingGeometry
    d_model: int
    step: StepFunction | None  # None: cannot run on this platform
    unavailable: str | None = None  # why not, e.g. macos.NEEDS_MACOS
    recipe: BackendRecipe | None = None  # how a worker process makes it again; None: it cannot

    def predict(self, mel: np.ndarray) -> np.ndarray:
        """Speaker probabilities (output frames, speakers) through NeMo's streaming loop."""
        from sortformer_build.verify.reference import stream, streaming_modules

        modules = streaming_modules(self.geometry, self.d_model)
        return stream(modules, self.geometry, mel, _runnable(self.step, self.unavailable)).preds


@dataclass(frozen=True)
class OfflineBackend:
    name: str
    geometry: OfflineGeometry
    step: StepFunction | None
    unavailable: str | None = None
    recipe: BackendRecipe | None = None

    def predict(self, mel: np.ndarray) -> np.ndarray:
        """Speaker probabilities (output frames, speakers), window by window."""
        from tqdm import tqdm

        step = _runnable(self.step, self.unavailable)
        frames = math.ceil(mel.shape[2] / SUBSAMPLING_FACTOR)
        stride = self.geometry.output_frames - OFFLINE_OVERLAP_FRAMES
        windows = 1 + math.ceil(max(0, frames - self.geometry.output_frames) / stride)
        # Shown on a terminal only, like the streaming loop's chunks.
        with tqdm(
            total=windows, desc="  window by window", unit=" windows", leave=False, disable=None
        ) as progress:

            def window(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                outputs = step(inputs)
                progress.update()
                return outputs

            return tile_windows(mel, self.geometry, window)


Backend = StreamingBackend | OfflineBackend


def _runnable(step: StepFunction | None, unavailable: str | None) -> StepFunction:
    if step is None:
        raise RuntimeError(f"this backend cannot run here: {unavailable}")
    return step


def nemo_backend(model: Any, geometry: StreamingGeometry | OfflineGeometry) -> Backend:
    """NeMo's own forward: the exported streaming step, or the whole-window path."""
    if isinstance(geometry, OfflineGeometry):
        from sortformer_build.verify.offline import nemo_window

        return OfflineBackend("nemo", geometry, nemo_window(model))
    from sortformer_build.verify.reference import nemo_step

    return StreamingBackend("nemo", geometry, int(model.encoder.d_model), nemo_step(model))


def package_backend(
    package: Path,
    geometry: StreamingGeometry | OfflineGeometry,
    d_model: int,
    kind: EvaluationBackend,
    precision: ExecutorPrecision,
) -> Backend:
    """The package run by the executor (`precision` is its numeric mode, on the job's share of the
    cores), or by Core ML with every compute unit; off macOS a Core ML backend says why it cannot
    run."""
    step, unavailable, name, recipe = None, None, kind.value, None
    if kind is EvaluationBackend.executor:
        from sortformer_build.verify.compare import package_step

        step, name = package_step(package, precision), f"executor-{precision.value}"
        recipe = BackendRecipe(
            package=package, geometry=geometry, d_model=d_model, kind=kind, precision=precision
        )
    elif macos.available():
        step = _coreml_step(macos.load_package(package))
    else:
        unavailable = macos.NEEDS_MACOS
    if isinstance(geometry, OfflineGeometry):
        return OfflineBackend(name, geometry, step, unavailable, recipe)
    return StreamingBackend(name, geometry, d_model, step, unavailable, recipe)


def _coreml_step(model: Any) -> StepFunction:
    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in model.predict(inputs).items()}

    return step


def tile_windows(mel: np.ndarray, geometry: OfflineGeometry, step: StepFunction) -> np.ndarray:
    """Speaker probabilities (output frames, speakers) of a whole recording from an offline
    model: windows overlapping by OFFLINE_OVERLAP_FRAMES output frames; each window's speaker
    columns are permuted to agree best with the timeline over the overlap (a window numbers
    speakers by arrival, its own), then averaged there."""
    total = math.ceil(mel.shape[2] / SUBSAMPLING_FACTOR)
    timeline = np.zeros((total, NUM_SPEAKERS), dtype=np.float32)
    stride = geometry.output_frames - OFFLINE_OVERLAP_FRAMES
    start = filled = 0
    while filled < total:
        chunk = mel[:, :, start * SUBSAMPLING_FACTOR :][:, :, : geometry.window_frames]
        padded = np.zeros((1, mel.shape[1], geometry.window_frames), dtype=np.float32)
        padded[:, :, : chunk.shape[2]] = chunk
        inputs = {contract.MEL: padded, contract.MEL_LENGTH: np.array([chunk.shape[2]], dtype=np.int32)}
        preds = np.asarray(step(inputs)[contract.OFFLINE_PREDS], dtype=np.float32)[0, : total - start]
        overlap = filled - start
        if overlap > 0:
            preds = preds[:, _best_permutation(timeline[start:filled], preds[:overlap])]
            timeline[start:filled] = (timeline[start:filled] + preds[:overlap]) / 2
        timeline[filled : start + preds.shape[0]] = preds[overlap:]
        filled = start + preds.shape[0]
        start += stride
    return timeline


def _best_permutation(timeline: np.ndarray, window: np.ndarray) -> list[int]:
    """The column order of `window` that agrees most with `timeline` (sum of products)."""
    return list(
        max(permutations(range(NUM_SPEAKERS)), key=lambda order: float(np.sum(timeline * window[:, order])))
    )
