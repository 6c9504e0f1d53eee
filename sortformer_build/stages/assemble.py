"""The assembly stage: pre-encoder and head in one pipeline with the geometry in its metadata,
staged beside the release folder."""

from __future__ import annotations

from sortformer_build.config import BuildConfig
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.stages.base import JobContext, Stage, need

COMPRESSION_METADATA = "sortformer_build.compression"


class AssembleStage(Stage):
    name = "assemble"

    def description(self, config: BuildConfig) -> str:
        return "Assembling the pipeline (pre-encoder -> head) with its metadata"

    def execute(self, job: JobContext) -> None:
        from sortformer_build.coreml.convert import assemble_pipeline

        config = job.config
        programs = ProgramFiles(
            need(job.programs, "converted programs").files.pre_encoder, need(job.head, "head")
        )
        staged = job.staging / f"{config.variant.file_name}.mlpackage"
        with self.step(job):
            metadata = {COMPRESSION_METADATA: config.compression.name}
            assemble_pipeline(programs, config.variant.geometry, metadata, staged)
        job.package = staged
