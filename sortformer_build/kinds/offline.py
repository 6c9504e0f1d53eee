"""The offline kind: one fused program over a whole window of mel features, no streaming state;
a recording is covered by overlapping windows."""

from __future__ import annotations

import bisect
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sortformer_build import contract
from sortformer_build.contract import StepFunction
from sortformer_build.coreml.layout import OFFLINE_PROGRAM, SUBSAMPLING_WEIGHTS
from sortformer_build.geometry import SUBSAMPLING_FACTOR, Geometry, OfflineGeometry
from sortformer_build.kinds.base import Contract, ModelKind, Predict, TraceRecorder

if TYPE_CHECKING:
    from sortformer_build.compress.sensitivity import HeadInputs
    from sortformer_build.config import ExecutorPrecision, VariantConfig, VerifyConfig
    from sortformer_build.coreml.targets import DeploymentTarget
    from sortformer_build.records.manifest import WindowShapes
    from sortformer_build.records.mixed import AnalysisSettings
    from sortformer_build.records.parity import ParityFigures
    from sortformer_build.records.trace import TraceIndex
    from sortformer_build.stages.steps import StepLog
    from sortformer_build.verify.compare import Outputs, ParityRun, ReferenceData


class OfflineKind(ModelKind):
    name = "offline"
    geometry_type = OfflineGeometry
    converted = (OFFLINE_PROGRAM,)
    compressible = OFFLINE_PROGRAM
    compressed_part = "the encoder layers and Transformer (subsampling kept fp16)"
    package_programs = 1
    compressed_program = 0
    kept_prefix = SUBSAMPLING_WEIGHTS
    kept_part = "pre-encode subsampling"
    latency_rule = "the whole window: all its audio must be there before the one call"
    trace_unit = "window"

    def reads_metadata(self, metadata: dict[str, str]) -> bool:
        return "window_frames" in metadata

    def metadata_findings(self, metadata: dict[str, str]) -> list[str]:
        if metadata.get(contract.CHECKPOINT_VERSION):
            return []
        return [f"metadata: an offline model must say its {contract.CHECKPOINT_VERSION}"]

    def contract(self, geometry: Geometry, d_model: int) -> Contract:
        return contract.offline_contract(_offline(geometry))

    def shapes(self, geometry: Geometry) -> WindowShapes:
        from sortformer_build.records.manifest import WindowShapes

        offline = _offline(geometry)
        return WindowShapes(
            window_frames=offline.window_frames,
            prediction_frames=offline.output_frames,
            latency_seconds=offline.latency_seconds,
        )

    def help_line(self, variant: VariantConfig) -> str:
        geometry = _offline(variant.geometry)
        return (
            f"  {variant.name:<15} {variant.file_name:<27} latency {geometry.latency}  {geometry.describe()}"
        )

    def what(self, geometry: Geometry) -> str:
        return f"the offline model for a {_offline(geometry).window_frames}-frame window"

    def conversion_key(self, geometry: Geometry) -> dict[str, Any]:
        return {"window_frames": _offline(geometry).window_frames}

    def convert(
        self, model: Any, geometry: Geometry, target: DeploymentTarget, folder: Path, steps: StepLog
    ) -> None:
        from sortformer_build.coreml.convert import convert_program
        from sortformer_build.coreml.export import trace_window

        with steps.timed("trace", f"Tracing {self.what(geometry)}"):
            traced = trace_window(model, _offline(geometry))
        with steps.timed("convert", "Converting the program with coremltools"):
            convert_program(
                traced, {contract.OFFLINE_PREDS: np.float32}, target, {}, folder / OFFLINE_PROGRAM
            )

    def assemble(
        self,
        conversion: Path,
        compressible: Path,
        variant: VariantConfig,
        metadata: dict[str, str],
        destination: Path,
    ) -> None:
        from sortformer_build.coreml.convert import describe_offline

        describe_offline(compressible, _offline(variant.geometry), variant.version, metadata, destination)

    def reference_description(self) -> str:
        return "whole windows: full, short zero-padded, mostly silence"

    def reference(
        self, model: Any, geometry: Geometry, d_model: int, settings: VerifyConfig
    ) -> ReferenceData:
        from sortformer_build.verify.compare import compute_window_reference

        return compute_window_reference(model, _offline(geometry), settings)

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
        from sortformer_build.verify.compare import window_figures

        return window_figures(step, data, precision, outputs, twin)

    def device_figures(self, predict: Predict, data: ReferenceData) -> ParityFigures:
        from sortformer_build.records.parity import ParityFigures
        from sortformer_build.verify.compare import device_outputs
        from sortformer_build.verify.offline import compare_windows

        ours = device_outputs(predict, data)
        return ParityFigures(precision="core_ml", per_call_vs_nemo=compare_windows(ours, data.outputs))

    def nemo_call(self, model: Any) -> StepFunction:
        from sortformer_build.verify.offline import nemo_window

        return nemo_window(model)

    def recording_probabilities(
        self, geometry: Geometry, d_model: int, mel: np.ndarray, step: StepFunction
    ) -> np.ndarray:
        from sortformer_build.verify.offline import tile_windows

        return tile_windows(mel, _offline(geometry), step)

    def head_frames(self, geometry: Geometry) -> int:
        return _offline(geometry).output_frames

    def analysis_inputs(self, model: Any, geometry: Geometry, settings: AnalysisSettings) -> HeadInputs:
        from sortformer_build.compress.sensitivity import window_inputs

        return window_inputs(model, _offline(geometry), settings)

    def record_trace(
        self, geometry: Geometry, d_model: int, mel: np.ndarray, step: StepFunction, recorder: TraceRecorder
    ) -> np.ndarray:
        from sortformer_build.verify.offline import OFFLINE_OVERLAP_FRAMES, tile_windows

        offline = _offline(geometry)
        stride = (offline.output_frames - OFFLINE_OVERLAP_FRAMES) * SUBSAMPLING_FACTOR
        windows = itertools.count()

        def window(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = step(inputs)
            index = next(windows)
            recorder.window(index, index * stride, inputs, outputs)
            return outputs

        return tile_windows(mel, offline, window)

    def trace_entry_at(self, index: TraceIndex, mel_frame: int) -> int:
        starts = [entry.mel_start for entry in index.windows]
        return max(0, bisect.bisect_right(starts, mel_frame) - 1)


def _offline(geometry: Geometry) -> OfflineGeometry:
    if not isinstance(geometry, OfflineGeometry):
        raise TypeError(f"an offline model needs an offline geometry, got {geometry}")
    return geometry


OFFLINE = OfflineKind()
