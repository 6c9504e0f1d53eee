"""The stages of a build, in the order data flows through them: config -> checkpoint -> traced
and converted programs -> compressed -> assembled -> verified -> (evaluated) -> published. The build runs this
list and the dry run walks it, so what one predicts is what the other does."""

from __future__ import annotations

from sortformer_build.config import BuildConfig
from sortformer_build.stages.assemble import AssembleStage
from sortformer_build.stages.base import Stage
from sortformer_build.stages.checkpoint import CheckpointStage
from sortformer_build.stages.evaluation import (
    DiarizationStage,
    EvaluationStage,
    NemoDiarizationStage,
    TwinDiarizationStage,
)
from sortformer_build.stages.palettize import PalettizeStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.publish import PublishStage
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
    PublishStage(),
)


def job_stages(config: BuildConfig) -> list[Stage]:
    """The stages a job with this config consists of."""
    return [stage for stage in STAGES if stage.applies(config)]
