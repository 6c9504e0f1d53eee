"""The streaming kind: a pipeline of pre-encoder and head, called chunk by chunk with a speaker
cache and FIFO that NeMo's state update keeps between calls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sortformer_build import contract
from sortformer_build.contract import StepFunction
from sortformer_build.coreml.layout import HEAD_PROGRAM, PRE_ENCODER_PROGRAM, ProgramFiles
from sortformer_build.geometry import SUBSAMPLING_FACTOR, Geometry, StreamingGeometry
from sortformer_build.kinds.base import Contract, ModelKind, Predict, TraceRecorder

if TYPE_CHECKING:
    from sortformer_build.compress.sensitivity import HeadInputs
    from sortformer_build.config import ExecutorPrecision, VariantConfig, VerifyConfig
    from sortformer_build.coreml.targets import DeploymentTarget
    from sortformer_build.records.manifest import StreamingShapes
    from sortformer_build.records.mixed import AnalysisSettings
    from sortformer_build.records.parity import ParityFigures
    from sortformer_build.records.trace import TraceIndex
    from sortformer_build.stages.steps import StepLog
    from sortformer_build.verify.compare import Outputs, ParityRun, ReferenceData


class StreamingKind(ModelKind):
    name = "streaming"
    geometry_type = StreamingGeometry
    converted = (PRE_ENCODER_PROGRAM, HEAD_PROGRAM)
    compressible = HEAD_PROGRAM
    compressed_part = "the head"
    package_programs = 2
    compressed_program = 1
    kept_program = 0
    kept_part = "the pre-encoder"
    latency_rule = "the output latency of one streaming step: (chunk + right context) x 80 ms"
    trace_unit = "chunk"

    def reads_metadata(self, metadata: dict[str, str]) -> bool:
        return "chunk_len" in metadata

    def contract(self, geometry: Geometry, d_model: int) -> Contract:
        return contract.pipeline_contract(_streaming(geometry), d_model)

    def shapes(self, geometry: Geometry) -> StreamingShapes:
        from sortformer_build.records.manifest import StreamingShapes

        streaming = _streaming(geometry)
        return StreamingShapes(
            chunk_mel_frames=streaming.chunk_mel_frames,
            prediction_frames=streaming.prediction_frames,
            latency_seconds=streaming.latency_seconds,
            effective_update_period=streaming.effective_update_period,
        )

    def help_line(self, variant: VariantConfig) -> str:
        geometry = _streaming(variant.geometry)
        period = f"period {geometry.spkcache_update_period}"
        if geometry.effective_update_period != geometry.spkcache_update_period:
            period += "*"
        return (
            f"  {variant.name:<15} {variant.file_name:<27} latency {geometry.latency_seconds:>5.2f} s"
            f"  chunk {geometry.chunk_len:>3}  fifo {geometry.fifo_len:>3}"
            f"  spkcache {geometry.spkcache_len}  {period}"
        )

    def help_notes(self, variants: list[VariantConfig]) -> list[str]:
        clamped = sorted(
            {
                (geometry.spkcache_update_period, geometry.effective_update_period)
                for geometry in (_streaming(variant.geometry) for variant in variants)
                if geometry.effective_update_period != geometry.spkcache_update_period
            }
        )
        if not clamped:
            return []
        runs = ", ".join(f"{period} runs as {effective}" for period, effective in clamped)
        return [f"* NVIDIA's preset period; NeMo and the runtimes clamp it to [chunk, fifo + chunk]: {runs}"]

    def what(self, geometry: Geometry) -> str:
        return f"the pre-encoder and head for a {_streaming(geometry).chunk_mel_frames}-frame chunk"

    def conversion_key(self, geometry: Geometry) -> dict[str, Any]:
        streaming = _streaming(geometry)
        return {
            "chunk_mel_frames": streaming.chunk_mel_frames,
            "spkcache_len": streaming.spkcache_len,
            "fifo_len": streaming.fifo_len,
        }

    def convert(
        self, model: Any, geometry: Geometry, target: DeploymentTarget, folder: Path, steps: StepLog
    ) -> None:
        from sortformer_build.coreml.convert import convert_programs
        from sortformer_build.coreml.export import trace

        with steps.timed("trace", f"Tracing {self.what(geometry)}"):
            traced = trace(model, _streaming(geometry))
        with steps.timed("convert", "Converting both programs with coremltools"):
            convert_programs(traced, target, folder)

    def assemble(
        self,
        conversion: Path,
        compressible: Path,
        variant: VariantConfig,
        metadata: dict[str, str],
        destination: Path,
    ) -> None:
        from sortformer_build.coreml.convert import assemble_pipeline

        programs = ProgramFiles(ProgramFiles.in_folder(conversion).pre_encoder, compressible)
        assemble_pipeline(programs, _streaming(variant.geometry), metadata, destination)

    def reference_description(self) -> str:
        return "per step and a synthetic conversation"

    def reference_key(self, geometry: Geometry, settings: VerifyConfig) -> dict[str, Any]:
        from sortformer_build.verify.compare import streaming_seconds

        return {"streaming_seconds": streaming_seconds(_streaming(geometry), settings)}

    def reference(
        self, model: Any, geometry: Geometry, d_model: int, settings: VerifyConfig
    ) -> ReferenceData:
        from sortformer_build.verify.compare import compute_reference

        return compute_reference(model, _streaming(geometry), d_model, settings)

    def figures(
        self,
        step: StepFunction,
        data: ReferenceData,
        geometry: Geometry,
        d_model: int,
        precision: ExecutorPrecision,
        outputs: Outputs | None,
        twin: Outputs | None,
    ) -> ParityRun:
        from sortformer_build.verify.compare import package_figures

        return package_figures(step, data, _streaming(geometry), d_model, precision, outputs, twin)

    def device_figures(self, predict: Predict, data: ReferenceData) -> ParityFigures:
        from sortformer_build.verify.compare import device_figures

        return device_figures(predict, data)

    def nemo_call(self, model: Any) -> StepFunction:
        from sortformer_build.verify.reference import nemo_step

        return nemo_step(model)

    def recording_probabilities(
        self, geometry: Geometry, d_model: int, mel: np.ndarray, step: StepFunction
    ) -> np.ndarray:
        from sortformer_build.verify.reference import stream, streaming_modules

        streaming = _streaming(geometry)
        return stream(streaming_modules(streaming, d_model), streaming, mel, step).preds

    def head_frames(self, geometry: Geometry) -> int:
        return _streaming(geometry).prediction_frames

    def analysis_inputs(self, model: Any, geometry: Geometry, settings: AnalysisSettings) -> HeadInputs:
        from sortformer_build.compress.sensitivity import streaming_inputs

        return streaming_inputs(model, _streaming(geometry), settings)

    def record_trace(
        self, geometry: Geometry, d_model: int, mel: np.ndarray, step: StepFunction, recorder: TraceRecorder
    ) -> np.ndarray:
        from sortformer_build.verify.reference import stream, streaming_modules

        streaming = _streaming(geometry)
        modules = streaming_modules(streaming, d_model)
        frames = streaming.prediction_frames
        return stream(modules, streaming, mel, step, lambda chunk: recorder.chunk(chunk, frames)).preds

    def trace_entry_at(self, index: TraceIndex, mel_frame: int) -> int:
        return mel_frame // (_streaming(index.geometry).chunk_len * SUBSAMPLING_FACTOR)


def _streaming(geometry: Geometry) -> StreamingGeometry:
    if not isinstance(geometry, StreamingGeometry):
        raise TypeError(f"a streaming model needs a streaming geometry, got {geometry}")
    return geometry


STREAMING = StreamingKind()
