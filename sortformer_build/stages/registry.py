"""The stages of a build, in the order data flows through them: config -> checkpoint -> traced
and converted programs -> compressed -> assembled -> verified -> (evaluated) -> (traced) -> delivered. One
runner walks this list for a build and for a dry run, so what one predicts is what the other
does; the order is checked when the list is made."""

from __future__ import annotations

from sortformer_build.config import BuildConfig
from sortformer_build.stages.assemble import AssembleStage
from sortformer_build.stages.base import Stage, check_order
from sortformer_build.stages.checkpoint import CheckpointStage
from sortformer_build.stages.deliver import DeliverStage
from sortformer_build.stages.evaluation import (
    DeliverEvaluationStage,
    DiarizationStage,
    EvaluationStage,
    NemoDiarizationStage,
    PublishedPackageStage,
    TwinDiarizationStage,
)
from sortformer_build.stages.mixed import MixedAnalysisStage
from sortformer_build.stages.palettize import PalettizeStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.trace import NemoTraceStage, PackageTraceStage
from sortformer_build.stages.verification import (
    Fp16OutputsStage,
    LintStage,
    NemoReferenceStage,
    OnDeviceStage,
    ParityStage,
)

STAGES: tuple[Stage, ...] = (
    CheckpointStage(),
    ProgramsStage(),
    MixedAnalysisStage(),
    PalettizeStage(),
    AssembleStage(),
    LintStage(),
    NemoReferenceStage(),
    Fp16OutputsStage(),
    ParityStage(),
    OnDeviceStage(),
    NemoDiarizationStage(),
    DiarizationStage(),
    TwinDiarizationStage(),
    EvaluationStage(),
    NemoTraceStage(),
    PackageTraceStage(),
    DeliverStage(),
)
check_order(STAGES)

# A delivered package that is up to date, evaluated on a dataset it has no evaluation for: the
# conversion and palettization entries its diarization is keyed on, the package as delivered,
# then the evaluation stages; nothing rebuilds, moves or re-verifies the package.
EVALUATION_ONLY: tuple[Stage, ...] = (
    STAGES[0],
    *(
        stage
        for stage in STAGES
        if stage.name in (ProgramsStage.name, MixedAnalysisStage.name, PalettizeStage.name)
    ),
    PublishedPackageStage(),
    *(stage for stage in STAGES if stage.evaluates),
    DeliverEvaluationStage(),
)
check_order(EVALUATION_ONLY)


def job_stages(config: BuildConfig, registry: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages of `registry` a job with this config consists of (those it will skip
    included), checked in order: a stage that would run but reads what none of the job's earlier
    running stages provides fails here, before any work."""
    stages = [stage for stage in registry if stage.applies(config)]
    check_order((stage for stage in stages if stage.skip(config) is None), registry=False)
    return stages
