"""What a stage is, and the job state stages read and fill in.

A stage declares its name, whether it belongs to a job (`applies`), why it would be skipped,
and how to run it. A cached stage also declares its cache key (what its result depends on),
the files it produces, and how to take a finished entry into the job. The build runs the
stages in order; the dry run asks each one what it would do; both read these declarations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sortformer_build.checkpoint.counts import ParameterCounts
from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.config import BuildConfig, EvaluateConfig
from sortformer_build.evaluate.datasets import LoadedDataset
from sortformer_build.evaluate.diarize import Diarization
from sortformer_build.stages.manifest import EvaluationRecord
from sortformer_build.stages.steps import BUILT, CACHED, Step, StepLog
from sortformer_build.store.cache import BuildCache, Entry
from sortformer_build.verify.compare import Outputs, ReferenceData
from sortformer_build.verify.parity import ParityFigures
from sortformer_build.verify.reference import StepFunction


class Prediction(StrEnum):
    """What a dry run says a stage would do."""

    hit = "hit"  # served by the build cache
    miss = "miss"  # built, then cached
    off = "off"  # built, cache=false
    unknown = "unknown"  # the key needs the checkpoint's digest, and the checkpoint is not here yet
    run = "run"  # runs on every build
    present = "present"  # the checkpoint is on this machine
    obtain = "obtain"  # the checkpoint would be made or downloaded
    skipped = "skipped"


@dataclass(frozen=True)
class KeyFacts:
    """What cache keys are made of: the config, the weights, the tools, and the entries that
    earlier cached stages of the same job resolve to (by stage name)."""

    config: BuildConfig
    checkpoint_sha256: str
    versions: dict[str, str]
    entries: dict[str, str]
    dataset_sha256: str | None = None  # the evaluation dataset's content, when the job evaluates


class LazyModel:
    """Restores the NeMo model on first use, so a job whose stages are all cached never pays for
    it; the time goes to the stage that first needed it."""

    def __init__(self, checkpoint: Checkpoint, steps: StepLog) -> None:
        self._checkpoint, self._steps, self._model = checkpoint, steps, None

    def get(self) -> Any:
        if self._model is None:
            with self._steps.timed("restore", f"Restoring the NeMo model from {self._checkpoint.path.name}"):
                self._model = load_model(self._checkpoint)
        return self._model


class LazyDataset:
    """Loads the evaluation dataset (every file checked) and digests its content on first use:
    the up-to-date check is the first to ask, so bad input stops a job before it builds."""

    def __init__(self, settings: EvaluateConfig, memo_dir: Path) -> None:
        self._settings, self._memo_dir, self._loaded = settings, memo_dir, None

    def get(self) -> LoadedDataset:
        if self._loaded is None:
            from sortformer_build.evaluate.datasets import load_checked

            self._loaded = load_checked(self._settings, self._memo_dir)
        return self._loaded


def lazy_dataset(config: BuildConfig) -> LazyDataset | None:
    return None if config.evaluate is None else LazyDataset(config.evaluate, config.file_digest_memo_dir)


@dataclass(frozen=True)
class ConvertedPrograms:
    """The traced and converted fp16 programs of one checkpoint and geometry, in one folder
    (their files are the model kind's: see `stages.kinds`)."""

    folder: Path
    d_model: int
    parameters: ParameterCounts


@dataclass
class Verification:
    """What the verification stages found, for the manifest."""

    lint: str = "not run"
    parity: ParityFigures | None = None
    on_device: ParityFigures | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why

    def as_dict(self) -> dict[str, Any]:
        return {
            "lint": self.lint,
            "parity": None if self.parity is None else self.parity.as_dict(),
            "on_device": None if self.on_device is None else self.on_device.as_dict(),
            "skipped": dict(self.skipped),
        }


@dataclass
class JobContext:
    """One build's state: each stage reads what earlier stages produced and adds its own."""

    config: BuildConfig
    cache: BuildCache
    steps: StepLog
    versions: dict[str, str]
    staging: Path  # beside the artifacts: what is staged here is renamed into place
    entries: dict[str, str] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    model: LazyModel | None = None
    programs: ConvertedPrograms | None = None
    # The program palettization applies to (the head, or the offline model), fp16 or compressed,
    # that the package is assembled with.
    head: Path | None = None
    package: Path | None = None  # the staged package
    reference: ReferenceData | None = None
    fp16_outputs: Outputs | None = None
    verification: Verification = field(default_factory=Verification)
    dataset: LazyDataset | None = None
    nemo_diarization: Diarization | None = None
    diarization: Diarization | None = None  # the package's
    twin_diarization: Diarization | None = None  # the fp16 twin's, for a compressed package
    evaluation: EvaluationRecord = field(default_factory=EvaluationRecord)
    evaluation_dir: Path | None = None  # the staged RTTMs
    _package_step: StepFunction | None = field(default=None, repr=False)

    def key_facts(self) -> KeyFacts:
        sha256 = None if self.dataset is None else self.dataset.get().sha256
        checkpoint = need(self.checkpoint, "checkpoint").sha256
        return KeyFacts(self.config, checkpoint, self.versions, self.entries, sha256)

    def nemo(self) -> Any:
        return need(self.model, "restorable model").get()

    def package_step(self) -> StepFunction:
        """The staged package in the executor at the verification precision, loaded once per job:
        its weights are decoded on the first call."""
        if self._package_step is None:
            from sortformer_build.verify.compare import package_step

            package = need(self.package, "staged package")
            self._package_step = package_step(package, self.config.verify.precision)
        return self._package_step


T = TypeVar("T")


def need(value: T | None, what: str) -> T:
    """What an earlier stage produced; missing, it is a bug in the stage order, not bad input."""
    if value is None:
        raise RuntimeError(f"no earlier stage produced the {what}")
    return value


class Stage(ABC):
    name: str

    def applies(self, config: BuildConfig) -> bool:
        """Whether the stage is part of a job with this config at all."""
        return True

    def skip_reason(self, config: BuildConfig) -> str | None:
        """Why the stage would be recorded as skipped, or None when it runs."""
        return None

    @abstractmethod
    def description(self, config: BuildConfig) -> str:
        """What the stage does, in words for the log."""

    @abstractmethod
    def execute(self, job: JobContext) -> None:
        """Run the stage (its step is recorded in `job.steps`)."""

    def step(self, job: JobContext) -> AbstractContextManager[Step]:
        """Time the stage's work as its step, logged in words."""
        return job.steps.step(self.name, self.description(job.config))

    def predict(self, plan: PlanContext) -> Prediction:
        return Prediction.run


@dataclass
class PlanContext:
    """What a dry run knows: the config, the cache, and the checkpoint if it is already here."""

    config: BuildConfig
    cache: BuildCache
    checkpoint: Checkpoint | None
    facts: KeyFacts | None  # None until the checkpoint exists


class CachedStage(Stage):
    """A stage whose result lives in the build cache, keyed by everything it depends on."""

    @abstractmethod
    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        """The files an entry holds, relative to its folder: checked before it is kept."""

    @abstractmethod
    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Everything the result depends on; equal keys mean an equal result."""

    @abstractmethod
    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        """Write the outputs into `folder`; return JSON-plain facts to keep with them."""

    @abstractmethod
    def accept(self, job: JobContext, entry: Entry) -> None:
        """Take a finished entry (built now or cached) into the job."""

    @property
    def cache_name(self) -> str:
        """The cache folder its entries live in: stages that compute one thing share it."""
        return self.name

    def resolve(self, facts: KeyFacts, cache: BuildCache) -> dict[str, Any]:
        """The key, and the entry name later stages' keys refer to."""
        key = self.key(facts)
        facts.entries[self.name] = cache.path(self.cache_name, key).name
        return key

    def _built(self, job: JobContext, folder: Path) -> dict[str, Any]:
        facts = self.build(job, folder)
        missing = [name for name in self.outputs(job.config) if not (folder / name).exists()]
        if missing:  # a stage that does not make what it declares is a bug: keep no such entry
            raise RuntimeError(f"stage {self.name} did not write {', '.join(missing)}")
        return facts

    def detail(self, facts: dict[str, Any]) -> str:
        """A word on a freshly built entry, for the log and the manifest."""
        return ""

    def execute(self, job: JobContext) -> None:
        key = self.resolve(job.key_facts(), job.cache)
        with self.step(job) as step:
            entry = job.cache.fetch(self.cache_name, key, lambda folder: self._built(job, folder))
            step.status, step.detail = (
                (CACHED, f"cached: {entry.path}") if entry.hit else (BUILT, self.detail(entry.facts))
            )
        self.accept(job, entry)

    def predict(self, plan: PlanContext) -> Prediction:
        if plan.facts is None:
            return Prediction.unknown
        key = self.resolve(plan.facts, plan.cache)
        if not plan.cache.enabled:
            return Prediction.off
        return Prediction.hit if plan.cache.lookup(self.cache_name, key) is not None else Prediction.miss
