"""The conversion stage: NeMo's modules traced and converted to fp16 ML programs (the streaming
pre-encoder and head, or the one offline program), shared by every compression of one
checkpoint and geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build.checkpoint.counts import parameter_counts
from sortformer_build.config import BuildConfig
from sortformer_build.kinds import kind_of
from sortformer_build.records.facts import ProgramsFacts
from sortformer_build.records.manifest import ParameterCounts
from sortformer_build.stages.base import CachedStage, Job, KeyFacts
from sortformer_build.stages.slots import COMPRESSIBLE, NEMO, PROGRAMS


@dataclass(frozen=True)
class ConvertedPrograms:
    """The traced and converted fp16 programs of one checkpoint and geometry, in one folder
    (their files are the model kind's)."""

    folder: Path
    d_model: int
    parameters: ParameterCounts


class ProgramsStage(CachedStage[ProgramsFacts]):
    name = "programs"
    facts_type = ProgramsFacts
    reads = (NEMO,)
    provides = (PROGRAMS, COMPRESSIBLE)

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return kind_of(config.variant.geometry).converted

    def description(self, config: BuildConfig) -> str:
        what = kind_of(config.variant.geometry).what(config.variant.geometry)
        return f"Converting {what} to Core ML (fp16, {config.deployment_target.value})"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Not the compression: fp16 and palettized builds share the conversion."""
        geometry = facts.config.variant.geometry
        return {
            "checkpoint": facts.checkpoint_sha256,
            **kind_of(geometry).conversion_key(geometry),
            "deployment_target": facts.config.deployment_target.value,
        }

    def build(self, job: Job, folder: Path) -> ProgramsFacts:
        from sortformer_build.coreml.convert import one_thread

        geometry = job.config.variant.geometry
        nemo = job.get(NEMO).get()
        with one_thread():
            kind_of(geometry).convert(nemo, geometry, job.config.deployment_target, folder, job.steps)
        return ProgramsFacts(d_model=int(nemo.encoder.d_model), parameters=parameter_counts(nemo))

    def accept(self, job: Job, folder: Path, facts: ProgramsFacts) -> None:
        job.put(PROGRAMS, ConvertedPrograms(folder, facts.d_model, facts.parameters))
        job.put(COMPRESSIBLE, folder / kind_of(job.config.variant.geometry).compressible)
