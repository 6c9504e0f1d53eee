"""The one reader of a finished release: `<output_dir>/matrix.json` (written by the sweep) and the
manifest beside each package (written by the build), parsed into typed values. Nothing else in
the publish command reads those files.

A manifest may carry an `evaluation` section with diarization error rates, read as
`{"der": [{"dataset": str, "collar": float, "scored_overlap": bool, "der": float,
"miss": float?, "false_alarm": float?, "confusion": float?}]}` (rates as fractions). A matrix may
carry the sweep's `command` line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..geometry import StreamingGeometry
from .errors import PublishError

MATRIX_FILE = "matrix.json"


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
class DerFigure:
    dataset: str
    collar: float
    scored_overlap: bool
    der: float
    miss: float | None
    false_alarm: float | None
    confusion: float | None


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
    geometry: StreamingGeometry
    checkpoint: CheckpointRecord
    versions: dict[str, str]
    steps: list[StepRecord]
    parity: ParityFigures | None
    evaluation: list[DerFigure]
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
    matrix = _read_matrix(folder / MATRIX_FILE)
    models = []
    for job in matrix.jobs:
        if job.ok and job.package:
            package = folder / job.package
            manifest_path = package.with_suffix(".json")
            manifest = read_manifest(manifest_path) if manifest_path.is_file() else None
            models.append(Model(job, package, manifest_path, manifest))
    return Release(folder, matrix, models)


def _read_matrix(path: Path) -> Matrix:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise PublishError(
            f"{path} does not exist: publish the output folder of a finished sweep "
            "(sortformer-build --multirun ...)"
        ) from None
    except ValueError as error:
        raise PublishError(f"{path} is not valid JSON: {error}") from None
    try:
        jobs = [_job(row) for row in document["artifacts"]]
        return Matrix(jobs=jobs, failed=int(document["failed"]), command=document.get("command"))
    except (KeyError, TypeError, ValueError) as error:
        raise PublishError(f"{path} is not a sweep summary (missing or bad {error})") from None


def _job(row: dict[str, Any]) -> Job:
    return Job(
        file_name=row.get("file_name") or "?",
        variant=row.get("variant") or "?",
        compression=row.get("compression") or "?",
        ok=bool(row["ok"]),
        error=row.get("error"),
        package=row.get("package"),
        bytes=row.get("bytes"),
        ratio_to_fp16=row.get("ratio_to_fp16"),
    )


def read_manifest(path: Path) -> Manifest:
    data = path.read_bytes()
    try:
        record = json.loads(data)
        return _manifest(path, hashlib.sha256(data).hexdigest(), record)
    except (KeyError, TypeError, ValueError) as error:
        raise PublishError(f"{path} is not a build manifest (missing or bad {error})") from None


def _manifest(path: Path, file_sha256: str, record: dict[str, Any]) -> Manifest:
    artifact, config, checkpoint = record["artifact"], record["config"], record["checkpoint"]
    variant, compression = config["variant"], config["compression"]
    verification = record.get("verification") or {}
    return Manifest(
        path=path,
        file_sha256=file_sha256,
        file_name=variant["file_name"],
        variant=variant["name"],
        compression=compression["name"],
        folder=compression["folder"],
        nbits=compression["nbits"],
        deployment_target=config["deployment_target"],
        content_sha256=artifact["content_sha256"],
        bytes=int(artifact["bytes"]),
        release_path=artifact["release_path"],
        geometry=StreamingGeometry.from_metadata(record["geometry"]),
        checkpoint=CheckpointRecord(
            source=checkpoint["source"],
            origin=checkpoint["origin"],
            sha256=checkpoint["sha256"],
            version=variant["version"],
        ),
        versions={str(key): str(value) for key, value in record["versions"].items()},
        steps=[
            StepRecord(step["name"], step["status"], step.get("detail") or "") for step in record["steps"]
        ],
        parity=_parity(verification.get("parity")),
        evaluation=[_der(entry) for entry in (record.get("evaluation") or {}).get("der", [])],
        job_digest=record["job_digest"],
    )


def _parity(figures: Any) -> ParityFigures | None:
    """None when parity did not run (the manifest then holds a `skipped (...)` string)."""
    if not isinstance(figures, dict):
        return None
    step, stream = figures["per_step_vs_nemo"]["overall"], figures["streaming_vs_nemo"]
    twin = (figures.get("per_step_vs_fp16") or {}).get("overall") or {}
    return ParityFigures(
        precision=figures["precision"],
        step_max_abs_error=step["max_abs_prob_error"],
        step_decision_agreement=step["decision_agreement"],
        step_argmax_agreement=step["argmax_agreement"],
        stream_chunks=stream["chunks"],
        stream_max_abs_error=stream["max_abs_prob_error"],
        stream_decision_agreement=stream["decision_agreement"],
        twin_decision_agreement=twin.get("decision_agreement"),
        twin_argmax_agreement=twin.get("argmax_agreement"),
    )


def _der(entry: dict[str, Any]) -> DerFigure:
    return DerFigure(
        dataset=entry["dataset"],
        collar=float(entry["collar"]),
        scored_overlap=bool(entry["scored_overlap"]),
        der=float(entry["der"]),
        miss=entry.get("miss"),
        false_alarm=entry.get("false_alarm"),
        confusion=entry.get("confusion"),
    )
