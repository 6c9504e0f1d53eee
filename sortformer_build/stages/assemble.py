"""The assembly stage: the runtime's package (the streaming pipeline, pre-encoder -> head, or the
offline program) with its geometry in its metadata, staged beside the release folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sortformer_build.config import BuildConfig, ExecutorPrecision
from sortformer_build.contract import StepFunction
from sortformer_build.kinds import kind_of
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.base import Job, UncachedStage
from sortformer_build.stages.slots import COMPRESSIBLE, PACKAGE, PROGRAMS
from sortformer_build.store import atomic

COMPRESSION_METADATA = "sortformer_build.compression"


@dataclass
class StagedPackage:
    """The package staged for delivery, and (loaded once per job, on first use) the same package
    in the executor at the verification precision: its weights are decoded on the first call."""

    path: Path
    precision: ExecutorPrecision
    _step: StepFunction | None = field(default=None, repr=False)

    def step(self) -> StepFunction:
        if self._step is None:
            from sortformer_build.executor.step import package_step

            self._step = package_step(self.path, self.precision)
        return self._step


class AssembleStage(UncachedStage):
    name = "assemble"
    reads = (PROGRAMS, COMPRESSIBLE)
    provides = (PACKAGE,)

    def description(self, config: BuildConfig) -> str:
        return "Assembling the package with its metadata"

    def execute(self, job: Job) -> None:
        config = job.config
        staged = ArtifactPaths.of(config).staged(job.staging).package
        with self.step(job):
            kind_of(config.variant.geometry).assemble(
                job.get(PROGRAMS).folder,
                job.get(COMPRESSIBLE),
                config.variant,
                {COMPRESSION_METADATA: config.compression.name},
                staged,
            )
        job.put(PACKAGE, StagedPackage(staged, config.verify.precision))


@contextmanager
def fp16_twin(job: Job, folder: Path) -> Iterator[Path]:
    """A compressed job's fp16 twin, assembled in `folder` from the cached conversion while the
    block runs (checks compare against it; it is never published)."""
    conversion = job.get(PROGRAMS).folder
    kind = kind_of(job.config.variant.geometry)
    twin = folder / "fp16.mlpackage"
    kind.assemble(conversion, conversion / kind.compressible, job.config.variant, {}, twin)
    try:
        yield twin
    finally:
        atomic.remove(twin)
