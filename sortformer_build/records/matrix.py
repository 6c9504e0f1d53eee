"""matrix.json: the rows of the last sweep that wrote to an output folder, each a job's status and
the manifest of what it published (a view over manifests: nothing of theirs is copied into
fields of its own)."""

from __future__ import annotations

from typing import Final, Literal

from sortformer_build.records.base import Record
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.status import JobStatus

MATRIX_FORMAT: Final = 1
SUMMARY_STEM = "matrix"


class MatrixRow(Record):
    status: JobStatus
    manifest: Manifest | None  # None: the job failed, or its manifest could not be read
    ratio_to_fp16: float | None = None  # package size over its fp16 twin's, when both were built

    @property
    def built(self) -> bool:
        return self.status.ok and self.manifest is not None

    @property
    def package(self) -> str | None:
        """Relative to the output folder: `palettized/Sortformer_v2.1.mlpackage`."""
        if self.manifest is None:
            return None
        return f"{self.manifest.compression.folder}/{self.manifest.artifact.file}"

    @property
    def label(self) -> str:
        return self.package or f"{self.status.file_name or '?'} ({self.status.compression or '?'})"


class ReleaseMatrix(Record):
    format: Literal[1] = MATRIX_FORMAT
    rows: list[MatrixRow]
    command: str | None = None  # the sweep as typed

    @property
    def failed(self) -> int:
        return sum(not row.status.ok for row in self.rows)
