"""The compression stage: the head's weights (offline: all but the subsampling's) palettized to
k-means look-up tables."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig
from sortformer_build.stages.base import CachedStage, JobContext, KeyFacts, need
from sortformer_build.stages.kinds import model_kind
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.store.cache import ArrayStore, Entry


class PalettizeStage(CachedStage):
    name = "palettize"

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (model_kind(config.variant.geometry).compressible,)

    def applies(self, config: BuildConfig) -> bool:
        return not config.compression.is_fp16

    def description(self, config: BuildConfig) -> str:
        compression, kind = config.compression, model_kind(config.variant.geometry)
        return (
            f"Palettizing {kind.compressed_part} to {compression.nbits} bits "
            f"({compression.engine.value} k-means)"
        )

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        compression = facts.config.compression
        return {
            "programs": facts.entries[ProgramsStage.name],
            "nbits": compression.nbits,
            "engine": compression.engine.value,
            "versions": facts.versions,
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        from sortformer_build.coreml.palettize import palettize_program

        # Tables are kept by tensor content: every geometry of a checkpoint shares most of them.
        luts = ArrayStore(job.cache.root / "luts" if job.cache.enabled else None)
        kind = model_kind(job.config.variant.geometry)
        source = need(job.programs, "converted programs").folder / kind.compressible
        compression = job.config.compression
        nbits = need(compression.nbits, "bit width")
        facts = palettize_program(
            source, nbits, compression.engine, folder / kind.compressible, luts, kind.keep_prefix
        )
        return asdict(facts)

    def detail(self, facts: dict[str, Any]) -> str:
        if facts.get("lut_cache_hits") is None:
            return ""
        return f"look-up tables: {facts['lut_cache_hits']} cached, {facts['lut_cache_misses']} computed"

    def accept(self, job: JobContext, entry: Entry) -> None:
        job.head = entry.path / model_kind(job.config.variant.geometry).compressible
