"""The manifest beside every published package: what was built, from what, how, and what
verification found. Written by the publish stage, read by the build's up-to-date check, the
dry run, the release matrix and publishing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sortformer_build.checkpoint.counts import ParameterCounts
from sortformer_build.config import BuildConfig, config_dict
from sortformer_build.coreml.package import package_digest
from sortformer_build.errors import BuildError
from sortformer_build.geometry import Geometry, OfflineGeometry, StreamingGeometry, geometry_from_dict
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.steps import Step
from sortformer_build.store.digests import digest_of
from sortformer_build.verify.parity import ParityFigures

MANIFEST_FORMAT = 2


class ManifestError(BuildError):
    """A manifest that cannot be read."""


@dataclass
class ArtifactRecord:
    file: str
    content_sha256: str  # `coreml.package.package_digest`: blind to coremltools' random identifiers
    bytes: int
    release_path: str


@dataclass
class CompressionRecord:
    name: str
    folder: str
    nbits: int | None
    release: bool

    @property
    def is_fp16(self) -> bool:
        return self.nbits is None


@dataclass
class DerivedShapes:
    """What the geometry implies, recorded so a reader needs no arithmetic."""

    chunk_mel_frames: int
    prediction_frames: int
    latency_seconds: float
    effective_update_period: int

    @classmethod
    def of(cls, geometry: StreamingGeometry) -> DerivedShapes:
        return cls(
            geometry.chunk_mel_frames,
            geometry.prediction_frames,
            geometry.latency_seconds,
            geometry.effective_update_period,
        )


@dataclass
class VariantRecord:
    name: str
    version: str  # of the checkpoint
    file_name: str
    released: bool  # False: a geometry changed from the published preset


# What a DER was measured against.
AGAINST_TRUTH, AGAINST_NEMO = "ground truth", "nemo"


@dataclass
class DerRecord:
    """A diarization error rate of the artifact (rates as fractions), overall or of one recording."""

    dataset: str
    against: str  # AGAINST_TRUTH, or AGAINST_NEMO: NeMo's own diarization of the same audio
    collar: float
    scored_overlap: bool
    der: float
    miss: float | None = None
    false_alarm: float | None = None
    confusion: float | None = None
    recording: str | None = None  # None: the whole dataset


@dataclass
class EvaluationRecord:
    """What the evaluation stage found; empty when the job did not evaluate."""

    der: list[DerRecord] = field(default_factory=list)  # vs ground truth, overall (the model card's)
    vs_nemo: DerRecord | None = None
    # DER minus the fp16 twin's, in percentage points (on ground truth, else vs NeMo).
    change_vs_fp16_pp: float | None = None
    recordings: list[DerRecord] = field(default_factory=list)
    backend: str | None = None
    audio_seconds: float | None = None
    real_time_factor: float | None = None  # the artifact's diarization, processing s per audio s
    nemo_real_time_factor: float | None = None  # NeMo's, when its diarization was computed
    rttm_dir: str | None = None
    skipped: str | None = None  # why the artifact could not be run here

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationRecord:
        vs_nemo = data.pop("vs_nemo", None)
        return cls(
            der=[DerRecord(**row) for row in data.pop("der", [])],
            recordings=[DerRecord(**row) for row in data.pop("recordings", [])],
            vs_nemo=None if vs_nemo is None else DerRecord(**vs_nemo),
            **data,
        )

    @property
    def done(self) -> bool:
        """Whether the job evaluated (or tried to, and says why it could not)."""
        return self.backend is not None or self.skipped is not None

    def summary(self) -> str:
        """One line: the three comparisons."""
        if self.skipped:
            return f"evaluation skipped: {self.skipped}"
        parts = [f"DER {row.der:.2%} vs {row.against} ({row.dataset})" for row in self.der]
        if self.vs_nemo is not None:
            parts.append(f"{self.vs_nemo.der:.2%} vs NeMo")
        if self.change_vs_fp16_pp is not None:
            parts.append(f"{self.change_vs_fp16_pp:+.2f} pp vs fp16")
        return ", ".join(parts)


@dataclass
class WindowShapes:
    """What an offline geometry implies."""

    window_frames: int
    prediction_frames: int
    latency_seconds: float


Shapes = DerivedShapes | WindowShapes


def shapes_of(geometry: Geometry) -> Shapes:
    if isinstance(geometry, OfflineGeometry):
        return WindowShapes(geometry.window_frames, geometry.output_frames, geometry.latency_seconds)
    return DerivedShapes.of(geometry)


@dataclass
class CheckpointRecord:
    source: str
    origin: str
    file: str
    sha256: str


@dataclass
class Manifest:
    artifact: ArtifactRecord
    variant: VariantRecord
    compression: CompressionRecord
    deployment_target: str
    geometry: Geometry
    shapes: Shapes
    checkpoint: CheckpointRecord
    parameters: ParameterCounts
    versions: dict[str, str]
    steps: list[Step]
    seconds: dict[str, float]  # per stage, and the parts of stages (restore, trace, convert)
    job_digest: str
    config: dict[str, Any]  # the resolved config, as composed
    verification: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationRecord = field(default_factory=EvaluationRecord)
    format: int = MANIFEST_FORMAT

    def parity(self) -> ParityFigures | None:
        figures = self.verification.get("parity")
        return ParityFigures.from_dict(figures) if figures else None

    def write(self, path: Path) -> None:
        from sortformer_build.store import atomic

        atomic.write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise ManifestError(
                    f"{path} has manifest format {data.get('format')}, expected {MANIFEST_FORMAT}"
                )
            geometry = geometry_from_dict(data["geometry"])
            shapes_type = WindowShapes if isinstance(geometry, OfflineGeometry) else DerivedShapes
            return cls(
                artifact=ArtifactRecord(**data["artifact"]),
                variant=VariantRecord(**data["variant"]),
                compression=CompressionRecord(**data["compression"]),
                deployment_target=data["deployment_target"],
                geometry=geometry,
                shapes=shapes_type(**data["shapes"]),
                checkpoint=CheckpointRecord(**data["checkpoint"]),
                parameters=ParameterCounts(**data["parameters"]),
                versions=data["versions"],
                steps=[Step(**step) for step in data["steps"]],
                seconds=data["seconds"],
                job_digest=data["job_digest"],
                config=data["config"],
                verification=data.get("verification", {}),
                evaluation=EvaluationRecord.from_dict(dict(data.get("evaluation", {}))),
                format=data["format"],
            )
        except FileNotFoundError:
            raise ManifestError(f"manifest {path} does not exist") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ManifestError(f"manifest {path} is unreadable ({type(error).__name__}: {error})") from None


def job_key(
    config: BuildConfig, checkpoint_sha256: str, versions: dict[str, str], dataset_sha256: str | None
) -> dict[str, Any]:
    """Everything a published artifact and its manifest depend on (not where files go); its
    digest is the manifest's `job_digest`. An evaluation adds its settings and the content of
    its dataset; without one the key is what it always was."""
    plain = config_dict(config)
    shaping = {key: plain[key] for key in ("variant", "compression", "deployment_target", "verify")}
    key = {"config": shaping, "checkpoint": checkpoint_sha256, "versions": versions}
    if config.evaluate is not None:
        key["evaluation"] = {"settings": plain["evaluate"], "dataset": dataset_sha256}
    return key


def job_digest(
    config: BuildConfig, checkpoint_sha256: str, versions: dict[str, str], dataset_sha256: str | None
) -> str:
    return digest_of(job_key(config, checkpoint_sha256, versions, dataset_sha256))


def published_manifest(config: BuildConfig, digest: str) -> Manifest | None:
    """The published manifest if it describes `digest` and the package beside it is intact."""
    paths = ArtifactPaths.of(config)
    try:
        manifest = Manifest.read(paths.manifest)
    except ManifestError:
        return None
    if manifest.job_digest != digest or not paths.package.is_dir():
        return None
    if package_digest(paths.package, config.digest_memo_dir) != manifest.artifact.content_sha256:
        return None
    return manifest
