"""The conversion stage: NeMo's modules traced and converted to fp16 ML programs (the streaming
pre-encoder and head, or the one offline program), shared by every compression of one
checkpoint and geometry."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sortformer_build.checkpoint.counts import ParameterCounts, parameter_counts
from sortformer_build.config import BuildConfig
from sortformer_build.stages.base import (
    CachedStage,
    ConvertedPrograms,
    JobContext,
    KeyFacts,
)
from sortformer_build.stages.kinds import model_kind
from sortformer_build.store.cache import Entry


class ProgramsStage(CachedStage):
    name = "programs"

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return model_kind(config.variant.geometry).converted

    def description(self, config: BuildConfig) -> str:
        what = model_kind(config.variant.geometry).what(config.variant.geometry)
        return f"Converting {what} to Core ML (fp16, {config.deployment_target.value})"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Not the compression: fp16 and palettized builds share the conversion."""
        geometry = facts.config.variant.geometry
        return {
            "checkpoint": facts.checkpoint_sha256,
            **model_kind(geometry).conversion_key(geometry),
            "deployment_target": facts.config.deployment_target.value,
            "versions": facts.versions,
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        geometry = job.config.variant.geometry
        nemo = job.nemo()
        model_kind(geometry).convert(nemo, geometry, job.config.deployment_target, folder, job.steps)
        return {"d_model": int(nemo.encoder.d_model), "parameters": asdict(parameter_counts(nemo))}

    def accept(self, job: JobContext, entry: Entry) -> None:
        parameters = ParameterCounts(**entry.facts["parameters"])
        job.programs = ConvertedPrograms(entry.path, int(entry.facts["d_model"]), parameters)
        job.head = entry.path / model_kind(job.config.variant.geometry).compressible
