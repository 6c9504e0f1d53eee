"""Dry runs: what one build job would do, worked out without building anything.

The plan walks the same stage list the build runs and asks each stage what it would do
(`Stage.predict`), with the same cache keys, so "up to date" and "cache hit" mean here exactly
what they mean to `build`. It makes no checkpoint, loads no model and imports neither torch,
coremltools nor NeMo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sortformer_build.checkpoint.sources import Checkpoint, find_checkpoint
from sortformer_build.config import BuildConfig, CheckpointSource, validate_config
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.base import KeyFacts, PlanContext, Prediction, lazy_dataset
from sortformer_build.stages.manifest import job_digest, published_manifest
from sortformer_build.stages.registry import job_stages
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.provenance import tool_versions

log = logging.getLogger("sortformer_build")


@dataclass
class StagePlan:
    name: str
    prediction: Prediction
    why: str = ""  # for skipped stages and unknown cache states


@dataclass
class JobPlan:
    package: str
    compression: str
    geometry: str
    latency_seconds: float
    latency: str  # as the matrix shows it
    checkpoint: str
    up_to_date: bool
    stages: list[StagePlan] = field(default_factory=list)  # empty when up to date
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: what the job would do."""
        action = "up to date, nothing to build" if self.up_to_date else "would build"
        stages = "".join(f"; {stage.name} {stage.prediction.value}" for stage in self.stages)
        line = (
            f"Dry run: {self.package} {action} [{self.geometry}; latency {self.latency}; "
            f"checkpoint {self.checkpoint}{stages}]"
        )
        notes = sorted({stage.why for stage in self.stages if stage.prediction is Prediction.unknown})
        return line + "".join(f"\n  {note}" for note in notes)


UNKNOWN_WHY = "cache states are unknown until the checkpoint exists: its sha256 is part of every key"


def plan_job(config: BuildConfig) -> JobPlan:
    """What `build(config)` would do now; raise the same ConfigError or GeometryError it would."""
    warnings = validate_config(config)
    for warning in warnings:
        log.warning("%s", warning)
    geometry = config.variant.geometry
    checkpoint = find_checkpoint(config.checkpoint, config.variant.version, config.checkpoint_dir)
    plan = JobPlan(
        package=str(ArtifactPaths.of(config).package),
        compression=config.compression.name,
        geometry=geometry.describe(),
        latency_seconds=geometry.latency_seconds,
        latency=geometry.latency,
        checkpoint=_checkpoint_text(config, checkpoint),
        up_to_date=False,
        warnings=warnings,
    )
    versions = tool_versions()
    dataset = lazy_dataset(config)
    dataset_sha256 = None if dataset is None else dataset.get().sha256
    facts = None if checkpoint is None else KeyFacts(config, checkpoint.sha256, versions, {}, dataset_sha256)
    if facts is not None and config.cache:
        digest = job_digest(config, facts.checkpoint_sha256, versions, dataset_sha256)
        plan.up_to_date = published_manifest(config, digest) is not None
        if plan.up_to_date:
            return plan
    context = PlanContext(config, BuildCache(config.build_cache_dir, enabled=config.cache), checkpoint, facts)
    for stage in job_stages(config):
        reason = stage.skip_reason(config)
        if reason is not None:
            plan.stages.append(StagePlan(stage.name, Prediction.skipped, reason))
            continue
        prediction = stage.predict(context)
        plan.stages.append(
            StagePlan(stage.name, prediction, UNKNOWN_WHY if prediction is Prediction.unknown else "")
        )
    return plan


def _checkpoint_text(config: BuildConfig, checkpoint: Checkpoint | None) -> str:
    if checkpoint is not None:
        return f"sha256 {checkpoint.sha256[:12]}"
    verb = "downloaded" if config.checkpoint.source == CheckpointSource.hub else "made"
    return f"not on this machine yet (would be {verb})"
