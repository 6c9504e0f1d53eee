"""The assembly stage: the runtime's package (the streaming pipeline, pre-encoder -> head, or the
offline program) with its geometry in its metadata, staged beside the release folder."""

from __future__ import annotations

from sortformer_build.config import BuildConfig
from sortformer_build.stages.base import JobContext, Stage, need
from sortformer_build.stages.kinds import model_kind

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
