"""The assembly stage: the runtime's package (the streaming pipeline, pre-encoder -> head, or the
offline program) with its geometry in its metadata, staged beside the release folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sortformer_build.config import BuildConfig
from sortformer_build.stages.base import JobContext, Stage, need
from sortformer_build.stages.kinds import model_kind
from sortformer_build.store import atomic

COMPRESSION_METADATA = "sortformer_build.compression"


class AssembleStage(Stage):
    name = "assemble"

    def description(self, config: BuildConfig) -> str:
        return "Assembling the package with its metadata"

    def execute(self, job: JobContext) -> None:
        config = job.config
        staged = job.staging / f"{config.variant.file_name}.mlpackage"
        with self.step(job):
            model_kind(config.variant.geometry).assemble(
                need(job.programs, "converted programs").folder,
                need(job.head, "head"),
                config.variant,
                {COMPRESSION_METADATA: config.compression.name},
                staged,
            )
        job.package = staged


@contextmanager
def fp16_twin(job: JobContext, folder: Path) -> Iterator[Path]:
    """A compressed job's fp16 twin, assembled in `folder` from the cached conversion while the
    block runs (checks compare against it; it is never published)."""
    conversion = need(job.programs, "converted programs").folder
    kind = model_kind(job.config.variant.geometry)
    twin = folder / "fp16.mlpackage"
    kind.assemble(conversion, conversion / kind.compressible, job.config.variant, {}, twin)
    try:
        yield twin
    finally:
        atomic.remove(twin)
