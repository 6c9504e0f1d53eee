"""Mixed-bit compression's analysis stage: the head's weights grouped and matched to NeMo, and,
unless a recipe is given, each group measured alone at each width on NeMo's own states. Its
entry is keyed by the conversion and the analysis settings only, so every budget shares it; the
palettize stage chooses the bits from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig
from sortformer_build.kinds import kind_of
from sortformer_build.records.facts import MixedAnalysisFacts
from sortformer_build.records.mixed import AnalysisSettings, Sensitivity, TensorGroups
from sortformer_build.stages.base import CachedStage, Job, KeyFacts
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.slots import MIXED_ANALYSIS, NEMO, PROGRAMS
from sortformer_build.store.cache import ArrayStore

GROUPS_FILE = "groups.json"
SENSITIVITY_FILE = "sensitivity.json"
# What the analysis measures: enough states to rank the groups, few enough to keep the analysis
# of a full-size geometry within minutes.
SETTINGS = AnalysisSettings()


@dataclass(frozen=True)
class MixedAnalysis:
    groups: TensorGroups
    sensitivity: Sensitivity | None  # None: a given recipe is applied, nothing is measured


class MixedAnalysisStage(CachedStage[MixedAnalysisFacts]):
    name = "mixed-analysis"
    facts_type = MixedAnalysisFacts
    upstream = (ProgramsStage.name,)
    reads = (NEMO, PROGRAMS)
    provides = (MIXED_ANALYSIS,)

    def applies(self, config: BuildConfig) -> bool:
        return config.compression.mixed

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (GROUPS_FILE, SENSITIVITY_FILE) if config.compression.measures else (GROUPS_FILE,)

    def description(self, config: BuildConfig) -> str:
        part = kind_of(config.variant.geometry).compressed_part
        if not config.compression.measures:
            return f"Grouping the weights of {part} for the recipe"
        widths = ", ".join(map(str, SETTINGS.nbits))
        return f"Measuring each group of weights of {part} alone at {widths} bits on NeMo's own states"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        measures = facts.config.compression.measures
        return {
            "programs": facts.entry(ProgramsStage.name),
            "settings": SETTINGS.model_dump(mode="json") if measures else None,
        }

    def build(self, job: Job, folder: Path) -> MixedAnalysisFacts:
        from sortformer_build.compress.allocate import budget_bytes, check_budget, package_sizes
        from sortformer_build.compress.groups import tensor_groups
        from sortformer_build.compress.sensitivity import analyse

        config = job.config
        geometry, programs = config.variant.geometry, job.get(PROGRAMS).folder
        kind = kind_of(geometry)
        head = programs / kind.compressible
        model = job.get(NEMO).get()
        if not config.compression.measures:
            groups = tensor_groups(
                model, head, kind.head_frames(geometry), SETTINGS.granularity, kind.kept_prefix
            )
            groups.write(folder / GROUPS_FILE)
            return MixedAnalysisFacts(cost=None)
        sizes = package_sizes([programs / name for name in kind.converted], head, kind.kept_prefix)
        # An impossible budget is refused before the minutes of measuring.
        check_budget(budget_bytes(config.compression, sizes.fp16_bytes), sizes, SETTINGS.nbits)
        luts = ArrayStore(config.cache_layout.luts if job.cache.enabled else None)
        inputs = kind.analysis_inputs(model, geometry, SETTINGS)
        groups, sensitivity, cost = analyse(
            model, head, sizes, inputs, config.deployment_target, SETTINGS, luts, kind.kept_prefix
        )
        groups.write(folder / GROUPS_FILE)
        sensitivity.write(folder / SENSITIVITY_FILE)
        return MixedAnalysisFacts(cost=cost)

    def detail(self, facts: MixedAnalysisFacts) -> str:
        if facts.cost is None:
            return ""
        return f"{facts.cost.total_seconds:.0f} s of measuring, {facts.cost.cpu_seconds:.0f} s of CPU"

    def accept(self, job: Job, folder: Path, facts: MixedAnalysisFacts) -> None:
        measured = folder / SENSITIVITY_FILE
        job.put(
            MIXED_ANALYSIS,
            MixedAnalysis(
                TensorGroups.read(folder / GROUPS_FILE),
                Sensitivity.read(measured) if job.config.compression.measures else None,
            ),
        )
