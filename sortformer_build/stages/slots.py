"""What stages hand each other, declared once: a typed slot per value. A stage names the slots
it reads and those it provides; the registry checks, when it is built, that every slot a stage
reads is provided by an earlier stage (or by the runner), and a stage can only read and write
what it declared. Types are imported for the type checker only: declaring a slot runs none of
the code that makes its value."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from sortformer_build.checkpoint.sources import Checkpoint
    from sortformer_build.evaluate.datasets import LoadedDataset
    from sortformer_build.evaluate.diarize import Diarization
    from sortformer_build.records.device import DeviceReport
    from sortformer_build.records.evaluation import DatasetEvaluation
    from sortformer_build.records.mixed import AppliedRecipe
    from sortformer_build.records.parity import ParityFigures
    from sortformer_build.records.trace import TraceComparison
    from sortformer_build.stages.assemble import StagedPackage
    from sortformer_build.stages.base import JobDigest
    from sortformer_build.stages.checkpoint import LazyModel
    from sortformer_build.stages.mixed import MixedAnalysis
    from sortformer_build.stages.programs import ConvertedPrograms
    from sortformer_build.stages.trace import NemoTrace
    from sortformer_build.verify.compare import Outputs, ReferenceData

T = TypeVar("T")


class Slot(Generic[T]):
    """A named place on the job's board for one value of type T."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name})"


# Given by the runner before any stage.
JOB_DIGEST: Slot[JobDigest] = Slot("job digest")
DATASET: Slot[LoadedDataset] = Slot("evaluation dataset")  # when the job evaluates

CHECKPOINT: Slot[Checkpoint] = Slot("checkpoint")
NEMO: Slot[LazyModel] = Slot("NeMo model")
PROGRAMS: Slot[ConvertedPrograms] = Slot("converted programs")
MIXED_ANALYSIS: Slot[MixedAnalysis] = Slot("mixed-bit analysis")  # compression=mixed only
RECIPE: Slot[AppliedRecipe] = Slot("applied recipe")  # compression=mixed only
# The program the package is assembled with where palettization applies: fp16 or compressed.
COMPRESSIBLE: Slot[Path] = Slot("compressible program")
PACKAGE: Slot[StagedPackage] = Slot("staged package")
REFERENCE: Slot[ReferenceData] = Slot("NeMo's reference outputs")
FP16_OUTPUTS: Slot[Outputs] = Slot("fp16 package's outputs")
PARITY: Slot[ParityFigures] = Slot("parity figures")
ON_DEVICE: Slot[ParityFigures] = Slot("Core ML figures")
DEVICE_REPORT: Slot[DeviceReport] = Slot("device report")
NEMO_DIARIZATION: Slot[Diarization] = Slot("NeMo's diarization")
DIARIZATION: Slot[Diarization] = Slot("the package's diarization")
TWIN_DIARIZATION: Slot[Diarization] = Slot("the fp16 twin's diarization")
EVALUATION: Slot[DatasetEvaluation] = Slot("evaluation")
EVALUATION_DIR: Slot[Path] = Slot("staged RTTMs")
NEMO_TRACE: Slot[NemoTrace] = Slot("NeMo's trace")
TRACE_COMPARISON: Slot[TraceComparison] = Slot("the package's trace against NeMo's")

GIVEN: tuple[Slot[Any], ...] = (JOB_DIGEST, DATASET)
