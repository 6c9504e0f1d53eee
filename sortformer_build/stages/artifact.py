"""Where one job's artifact goes: the package, its manifest, (macOS) the compiled model and (with an
evaluation) the RTTMs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sortformer_build.config import BuildConfig


@dataclass(frozen=True)
class ArtifactPaths:
    folder: Path  # <output_dir>/<release folder>
    name: str  # the file name the runtime knows, without suffix

    @classmethod
    def of(cls, config: BuildConfig) -> ArtifactPaths:
        return cls(config.artifact_dir, config.variant.file_name)

    @property
    def package(self) -> Path:
        return self.folder / f"{self.name}.mlpackage"

    @property
    def compiled(self) -> Path:
        return self.folder / f"{self.name}.mlmodelc"

    @property
    def manifest(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def evaluation(self) -> Path:
        """`artifact/` and `nemo/`: one RTTM per recording of the last evaluation."""
        return self.folder / f"{self.name}.evaluation"

    @property
    def release_path(self) -> str:
        """Where the runtime downloads it from, relative to the release root."""
        return f"{self.folder.name}/{self.name}.mlmodelc"
