"""The conversion stage: NeMo's modules traced and converted to two fp16 ML programs, shared by
every compression of one checkpoint and geometry."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sortformer_build.checkpoint.counts import ParameterCounts, parameter_counts
from sortformer_build.config import BuildConfig
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.stages.base import (
    CachedStage,
    ConvertedPrograms,
    JobContext,
    KeyFacts,
)
from sortformer_build.store.cache import Entry


class ProgramsStage(CachedStage):
    name = "programs"
    outputs = ("pre_encoder.mlpackage", "head.mlpackage")

    def description(self, config: BuildConfig) -> str:
        geometry = config.variant.geometry
        return (
            f"Converting the pre-encoder and head for a {geometry.chunk_mel_frames}-frame chunk to Core ML "
            f"(fp16, {config.deployment_target.value})"
        )

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Not the compression: fp16 and palettized builds share the conversion."""
        geometry = facts.config.variant.geometry
        return {
            "checkpoint": facts.checkpoint_sha256,
            "chunk_mel_frames": geometry.chunk_mel_frames,
            "spkcache_len": geometry.spkcache_len,
            "fifo_len": geometry.fifo_len,
            "deployment_target": facts.config.deployment_target.value,
            "versions": facts.versions,
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        from sortformer_build.coreml.convert import convert_programs
        from sortformer_build.coreml.export import trace

        geometry = job.config.variant.geometry
        nemo = job.nemo()
        with job.steps.timed(
            "trace", f"Tracing the pre-encoder and head for a {geometry.chunk_mel_frames}-frame chunk"
        ):
            traced = trace(nemo, geometry)
        with job.steps.timed("convert", "Converting both programs with coremltools"):
            convert_programs(traced, job.config.deployment_target, folder)
        return {"d_model": traced.d_model, "parameters": asdict(parameter_counts(nemo))}

    def accept(self, job: JobContext, entry: Entry) -> None:
        files = ProgramFiles.in_folder(entry.path)
        parameters = ParameterCounts(**entry.facts["parameters"])
        job.programs = ConvertedPrograms(files, int(entry.facts["d_model"]), parameters)
        job.head = files.head
