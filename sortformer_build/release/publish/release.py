"""A finished release as publishing sees it: the sweep's matrix and each package's manifest,
read by their own readers (`release.matrix.read_matrix`, `stages.manifest.Manifest.read`) and
flattened into what the checks, the model card and the staging need."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.geometry import Geometry
from sortformer_build.release.matrix import ReleaseRow, read_matrix
from sortformer_build.release.publish.errors import PublishError
from sortformer_build.stages import manifest as build_manifest
from sortformer_build.stages.manifest import DerRecord, ManifestError
from sortformer_build.verify import parity


@dataclass(frozen=True)
class Job:
    """One row of matrix.json: a job of the sweep, built or failed."""

    file_name: str
    variant: str
    compression: str
    ok: bool
    error: str | None
    # Relative to the output folder, e.g. `palettized/Sortformer_v2.1.mlpackage`; None if failed.
    package: str | None
    bytes: int | None
    ratio_to_fp16: float | None

    @property
    def label(self) -> str:
        return self.package or f"{self.file_name} ({self.compression})"


@dataclass(frozen=True)
class Matrix:
    jobs: list[Job]
    failed: int
    command: str | None


@dataclass(frozen=True)
class StepRecord:
    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class ParityFigures:
    """Agreement with NeMo (and, for palettized packages, with the fp16 twin), as verified."""

    precision: str
    step_max_abs_error: float
    step_decision_agreement: float
    step_argmax_agreement: float
    stream_chunks: int
    stream_max_abs_error: float
    stream_decision_agreement: float
    twin_decision_agreement: float | None
    twin_argmax_agreement: float | None


@dataclass(frozen=True)
class CheckpointRecord:
    source: str
    origin: str
    sha256: str
    # Checkpoint version (v2, v2.1) the variant asked for.
    version: str


@dataclass(frozen=True)
class Manifest:
    path: Path
    # sha256 of the manifest file itself: release.json names it so a download can be traced back.
    file_sha256: str
    file_name: str
    variant: str
    compression: str
    folder: str
    nbits: int | None
    deployment_target: str
    content_sha256: str
    bytes: int
    # `<folder>/<file name>.mlmodelc`, the path under the repo's release folder.
    release_path: str
    geometry: Geometry
    checkpoint: CheckpointRecord
    versions: dict[str, str]
    steps: list[StepRecord]
    parity: ParityFigures | None
    evaluation: list[DerRecord]
    job_digest: str

    @property
    def release_stem(self) -> str:
        """The release path without its suffix: `palettized/Sortformer_v2.1`."""
        return self.release_path.rsplit(".", 1)[0]

    def step(self, name: str) -> StepRecord | None:
        return next((step for step in self.steps if step.name == name), None)


@dataclass(frozen=True)
class Model:
    """A job the matrix lists as built, with its package and manifest (either may be missing)."""

    job: Job
    package: Path
    manifest_path: Path
    manifest: Manifest | None


@dataclass(frozen=True)
class Release:
    folder: Path
    matrix: Matrix
    models: list[Model]


def read_release(folder: Path) -> Release:
    """Raise PublishError when the folder holds no readable matrix.json."""
    matrix = _read_matrix(folder)
    models = []
    for job in matrix.jobs:
        if job.ok and job.package:
            package = folder / job.package
            manifest_path = package.with_suffix(".json")
            manifest = read_manifest(manifest_path) if manifest_path.is_file() else None
            models.append(Model(job, package, manifest_path, manifest))
    return Release(folder, matrix, models)


def _read_matrix(folder: Path) -> Matrix:
    try:
        summary = read_matrix(folder)
    except FileNotFoundError:
        raise PublishError(
            f"{folder} holds no release matrix: publish the output folder of a finished sweep "
            "(sortformer-build --multirun ...)"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise PublishError(f"{folder}: unreadable release matrix ({error})") from None
    return Matrix(
        jobs=[_job(row) for row in summary.artifacts], failed=summary.failed, command=summary.command
    )


def _job(row: ReleaseRow) -> Job:
    return Job(
        file_name=row.file_name or "?",
        variant=row.variant or "?",
        compression=row.compression or "?",
        ok=row.ok,
        error=row.error,
        package=row.package,
        bytes=row.bytes,
        ratio_to_fp16=row.ratio_to_fp16,
    )


def read_manifest(path: Path) -> Manifest:
    try:
        record = build_manifest.Manifest.read(path)
    except ManifestError as error:
        raise PublishError(str(error)) from None
    return Manifest(
        path=path,
        file_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        file_name=record.variant.file_name,
        variant=record.variant.name,
        compression=record.compression.name,
        folder=record.compression.folder,
        nbits=record.compression.nbits,
        deployment_target=record.deployment_target,
        content_sha256=record.artifact.content_sha256,
        bytes=record.artifact.bytes,
        release_path=record.artifact.release_path,
        geometry=record.geometry,
        checkpoint=CheckpointRecord(
            source=record.checkpoint.source,
            origin=record.checkpoint.origin,
            sha256=record.checkpoint.sha256,
            version=record.variant.version,
        ),
        versions=dict(record.versions),
        steps=[StepRecord(step.name, step.status, step.detail) for step in record.steps],
        parity=_parity(record.parity()),
        evaluation=list(record.evaluation.der),
        job_digest=record.job_digest,
    )


def _parity(figures: parity.ParityFigures | None) -> ParityFigures | None:
    """None when parity did not run."""
    if figures is None:
        return None
    step, stream, twin = figures.per_step_vs_nemo.overall, figures.streaming_vs_nemo, figures.per_step_vs_fp16
    return ParityFigures(
        precision=figures.precision,
        step_max_abs_error=step.max_abs_prob_error,
        step_decision_agreement=step.decision_agreement,
        step_argmax_agreement=step.argmax_agreement,
        stream_chunks=stream.chunks if stream else 0,
        stream_max_abs_error=stream.agreement.max_abs_prob_error if stream else 0.0,
        stream_decision_agreement=stream.agreement.decision_agreement if stream else 0.0,
        twin_decision_agreement=twin.overall.decision_agreement if twin else None,
        twin_argmax_agreement=twin.overall.argmax_agreement if twin else None,
    )
