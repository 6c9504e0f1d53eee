"""One runner for a job's stages, for a build and for a dry run alike: the same stage list, the
same skip decisions, the same cache keys and the same up-to-date check. A build runs what the
plan predicts; a dry run predicts without making a checkpoint, loading a model or importing
torch, coremltools or NeMo."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sortformer_build.checkpoint.sources import Checkpoint
from sortformer_build.config import BuildConfig, config_dict
from sortformer_build.records.manifest import Manifest, ToolVersions
from sortformer_build.records.status import Prediction, StagePlan
from sortformer_build.records.steps import StepStatus
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.base import Board, CachedStage, Job, JobDigest, KeyFacts, Stage, UncachedStage
from sortformer_build.stages.checkpoint import CheckpointStage
from sortformer_build.stages.registry import EVALUATION_ONLY, STAGES, job_stages
from sortformer_build.stages.slots import CHECKPOINT, DATASET, JOB_DIGEST
from sortformer_build.stages.steps import StepLog
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.digests import digest_of
from sortformer_build.store.fingerprint import fingerprint
from sortformer_build.store.provenance import tool_versions

log = logging.getLogger("sortformer_build")

UNKNOWN_WHY = "cache states are unknown until the checkpoint exists: its sha256 is part of every key"


class Mode(StrEnum):
    build = "build"
    plan = "plan"


@dataclass
class Runner:
    """Walks `stages` (the checkpoint stage first) in one mode over one job."""

    mode: Mode
    config: BuildConfig
    stages: list[Stage]
    cache: BuildCache
    staging: Path | None = None  # a build's staging folder beside the artifacts
    versions: ToolVersions = field(default_factory=tool_versions)
    board: Board = field(default_factory=Board)
    steps: StepLog = field(default_factory=StepLog)
    plans: list[StagePlan] = field(default_factory=list)
    # Entry names of the cached stages resolved so far (None: the stage does not apply here).
    entries: dict[str, str | None] = field(default_factory=dict)
    # Known once the checkpoint is (a dry run may not have it yet): every key names it.
    checkpoint_sha256: str | None = None

    def __post_init__(self) -> None:
        # Every file of an evaluation dataset is read and checked before any stage runs.
        if self.config.evaluate is not None:
            from sortformer_build.evaluate.datasets import load_checked

            self.board.put(DATASET, load_checked(self.config.evaluate, self.config.cache_layout.file_digests))

    def run_checkpoint(self, found: Checkpoint | None = None) -> Checkpoint | None:
        """The first stage: nothing else can be keyed without the checkpoint's digest. A dry run
        passes the checkpoint if it is already on this machine."""
        first = self.stages[0]
        assert isinstance(first, CheckpointStage), "the checkpoint stage comes first"
        if self.mode is Mode.plan:
            self.plans.append(
                StagePlan(name=first.name, prediction=first.predict(self.config, found is not None))
            )
            checkpoint = found
        else:
            first.execute(self._job(first))
            checkpoint = self.board.find(CHECKPOINT)
        if checkpoint is not None:
            self.checkpoint_sha256 = checkpoint.sha256
            self.board.put(JOB_DIGEST, self.job_digest(checkpoint.sha256))
        return checkpoint

    def published(self) -> Manifest | None:
        """The artifact's manifest if its package is delivered, intact and of this very job (its
        evaluation on this job's dataset may still be missing: see `evaluation_missing`)."""
        identity = self.board.find(JOB_DIGEST)
        if identity is None or not self.config.cache:
            return None
        return published_manifest(self.config, identity.digest)

    def evaluation_missing(self, manifest: Manifest) -> bool:
        """Whether the job evaluates on a dataset (or with settings, or code) the delivered
        package has no evaluation for; then only the evaluation stages run."""
        identity = self.board.find(JOB_DIGEST)
        assert identity is not None, "known once the checkpoint is"
        if identity.evaluation is None or manifest.evaluation(identity.evaluation) is not None:
            return False
        self.stages = job_stages(self.config, EVALUATION_ONLY)
        return True

    def run_rest(self) -> None:
        for stage in self.stages[1:]:
            self._stage(stage)

    def _stage(self, stage: Stage) -> None:
        skip = stage.skip(self.config)
        if skip is not None:
            if self.mode is Mode.plan:
                plan = StagePlan(
                    name=stage.name, prediction=Prediction.skipped, skip=skip.reason, why=skip.detail
                )
                self.plans.append(plan)
            else:
                self.steps.skip(stage.name, skip)
            return
        if isinstance(stage, CachedStage):
            self._cached(stage)
            return
        assert isinstance(stage, UncachedStage), f"{stage.name} is neither cached nor uncached"
        if self.mode is Mode.plan:
            self.plans.append(StagePlan(name=stage.name, prediction=stage.predict(self.config, True)))
        else:
            stage.execute(self._job(stage))

    def _cached(self, stage: CachedStage[Any]) -> None:
        if self.checkpoint_sha256 is None:  # a dry run before the checkpoint exists
            self.plans.append(StagePlan(name=stage.name, prediction=Prediction.unknown, why=UNKNOWN_WHY))
            return
        key = stage.cache_key(self._key_facts(stage, self.checkpoint_sha256))
        self.entries[stage.name] = self.cache.path(stage.cache_name, key).name
        if self.mode is Mode.plan:
            self.plans.append(StagePlan(name=stage.name, prediction=self._predict(stage, key)))
            return
        job = self._job(stage)
        served = self._predict(stage, key) is Prediction.hit
        with job.steps.step(stage.name, stage.description(self.config), announce=not served) as step:
            entry = self.cache.fetch(
                stage.cache_name, key, lambda folder: _built(stage, job, folder).model_dump(mode="json")
            )
            facts = stage.facts_type.model_validate(entry.facts)
            step.status, step.detail = (
                (StepStatus.cached, f"cached: {entry.path}")
                if entry.hit
                else (StepStatus.built, stage.detail(facts))
            )
        stage.accept(job, entry.path, facts)

    def _predict(self, stage: CachedStage[Any], key: dict[str, Any]) -> Prediction:
        if not self.cache.enabled:
            return Prediction.off
        return Prediction.hit if self.cache.lookup(stage.cache_name, key) is not None else Prediction.miss

    def _key_facts(self, stage: CachedStage[Any], checkpoint_sha256: str) -> KeyFacts:
        return KeyFacts(
            config=self.config,
            checkpoint_sha256=checkpoint_sha256,
            versions=self.versions,
            dataset_sha256=self.dataset_sha256(),
            entries={name: self.entries.get(name) for name in stage.upstream},
        )

    def dataset_sha256(self) -> str | None:
        dataset = self.board.find(DATASET)
        return None if dataset is None else dataset.sha256

    def job_digest(self, checkpoint_sha256: str) -> JobDigest:
        code = fingerprint(sorted({type(stage).__module__ for stage in self.stages if not stage.evaluates}))
        key = job_key(self.config, checkpoint_sha256, self.versions, code)
        evaluation = None
        if self.config.evaluate is not None:
            evaluation_code = fingerprint(
                sorted({type(stage).__module__ for stage in STAGES if stage.evaluates})
            )
            settings = config_dict(self.config)["evaluate"]
            evaluation = digest_of(
                {"settings": settings, "dataset": self.dataset_sha256(), "code": evaluation_code}
            )
        return JobDigest(digest=digest_of(key), code=code, evaluation=evaluation)

    def _job(self, stage: Stage) -> Job:
        assert self.staging is not None, "a build stages its artifact"
        return Job(self.config, self.cache, self.steps, self.versions, self.staging, self.board, stage)


def _built(stage: CachedStage[Any], job: Job, folder: Path) -> Any:
    facts = stage.build(job, folder)
    missing = [name for name in stage.outputs(job.config) if not (folder / name).exists()]
    if missing:  # a stage that does not make what it declares is a bug: keep no such entry
        raise RuntimeError(f"stage {stage.name} did not write {', '.join(missing)}")
    return facts


def job_key(config: BuildConfig, checkpoint_sha256: str, versions: ToolVersions, code: str) -> dict[str, Any]:
    """Everything a delivered package, its verification and its trace depend on (not where files
    go, not its evaluations, which are keyed apart): the settings that shape it, the weights, the
    tools and the code of the stages that build, verify and trace it."""
    plain = config_dict(config)
    shaping = {
        name: plain[name] for name in ("variant", "compression", "deployment_target", "verify", "trace")
    }
    recipe = config.compression.recipe
    if recipe is not None:
        from sortformer_build.compress.recipe import given_recipe

        # What the file asks for, not its name: an edited recipe is another package.
        shaping["recipe"] = given_recipe(Path(recipe)).model_dump(mode="json")
    return {
        "config": shaping,
        "checkpoint": checkpoint_sha256,
        "versions": versions.model_dump(),
        "code": code,
    }


def published_manifest(config: BuildConfig, digest: str) -> Manifest | None:
    """The published manifest if it describes `digest` and the package beside it is intact."""
    from sortformer_build.coreml.package import package_digest
    from sortformer_build.records.base import RecordError

    paths = ArtifactPaths.of(config)
    try:
        manifest = Manifest.read(paths.manifest)
    except RecordError:
        return None
    if manifest.job_digest != digest or not paths.package.is_dir():
        return None
    if package_digest(paths.package, config.cache_layout.package_digests) != manifest.artifact.content_sha256:
        return None
    return manifest
