"""What a model kind is: everything that differs between the streaming pipeline and the offline
model, asked of one object chosen once from the geometry. Heavy libraries are imported inside
the methods, so choosing a kind (and a dry run) imports none of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from sortformer_build.contract import StepFunction, TensorContract
from sortformer_build.geometry import Geometry

if TYPE_CHECKING:
    from sortformer_build.compress.sensitivity import HeadInputs
    from sortformer_build.config import ExecutorPrecision, VariantConfig, VerifyConfig
    from sortformer_build.coreml.targets import DeploymentTarget
    from sortformer_build.records.manifest import Shapes
    from sortformer_build.records.mixed import AnalysisSettings
    from sortformer_build.records.parity import ParityFigures
    from sortformer_build.records.trace import TraceIndex
    from sortformer_build.stages.steps import StepLog
    from sortformer_build.verify.compare import Outputs, ParityRun, ReferenceData
    from sortformer_build.verify.reference import ChunkStep

Predict = Callable[[dict[str, np.ndarray]], dict[str, Any]]
Contract = tuple[list[TensorContract], list[TensorContract]]


class TraceRecorder(Protocol):
    """What a kind's loop shows a reference trace (`trace.record.Recorder` writes it down)."""

    def chunk(self, step: ChunkStep, prediction_frames: int) -> None:
        """A streaming chunk, after NeMo's state update; `prediction_frames`: the contract's."""

    def window(
        self, index: int, mel_start: int, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> None:
        """An offline window starting at the recording's mel frame `mel_start`."""


class ModelKind(ABC):
    name: ClassVar[str]
    geometry_type: ClassVar[type[Geometry]]
    # The programs a conversion saves, in its cache entry's folder.
    converted: ClassVar[tuple[str, ...]]
    # The program palettization compresses, in a conversion entry and in a palettization entry.
    compressible: ClassVar[str]
    # What is palettized, in words.
    compressed_part: ClassVar[str]
    # The ML programs of an assembled package, in order; which one holds palettized weights, and
    # what keeps fp16 weights: a whole program, or the weights (const names) with a prefix.
    package_programs: ClassVar[int]
    compressed_program: ClassVar[int]
    kept_program: ClassVar[int | None] = None
    kept_prefix: ClassVar[str | None] = None
    kept_part: ClassVar[str]  # what keeps fp16 weights, in words
    # How its latency is defined, for --help, the matrix and the model card.
    latency_rule: ClassVar[str]
    # What a reference trace of it holds one entry per: `chunk` or `window` (`records.trace`).
    trace_unit: ClassVar[str]

    def serves(self, geometry: Geometry) -> bool:
        return type(geometry) is self.geometry_type

    @abstractmethod
    def reads_metadata(self, metadata: dict[str, str]) -> bool:
        """Whether a saved model's metadata describes a model of this kind."""

    def geometry_from_metadata(self, metadata: dict[str, str]) -> Geometry:
        return self.geometry_type.from_metadata(metadata)

    def metadata_findings(self, metadata: dict[str, str]) -> list[str]:
        """What the metadata must say beyond the geometry."""
        return []

    @abstractmethod
    def contract(self, geometry: Geometry, d_model: int) -> Contract:
        """The inputs and outputs the runtime feeds and reads."""

    @abstractmethod
    def shapes(self, geometry: Geometry) -> Shapes:
        """What the geometry implies, for the manifest."""

    @abstractmethod
    def help_line(self, variant: VariantConfig) -> str:
        """The variant option in one line of --help."""

    def help_notes(self, variants: list[VariantConfig]) -> list[str]:
        """What --help says once about these variant options, below their lines."""
        return []

    # Conversion and assembly.
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

    # NeMo's reference and the parity figures.
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
    ) -> ParityRun:
        """A package's figures against NeMo (and against its fp16 twin when compressed), and the
        probabilities they were measured on."""

    @abstractmethod
    def device_figures(self, predict: Predict, data: ReferenceData) -> ParityFigures:
        """Core ML's own predictions (macOS) against NeMo."""

    # A whole recording.
    @abstractmethod
    def nemo_call(self, model: Any) -> StepFunction:
        """NeMo's own model call for this kind: the exported streaming step, or the whole window."""

    @abstractmethod
    def recording_probabilities(
        self, geometry: Geometry, d_model: int, mel: np.ndarray, step: StepFunction
    ) -> np.ndarray:
        """Speaker probabilities (output frames, speakers) of a whole recording's mel features,
        as the runtime drives this kind: NeMo's streaming loop, or overlapping windows."""

    # Mixed-bit compression's analysis.
    @abstractmethod
    def head_frames(self, geometry: Geometry) -> int:
        """Frames of the compressed program's input (the head's sequence)."""

    @abstractmethod
    def analysis_inputs(self, model: Any, geometry: Geometry, settings: AnalysisSettings) -> HeadInputs:
        """Realistic inputs of the compressed program, as NeMo produces them on a conversation."""

    # Reference traces.
    @abstractmethod
    def record_trace(
        self, geometry: Geometry, d_model: int, mel: np.ndarray, step: StepFunction, recorder: TraceRecorder
    ) -> np.ndarray:
        """`recording_probabilities` with every model call (and, streaming, the state NeMo's
        update leaves) shown to `recorder`, one entry per `trace_unit`."""

    @abstractmethod
    def trace_entry_at(self, index: TraceIndex, mel_frame: int) -> int:
        """The entry of a trace of this kind that holds the recording's mel frame."""
