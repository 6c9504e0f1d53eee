"""Where one job's artifact goes: the package, its manifest, (macOS) the compiled model, (with
parity) the probabilities it was compared on, (with an evaluation) the RTTMs, (with a trace) NeMo's
reference trace and (a job run alone) its report; the one place these names are made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sortformer_build.config import BuildConfig

PACKAGE_SUFFIX = ".mlpackage"
COMPILED_SUFFIX = ".mlmodelc"
MANIFEST_SUFFIX = ".json"
EVALUATION_SUFFIX = ".evaluation"
TRACES_FOLDER = "traces"
PROBABILITIES_SUFFIX = ".probabilities.npz"
REPORT_SUFFIX = ".report.html"


@dataclass(frozen=True)
class ArtifactPaths:
    folder: Path  # <output_dir>/<release folder>, or a job's staging folder
    name: str  # the file name the runtime knows, without suffix

    @classmethod
    def of(cls, config: BuildConfig) -> ArtifactPaths:
        return cls(config.artifact_dir, config.variant.file_name)

    @classmethod
    def beside(cls, package: Path) -> ArtifactPaths:
        """The paths of the artifact whose package is `package`."""
        return cls(package.parent, package.name.removesuffix(PACKAGE_SUFFIX))

    def staged(self, staging: Path) -> ArtifactPaths:
        """The same names inside a job's staging folder."""
        return ArtifactPaths(staging, self.name)

    @property
    def package(self) -> Path:
        return self.folder / f"{self.name}{PACKAGE_SUFFIX}"

    @property
    def compiled(self) -> Path:
        return self.folder / f"{self.name}{COMPILED_SUFFIX}"

    @property
    def manifest(self) -> Path:
        return self.folder / f"{self.name}{MANIFEST_SUFFIX}"

    @property
    def probabilities(self) -> Path:
        """The package's and NeMo's probabilities over the parity stream (`verify.probabilities`)."""
        return self.folder / f"{self.name}{PROBABILITIES_SUFFIX}"

    @property
    def report(self) -> Path:
        """The release report of a job run on its own, about this artifact."""
        return self.folder / f"{self.name}{REPORT_SUFFIX}"

    @property
    def evaluations(self) -> Path:
        """One folder per evaluated dataset (see `evaluation`)."""
        return self.folder / f"{self.name}{EVALUATION_SUFFIX}"

    def evaluation(self, dataset: str) -> Path:
        """`artifact/`, `nemo/`, `truth/` (with a ground truth) and `fp16/` (the fp16 twin's, for a
        compressed artifact): one RTTM per recording of the dataset."""
        return self.evaluations / dataset

    @property
    def traces(self) -> Path:
        """Reference traces, beside the precision folders: every compression of a model shares its trace."""
        return self.folder.parent / TRACES_FOLDER

    @property
    def release_stem(self) -> str:
        """The release path without its suffix: `palettized/Sortformer_v2.1`."""
        return f"{self.folder.name}/{self.name}"

    @property
    def release_path(self) -> str:
        """Where the runtime downloads it from, relative to the release root."""
        return f"{self.release_stem}{COMPILED_SUFFIX}"
