"""The compression stage: the head's weights (offline: all but the subsampling's) palettized to
k-means look-up tables, at one width, or (compression=mixed) at the widths of a recipe: chosen
under the size budget from the mixed-bit analysis, or given as a file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig
from sortformer_build.kinds import kind_of
from sortformer_build.records.facts import PalettizeFacts
from sortformer_build.records.mixed import AppliedRecipe, Recipe
from sortformer_build.stages.base import CachedStage, Job, KeyFacts
from sortformer_build.stages.mixed import MixedAnalysis, MixedAnalysisStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.slots import COMPRESSIBLE, MIXED_ANALYSIS, RECIPE
from sortformer_build.store.cache import ArrayStore

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"


class PalettizeStage(CachedStage[PalettizeFacts]):
    name = "palettize"
    facts_type = PalettizeFacts
    upstream = (ProgramsStage.name, MixedAnalysisStage.name)
    reads = (COMPRESSIBLE,)
    reads_if_present = (MIXED_ANALYSIS,)
    provides = (COMPRESSIBLE, RECIPE)

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        compressible = kind_of(config.variant.geometry).compressible
        return (compressible, RECIPE_FILE) if config.compression.mixed else (compressible,)

    def applies(self, config: BuildConfig) -> bool:
        return not config.compression.is_fp16

    def description(self, config: BuildConfig) -> str:
        compression, kind = config.compression, kind_of(config.variant.geometry)
        if compression.recipe is not None:
            bits = f"the widths of {compression.recipe}"
        elif compression.mixed:
            bits = "the widths measured to fit " + (
                f"{compression.budget_mb:g} MB"
                if compression.budget_mb is not None
                else f"{compression.budget_ratio:g} of the fp16 size"
            )
        else:
            bits = f"{compression.nbits} bits"
        return f"Palettizing {kind.compressed_part} to {bits} ({compression.engine.value} k-means)"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        compression = facts.config.compression
        key: dict[str, Any] = {
            "programs": facts.entry(ProgramsStage.name),
            "nbits": compression.nbits,
            "engine": compression.engine.value,
        }
        if compression.mixed:
            from sortformer_build.compress.recipe import given_recipe

            key |= {
                "analysis": facts.entry(MixedAnalysisStage.name),
                "budget_mb": compression.budget_mb,
                "budget_ratio": compression.budget_ratio,
                "recipe": None
                if compression.recipe is None
                else given_recipe(Path(compression.recipe)).model_dump(mode="json"),
            }
        return key

    def build(self, job: Job, folder: Path) -> PalettizeFacts:
        from sortformer_build.coreml.palettize import palettize_program

        # Tables are kept by tensor content: every geometry of a checkpoint shares most of them.
        luts = ArrayStore(job.config.cache_layout.luts if job.cache.enabled else None)
        kind = kind_of(job.config.variant.geometry)
        compression = job.config.compression
        if compression.mixed:
            from sortformer_build.compress.recipe import write_recipe

            recipe = self._recipe(job)
            write_recipe(recipe, folder / RECIPE_FILE)
            nbits: int | dict[str, int] = self._applied(job, recipe).tensor_bits
        else:
            assert compression.nbits is not None, "applies to palettized compressions only"
            nbits = compression.nbits
        return palettize_program(
            job.get(COMPRESSIBLE),
            nbits,
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
        if job.config.compression.mixed:
            from sortformer_build.compress.recipe import read_recipe

            job.put(RECIPE, self._applied(job, read_recipe(folder / RECIPE_FILE)))

    def _recipe(self, job: Job) -> Recipe:
        from sortformer_build.compress.allocate import budget_bytes
        from sortformer_build.compress.recipe import choose_recipe, describe, given_recipe

        compression = job.config.compression
        if compression.recipe is not None:
            return given_recipe(Path(compression.recipe))
        sensitivity = self._analysis(job).sensitivity
        assert sensitivity is not None, "a measured mixed build's analysis has measured"
        recipe = choose_recipe(sensitivity, budget_bytes(compression, sensitivity.sizes.fp16_bytes))
        log.info("  recipe within the budget: %s", describe(recipe))
        return recipe

    def _applied(self, job: Job, recipe: Recipe) -> AppliedRecipe:
        from sortformer_build.compress.recipe import tensor_bits

        bits = tensor_bits(recipe, self._analysis(job).groups, job.config.deployment_target)
        return AppliedRecipe(recipe=recipe, tensor_bits=bits)

    def _analysis(self, job: Job) -> MixedAnalysis:
        analysis = job.find(MIXED_ANALYSIS)
        assert analysis is not None, "a mixed build's analysis runs before palettization"
        return analysis
