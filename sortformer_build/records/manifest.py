"""The manifest beside every published package: what was built, from what, how, and what
verification and evaluation found. Written by the deliver stage, read by the up-to-date check,
the dry run, the release matrix, the report and the Hugging Face release."""

from __future__ import annotations

import json
from typing import Final, Literal, Self

from pydantic import Field

from sortformer_build.config import BuildConfig
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.geometry import Geometry
from sortformer_build.records.base import Record, RecordError
from sortformer_build.records.device import DeviceReport
from sortformer_build.records.evaluation import DatasetEvaluation
from sortformer_build.records.mixed import AppliedRecipe
from sortformer_build.records.parity import ParityFigures
from sortformer_build.records.steps import SkipReason, StepRecord, StepStatus
from sortformer_build.records.trace import DeliveredTrace

MANIFEST_FORMAT: Final = 3


class ArtifactRecord(Record):
    file: str  # the package's name
    content_sha256: str  # `coreml.package.package_digest`: blind to coremltools' random identifiers
    bytes: int
    release_path: str  # `<precision folder>/<file name>.mlmodelc`, where the runtime downloads it


class VariantRecord(Record):
    name: str
    version: str  # of the checkpoint
    file_name: str
    released: bool  # False: a geometry changed from the published preset


class CompressionRecord(Record):
    name: str
    folder: str
    nbits: int | None  # None: fp16 weights, or mixed bits (`recipe`)
    release: bool
    # compression=mixed: the bits per group of head weights it applied, and per const.
    recipe: AppliedRecipe | None = None

    @property
    def is_fp16(self) -> bool:
        return self.nbits is None and self.recipe is None


class CheckpointRecord(Record):
    source: str  # hub, local, synthetic, tiny
    origin: str
    file: str
    sha256: str

    @property
    def random_weights(self) -> bool:
        """Synthetic and tiny checkpoints: DER against a ground truth means nothing for them."""
        return self.source in RANDOM_WEIGHT_SOURCES


RANDOM_WEIGHT_SOURCES = ("synthetic", "tiny")


class ParameterCounts(Record):
    """Parameter counts of a Sortformer model, split where the release splits its compression."""

    total: int
    pre_encoder: int  # kept at full precision
    head: int  # FastConformer, Transformer and speaker layers: what palettization compresses


class ToolVersions(Record):
    """Everything that shapes an artifact besides its config, weights and this package's code."""

    python: str
    torch: str
    coremltools: str
    nemo_toolkit: str
    numpy: str
    sortformer_build: str

    def describe(self) -> str:
        return ", ".join(f"{name.replace('_', '-')} {value}" for name, value in self.model_dump().items())


class StreamingShapes(Record):
    """What a streaming geometry implies, recorded so a reader needs no arithmetic."""

    chunk_mel_frames: int
    prediction_frames: int
    latency_seconds: float
    effective_update_period: int


class WindowShapes(Record):
    """What an offline window implies."""

    window_frames: int
    prediction_frames: int
    latency_seconds: float


Shapes = StreamingShapes | WindowShapes


class Verification(Record):
    """What the checks measured; whether each ran, passed or was skipped is in the steps."""

    parity: ParityFigures | None = None  # None: parity did not run
    on_device: ParityFigures | None = None  # Core ML's own predictions (macOS)
    device: DeviceReport | None = None  # the package on the Mac that built it


class Manifest(Record):
    format: Literal[3] = MANIFEST_FORMAT
    artifact: ArtifactRecord
    variant: VariantRecord
    compression: CompressionRecord
    deployment_target: DeploymentTarget
    geometry: Geometry
    shapes: Shapes
    checkpoint: CheckpointRecord
    parameters: ParameterCounts
    versions: ToolVersions
    # Digest of this package's modules that the job's stages run (see `store.fingerprint`).
    code: str
    steps: list[StepRecord]
    seconds: dict[str, float]  # per stage, and the parts of stages (restore, trace, convert)
    # Of everything the package depends on (not where files go, not its evaluations).
    job_digest: str
    config: BuildConfig  # as composed, overrides applied
    verification: Verification = Field(default_factory=Verification)
    # One per dataset the artifact was evaluated on, in the order they were added.
    evaluations: list[DatasetEvaluation] = Field(default_factory=list)
    trace: DeliveredTrace | None = None  # None: no reference trace was asked for

    def evaluation(self, digest: str) -> DatasetEvaluation | None:
        return next((evaluation for evaluation in self.evaluations if evaluation.digest == digest), None)

    def step(self, name: str) -> StepRecord | None:
        return next((step for step in self.steps if step.name == name), None)

    def steps_with(self, status: StepStatus) -> list[StepRecord]:
        return [step for step in self.steps if step.status is status]

    def skipped(self) -> dict[str, SkipReason | None]:
        """Each skipped check and why."""
        return {step.name: step.skip for step in self.steps_with(StepStatus.skipped)}

    @property
    def release_stem(self) -> str:
        """The release path without its suffix: `palettized/Sortformer_v2.1`."""
        return self.artifact.release_path.rsplit(".", 1)[0]

    @classmethod
    def parse(cls, text: str, source: str) -> Self:
        """Refuse a manifest of another format in one line, before its fields are read."""
        try:
            found = json.loads(text).get("format")
        except (ValueError, AttributeError):
            found = None
        if found is not None and found != MANIFEST_FORMAT:
            raise RecordError(
                f"{source} has manifest format {found}, this sortformer-build reads format "
                f"{MANIFEST_FORMAT}: rebuild the artifact with this version (the build replaces it)"
            )
        return super().parse(text, source)
