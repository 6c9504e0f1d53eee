"""A finished release as publishing sees it: the sweep's matrix and, for each model it lists as
built, the package and the manifest on disk beside it (read by their own records)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.records.base import RecordError
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import MatrixRow, ReleaseMatrix
from sortformer_build.release.hub.errors import PublishError
from sortformer_build.release.matrix import matrix_path
from sortformer_build.stages.artifact import ArtifactPaths


@dataclass(frozen=True)
class Model:
    """A job the matrix lists as built, with its package and manifest as they are on disk now."""

    row: MatrixRow
    paths: ArtifactPaths
    manifest: Manifest | None  # None: missing or unreadable (`problem` says which)
    problem: str | None = None
    # sha256 of the manifest file: release.json names it so a download can be traced back.
    manifest_sha256: str | None = None

    @property
    def label(self) -> str:
        return self.row.label

    def trace_files(self) -> tuple[Path, Path] | None:
        """NeMo's reference trace delivered with the model (index, arrays), or None."""
        if self.manifest is None or self.manifest.trace is None:
            return None
        output = self.paths.folder.parent  # the paths the manifest names are relative to
        return output / self.manifest.trace.index, output / self.manifest.trace.arrays


@dataclass(frozen=True)
class Release:
    folder: Path
    matrix: ReleaseMatrix
    models: list[Model]

    def manifests(self) -> list[Manifest]:
        return [model.manifest for model in self.models if model.manifest is not None]


def read_release(folder: Path) -> Release:
    """Raise PublishError when the folder holds no readable matrix.json."""
    path = matrix_path(folder)
    if not path.is_file():
        raise PublishError(
            f"{folder} holds no release matrix: publish the output folder of a finished sweep "
            "(sortformer-build --multirun ...)"
        )
    try:
        matrix = ReleaseMatrix.read(path)
    except RecordError as error:
        raise PublishError(f"unreadable release matrix: {error}") from None
    models = [_model(folder, row) for row in matrix.rows if row.built and row.package]
    return Release(folder, matrix, models)


def _model(folder: Path, row: MatrixRow) -> Model:
    assert row.package is not None
    paths = ArtifactPaths.beside(folder / row.package)
    if not paths.manifest.is_file():
        return Model(row, paths, None, f"the manifest {paths.manifest} is missing")
    try:
        manifest = Manifest.read(paths.manifest)
    except RecordError as error:
        return Model(row, paths, None, str(error))
    return Model(row, paths, manifest, None, hashlib.sha256(paths.manifest.read_bytes()).hexdigest())
