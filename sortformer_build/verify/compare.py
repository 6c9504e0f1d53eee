"""Running packages against NeMo: the reference data (computed once per checkpoint and
geometry), a package as a step function, and the figures of one package against them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.config import ExecutorPrecision, VerifyConfig
from sortformer_build.geometry import FRAME_SECONDS, OfflineGeometry, StreamingGeometry
from sortformer_build.records.parity import ParityFigures
from sortformer_build.verify import reference
from sortformer_build.verify.parity import compare_calls, compare_streams, run_cases
from sortformer_build.verify.probabilities import Probabilities, stream_probabilities
from sortformer_build.verify.reference import StepFunction, StreamResult

Outputs = list[dict[str, np.ndarray]]

REFERENCE_FILE = "reference.npz"
OUTPUTS_FILE = "outputs.npz"


@dataclass
class ReferenceData:
    """NeMo's answers: per-call cases and outputs, and (streaming models) a whole stream of a
    synthetic conversation with its mel features."""

    cases: Outputs
    outputs: Outputs
    mel: np.ndarray | None = None
    stream: StreamResult | None = None

    @property
    def chunks(self) -> int | None:
        return None if self.stream is None else self.stream.chunks


@dataclass(frozen=True)
class ParityRun:
    """A package's figures, and the probabilities behind them (kept for the release report)."""

    figures: ParityFigures
    probabilities: Probabilities


def streaming_seconds(geometry: StreamingGeometry, settings: VerifyConfig) -> float:
    """The configured length, stretched to hold `streaming_min_chunks` chunks."""
    return max(settings.streaming_seconds, settings.streaming_min_chunks * geometry.chunk_len * FRAME_SECONDS)


def compute_reference(
    model: Any, geometry: StreamingGeometry, d_model: int, settings: VerifyConfig
) -> ReferenceData:
    """What NeMo computes for the per-step cases and for a stream."""
    cases = reference.chunk_cases(model, geometry, settings.seed)
    step = reference.nemo_step(model)
    outputs = run_cases(step, cases)
    audio = reference.synthetic_conversation(streaming_seconds(geometry, settings), settings.seed)
    mel = reference.mel_features(model, audio)
    modules = reference.streaming_modules(geometry, d_model)
    return ReferenceData(cases, outputs, mel, reference.stream(modules, geometry, mel, step))


def compute_window_reference(model: Any, geometry: OfflineGeometry, settings: VerifyConfig) -> ReferenceData:
    """What NeMo's non-streaming forward computes for the offline windows."""
    from sortformer_build.verify.offline import nemo_window, window_cases

    cases = window_cases(model, geometry, settings.seed)
    return ReferenceData(cases, run_cases(nemo_window(model), cases))


def save_reference(data: ReferenceData, folder: Path) -> None:
    extra: dict[str, np.ndarray] = {}
    if data.stream is not None:
        if data.mel is None:
            raise ValueError("a streaming reference needs the mel features of its stream")
        extra = {"mel": data.mel, **_stream_arrays(data.stream)}
    _save(folder / REFERENCE_FILE, data.cases, data.outputs, extra)


def load_reference(folder: Path, chunks: int | None) -> ReferenceData:
    """`chunks`: the stream's, None for a reference without a stream."""
    cases, outputs, extra = _load(folder / REFERENCE_FILE)
    if chunks is None:
        return ReferenceData(cases, outputs)
    stream = StreamResult(extra["preds"], extra["spkcache"], extra["fifo"], chunks)
    return ReferenceData(cases, outputs, extra["mel"], stream)


def save_outputs(outputs: Outputs, cases: Outputs, folder: Path) -> None:
    _save(folder / OUTPUTS_FILE, cases, outputs, {})


def load_outputs(folder: Path) -> Outputs:
    return _load(folder / OUTPUTS_FILE)[1]


def package_figures(
    step: StepFunction,
    data: ReferenceData,
    geometry: StreamingGeometry,
    d_model: int,
    precision: ExecutorPrecision,
    outputs: Outputs | None = None,
    twin: Outputs | None = None,
) -> ParityRun:
    """The package's figures: per step (`outputs` when already computed) and over the stream,
    against NeMo, and against its fp16 `twin` for a compressed package; the stream's
    probabilities beside them."""
    ours = outputs if outputs is not None else run_cases(step, data.cases)
    modules = reference.streaming_modules(geometry, d_model)
    mel, stream = need_stream(data)
    streamed = reference.stream(modules, geometry, mel, step)
    figures = ParityFigures(
        precision=precision.value,
        per_call_vs_nemo=compare_calls(ours, data.outputs, data.cases),
        streaming_vs_nemo=compare_streams(streamed, stream),
        per_call_vs_fp16=None if twin is None else compare_calls(ours, twin, data.cases),
    )
    return ParityRun(figures, stream_probabilities(streamed.preds, stream.preds, stream.chunks))


def need_stream(data: ReferenceData) -> tuple[np.ndarray, StreamResult]:
    if data.mel is None or data.stream is None:
        raise RuntimeError("a streaming model's reference was computed without its stream")
    return data.mel, data.stream


def window_figures(
    step: StepFunction,
    data: ReferenceData,
    precision: ExecutorPrecision,
    outputs: Outputs | None = None,
    twin: Outputs | None = None,
) -> ParityRun:
    """An offline package's figures per window against NeMo, and against its fp16 `twin` for a
    compressed package; streaming figures do not apply (absent, so not gated). The windows'
    probabilities beside them."""
    from sortformer_build.verify.offline import compare_windows, window_probabilities

    ours = outputs if outputs is not None else run_cases(step, data.cases)
    figures = ParityFigures(
        precision=precision.value,
        per_call_vs_nemo=compare_windows(ours, data.outputs),
        per_call_vs_fp16=None if twin is None else compare_windows(ours, twin),
    )
    return ParityRun(figures, window_probabilities(ours, data.outputs))


def device_outputs(
    predict: Callable[[dict[str, np.ndarray]], dict[str, Any]], data: ReferenceData
) -> Outputs:
    """Core ML's own predictions (macOS) for the reference inputs."""
    return [{name: np.asarray(value) for name, value in predict(case).items()} for case in data.cases]


def device_figures(
    predict: Callable[[dict[str, np.ndarray]], dict[str, Any]], data: ReferenceData
) -> ParityFigures:
    """Core ML's own predictions (macOS) for the per-step inputs, against NeMo."""
    ours = device_outputs(predict, data)
    return ParityFigures(precision="core_ml", per_call_vs_nemo=compare_calls(ours, data.outputs, data.cases))


def _stream_arrays(stream: StreamResult) -> dict[str, np.ndarray]:
    return {key: value for key, value in asdict(stream).items() if isinstance(value, np.ndarray)}


def _save(path: Path, cases: Outputs, outputs: Outputs, extra: dict[str, np.ndarray]) -> None:
    arrays = {f"case{i}/{name}": value for i, case in enumerate(cases) for name, value in case.items()}
    arrays |= {
        f"output{i}/{name}": value for i, output in enumerate(outputs) for name, value in output.items()
    }
    arrays |= {f"extra/{name}": value for name, value in extra.items()}
    np.savez(path, allow_pickle=False, **arrays)


def _load(path: Path) -> tuple[Outputs, Outputs, dict[str, np.ndarray]]:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for name, value in arrays.items():
        group, key = name.split("/", 1)
        grouped.setdefault(group, {})[key] = value
    count = sum(1 for group in grouped if group.startswith("case"))
    cases = [grouped[f"case{i}"] for i in range(count)]
    outputs = [grouped.get(f"output{i}", {}) for i in range(count)]
    return cases, outputs, grouped.get("extra", {})
