"""What a stage is: its name, whether it belongs to a job, why it would be skipped, what it reads
and provides, and how it runs. A cached stage also declares its cache key (what its result
depends on: its settings, the entries of earlier cached stages, the tools and the code it runs),
the files it produces, the facts it keeps beside them and how a finished entry enters the job.
One runner (`job.runner`) walks these declarations for a build and for a dry run alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from sortformer_build.config import BuildConfig
from sortformer_build.records.base import Record
from sortformer_build.records.manifest import ToolVersions
from sortformer_build.records.status import Prediction
from sortformer_build.records.steps import Skip
from sortformer_build.stages.slots import GIVEN, Slot
from sortformer_build.stages.steps import Outcome, StepLog
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.fingerprint import fingerprint

T = TypeVar("T")
F = TypeVar("F", bound=Record)


class StageOrderError(RuntimeError):
    """A stage list in which a stage reads what no earlier stage provides: a bug in the registry."""


class Board:
    """The values a job's stages have provided so far, by slot."""

    def __init__(self) -> None:
        self._values: dict[Slot[Any], Any] = {}

    def put(self, slot: Slot[T], value: T) -> None:
        self._values[slot] = value

    def find(self, slot: Slot[T]) -> T | None:
        return self._values.get(slot)


@dataclass
class Job:
    """One stage's view of its job: the config and tools, and the board limited to what the stage
    declared (reading an undeclared slot, or a declared one nobody filled, is a bug)."""

    config: BuildConfig
    cache: BuildCache
    steps: StepLog
    versions: ToolVersions
    staging: Path  # beside the artifacts: what is staged here is renamed into place
    board: Board
    stage: Stage

    def get(self, slot: Slot[T]) -> T:
        if slot not in self.stage.reads:
            raise RuntimeError(f"stage {self.stage.name} reads {slot.name} without declaring it")
        value = self.board.find(slot)
        if value is None:
            raise RuntimeError(f"no earlier stage provided the {slot.name} that {self.stage.name} reads")
        return value

    def find(self, slot: Slot[T]) -> T | None:
        """A value an earlier stage provides in some jobs only (the fp16 twin's diarization)."""
        if slot not in self.stage.reads_if_present:
            raise RuntimeError(f"stage {self.stage.name} looks for {slot.name} without declaring it")
        return self.board.find(slot)

    def put(self, slot: Slot[T], value: T) -> None:
        if slot not in self.stage.provides:
            raise RuntimeError(f"stage {self.stage.name} provides {slot.name} without declaring it")
        self.board.put(slot, value)


class Stage(ABC):
    name: ClassVar[str]
    # Part of an evaluation: its code keys the evaluation, not the package.
    evaluates: ClassVar[bool] = False
    reads: ClassVar[tuple[Slot[Any], ...]] = ()
    reads_if_present: ClassVar[tuple[Slot[Any], ...]] = ()
    provides: ClassVar[tuple[Slot[Any], ...]] = ()

    def applies(self, config: BuildConfig) -> bool:
        """Whether the stage is part of a job with this config at all."""
        return True

    def skip(self, config: BuildConfig) -> Skip | None:
        """Why the stage would be recorded as skipped, or None when it runs."""
        return None

    @abstractmethod
    def description(self, config: BuildConfig) -> str:
        """What the stage does, in words for the log."""

    def step(self, job: Job) -> AbstractContextManager[Outcome]:
        """Time the stage's work as its step, logged in words."""
        return job.steps.step(self.name, self.description(job.config))

    @property
    def code(self) -> str:
        """Digest of the code the stage runs: its module's import closure in this package."""
        return fingerprint([type(self).__module__])


class UncachedStage(Stage):
    """A stage that runs on every build (checks, assembly, delivery)."""

    @abstractmethod
    def execute(self, job: Job) -> None:
        """Run the stage (its step is recorded in `job.steps`)."""

    def predict(self, config: BuildConfig, checkpoint_present: bool) -> Prediction:
        """What a dry run says the stage would do."""
        return Prediction.run


@dataclass(frozen=True)
class JobDigest:
    """What a delivered package depends on, as a digest (see `job.runner.job_key`), the digest
    of the code its stages run, and (when the job evaluates) what its evaluation depends on."""

    digest: str
    code: str
    evaluation: str | None


@dataclass(frozen=True)
class KeyFacts:
    """What cache keys are made of: the config, the weights, the tools, the evaluation dataset,
    and the entries of the earlier cached stages this stage declared as upstream."""

    config: BuildConfig
    checkpoint_sha256: str
    versions: ToolVersions
    dataset_sha256: str | None
    entries: Mapping[str, str | None]  # stage name -> its entry; None: the stage did not apply

    def entry(self, stage: str) -> str | None:
        return self.entries[stage]


class CachedStage(Stage, Generic[F]):
    """A stage whose result lives in the build cache, keyed by everything it depends on."""

    facts_type: ClassVar[type[Record]]
    # Cached stages (earlier in the registry) whose entries this stage's key names.
    upstream: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        """The files an entry holds, relative to its folder: checked before it is kept."""

    @abstractmethod
    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """The stage's own settings its result depends on (the code and tools are added)."""

    @abstractmethod
    def build(self, job: Job, folder: Path) -> F:
        """Write the outputs into `folder`; return the facts to keep with them."""

    @abstractmethod
    def accept(self, job: Job, folder: Path, facts: F) -> None:
        """Take a finished entry (built now or cached) into the job."""

    @property
    def cache_name(self) -> str:
        """The cache folder its entries live in: stages that compute one thing share it."""
        return self.name

    def cache_key(self, facts: KeyFacts) -> dict[str, Any]:
        return {**self.key(facts), "code": self.code, "versions": facts.versions.model_dump()}

    def detail(self, facts: F) -> str:
        """A word on a freshly built entry, for the log and the manifest."""
        return ""


def check_order(stages: Iterable[Stage], registry: bool = True) -> None:
    """Raise StageOrderError unless every slot a stage reads is provided by an earlier stage or
    given by the runner, and every upstream entry is an earlier cached stage. In the registry,
    what a stage reads if present must have a provider too; in one job, it may have none."""
    provided: set[Slot[Any]] = set(GIVEN)
    cached: set[str] = set()
    for stage in stages:
        needed = (*stage.reads, *stage.reads_if_present) if registry else stage.reads
        missing = [slot.name for slot in needed if slot not in provided]
        if missing:
            raise StageOrderError(
                f"stage {stage.name} reads {', '.join(missing)}, which no earlier stage provides"
            )
        if isinstance(stage, CachedStage):
            unknown = [name for name in stage.upstream if name not in cached] if registry else []
            if unknown:
                raise StageOrderError(
                    f"stage {stage.name} keys on the entries of {', '.join(unknown)}, "
                    "which is no earlier cached stage"
                )
            cached.add(stage.name)
        provided.update(stage.provides)
