"""The compression stage: the head's weights (offline: all but the subsampling's) palettized to
k-means look-up tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig
from sortformer_build.kinds import kind_of
from sortformer_build.records.facts import PalettizeFacts
from sortformer_build.stages.base import CachedStage, Job, KeyFacts
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.slots import COMPRESSIBLE
from sortformer_build.store.cache import ArrayStore


class PalettizeStage(CachedStage[PalettizeFacts]):
    name = "palettize"
    facts_type = PalettizeFacts
    upstream = (ProgramsStage.name,)
    reads = (COMPRESSIBLE,)
    provides = (COMPRESSIBLE,)

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (kind_of(config.variant.geometry).compressible,)

    def applies(self, config: BuildConfig) -> bool:
        return not config.compression.is_fp16

    def description(self, config: BuildConfig) -> str:
        compression, kind = config.compression, kind_of(config.variant.geometry)
        return (
            f"Palettizing {kind.compressed_part} to {compression.nbits} bits "
            f"({compression.engine.value} k-means)"
        )

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        compression = facts.config.compression
        return {
            "programs": facts.entry(ProgramsStage.name),
            "nbits": compression.nbits,
            "engine": compression.engine.value,
        }

    def build(self, job: Job, folder: Path) -> PalettizeFacts:
        from sortformer_build.coreml.palettize import palettize_program

        # Tables are kept by tensor content: every geometry of a checkpoint shares most of them.
        luts = ArrayStore(job.config.cache_layout.luts if job.cache.enabled else None)
        kind = kind_of(job.config.variant.geometry)
        compression = job.config.compression
        assert compression.nbits is not None, "applies to palettized compressions only"
        return palettize_program(
            job.get(COMPRESSIBLE),
            compression.nbits,
            compression.engine,
            folder / kind.compressible,
            luts,
            kind.kept_prefix,
        )

    def detail(self, facts: PalettizeFacts) -> str:
        if facts.lut_cache_hits is None:
            return ""
        return f"look-up tables: {facts.lut_cache_hits} cached, {facts.lut_cache_misses} computed"

    def accept(self, job: Job, folder: Path, facts: PalettizeFacts) -> None:
        job.put(COMPRESSIBLE, folder / kind_of(job.config.variant.geometry).compressible)
