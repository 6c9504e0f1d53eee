"""What a stage does differently for a streaming model (a pipeline of pre-encoder and head) and
an offline one (one fused program over a whole window): the one seam stages dispatch through.

`model_kind(geometry)` picks the kind from the variant's geometry; the stages ask it what to
convert, which program to palettize and what to keep fp16, how to assemble the package, and
how to compute NeMo's reference and the package's figures. Heavy libraries are imported inside
the methods, so a dry run imports none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.config import ExecutorPrecision, VariantConfig, VerifyConfig
from sortformer_build.coreml.layout import (
    HEAD_PROGRAM,
    OFFLINE_PROGRAM,
    PRE_ENCODER_PROGRAM,
    SUBSAMPLING_WEIGHTS,
    ProgramFiles,
)
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.geometry import Geometry, OfflineGeometry, StreamingGeometry
from sortformer_build.stages.steps import StepLog
from sortformer_build.verify.compare import Outputs, ReferenceData
from sortformer_build.verify.parity import ParityFigures
from sortformer_build.verify.reference import StepFunction

Predict = Callable[[dict[str, np.ndarray]], dict[str, Any]]


class ModelKind(ABC):
    # The programs a conversion saves, in its entry's folder.
    converted: tuple[str, ...]
    # The program palettization compresses, in a conversion entry and in a palettization entry.
    compressible: str
    # Weights (const names) of the compressible program that stay fp16; None: all are palettized.
    keep_prefix: str | None = None
    # What is palettized, in words for the log.
    compressed_part: str

    @abstractmethod
    def what(self, geometry: Geometry) -> str:
        """What the conversion makes, in words for the log."""

    @abstractmethod
    def conversion_key(self, geometry: Geometry) -> dict[str, Any]:
        """The geometry facts a conversion depends on."""

    @abstractmethod
    def convert(
        self, model: Any, geometry: Geometry, target: DeploymentTarget, folder: Path, steps: StepLog
    ) -> None:
        """Trace NeMo's modules and save the fp16 programs into `folder`."""

    @abstractmethod
    def assemble(
        self,
        conversion: Path,
        compressible: Path,
        variant: VariantConfig,
        metadata: dict[str, str],
        destination: Path,
    ) -> None:
        """The runtime's package from a conversion entry and the (compressed or not) program."""

    @abstractmethod
    def reference_description(self) -> str:
        """Which reference cases NeMo computes, in words."""

    def reference_key(self, geometry: Geometry, settings: VerifyConfig) -> dict[str, Any]:
        """What the reference cases depend on beyond the weights, geometry and seed."""
        return {}

    @abstractmethod
    def reference(
        self, model: Any, geometry: Geometry, d_model: int, settings: VerifyConfig
    ) -> ReferenceData:
        """NeMo's answers on the reference cases."""

    @abstractmethod
    def figures(
        self,
        step: StepFunction,
        data: ReferenceData,
        geometry: Geometry,
        d_model: int,
        precision: ExecutorPrecision,
        outputs: Outputs | None,
        twin: Outputs | None,
    ) -> ParityFigures:
        """A package's figures against NeMo (and against its fp16 twin when compressed)."""

    @abstractmethod
    def device_figures(self, predict: Predict, data: ReferenceData) -> ParityFigures:
        """Core ML's own predictions (macOS) against NeMo."""


class StreamingKind(ModelKind):
    converted = (PRE_ENCODER_PROGRAM, HEAD_PROGRAM)
    compressible = HEAD_PROGRAM
    compressed_part = "the head"

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
    ) -> ParityFigures:
        from sortformer_build.verify.compare import package_figures

        return package_figures(step, data, _streaming(geometry), d_model, precision, outputs, twin)

    def device_figures(self, predict: Predict, data: ReferenceData) -> ParityFigures:
        from sortformer_build.verify.compare import device_figures

        return device_figures(predict, data)


class OfflineKind(ModelKind):
    converted = (OFFLINE_PROGRAM,)
    compressible = OFFLINE_PROGRAM
    keep_prefix = SUBSAMPLING_WEIGHTS
    compressed_part = "the encoder layers and Transformer (subsampling kept fp16)"

    def what(self, geometry: Geometry) -> str:
        return f"the offline model for a {_offline(geometry).window_frames}-frame window"

    def conversion_key(self, geometry: Geometry) -> dict[str, Any]:
        return {"window_frames": _offline(geometry).window_frames}

    def convert(
        self, model: Any, geometry: Geometry, target: DeploymentTarget, folder: Path, steps: StepLog
    ) -> None:
        from sortformer_build import contract
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
    ) -> ParityFigures:
        from sortformer_build.verify.compare import window_figures

        return window_figures(step, data, precision, outputs, twin)

    def device_figures(self, predict: Predict, data: ReferenceData) -> ParityFigures:
        from sortformer_build.verify.compare import device_outputs
        from sortformer_build.verify.offline import compare_windows

        ours = device_outputs(predict, data)
        return ParityFigures(precision="core_ml", per_step_vs_nemo=compare_windows(ours, data.outputs))


def _streaming(geometry: Geometry) -> StreamingGeometry:
    if not isinstance(geometry, StreamingGeometry):
        raise TypeError(f"a streaming model needs a streaming geometry, got {geometry}")
    return geometry


def _offline(geometry: Geometry) -> OfflineGeometry:
    if not isinstance(geometry, OfflineGeometry):
        raise TypeError(f"an offline model needs an offline geometry, got {geometry}")
    return geometry


def model_kind(geometry: Geometry) -> ModelKind:
    """The kind of model `geometry` describes."""
    return OFFLINE if isinstance(geometry, OfflineGeometry) else STREAMING


STREAMING, OFFLINE = StreamingKind(), OfflineKind()
