"""Dry runs: what one build job would do, worked out by the build's own runner in plan mode,
so "up to date" and "cache hit" mean here exactly what they mean to `build`."""

from __future__ import annotations

import logging

from sortformer_build.checkpoint.sources import Checkpoint, find_checkpoint
from sortformer_build.config import BuildConfig, CheckpointSource, validate_config
from sortformer_build.job.runner import Mode, Runner
from sortformer_build.records.status import JobPlan
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.registry import job_stages
from sortformer_build.store.cache import BuildCache

log = logging.getLogger("sortformer_build")


def plan_job(config: BuildConfig) -> JobPlan:
    """What `build(config)` would do now; raise the same ConfigError or GeometryError it would."""
    warnings = validate_config(config)
    for warning in warnings:
        log.warning("%s", warning)
    geometry = config.variant.geometry
    checkpoint = find_checkpoint(config.checkpoint, config.variant.version, config.cache_layout)
    layout = config.cache_layout
    cache = BuildCache(layout.build, enabled=config.cache, digests=layout.entry_digests)
    runner = Runner(Mode.plan, config, job_stages(config), cache)
    runner.run_checkpoint(checkpoint)
    current = runner.published()
    up_to_date = current is not None and not runner.evaluation_missing(current)
    if not up_to_date:
        runner.run_rest()
    return JobPlan(
        package=str(ArtifactPaths.of(config).package),
        compression=config.compression.name,
        geometry=geometry.describe(),
        latency_seconds=geometry.latency_seconds,
        latency=geometry.latency,
        checkpoint=_checkpoint_text(config, checkpoint),
        up_to_date=up_to_date,
        stages=[] if up_to_date else runner.plans,
        warnings=warnings,
    )


def _checkpoint_text(config: BuildConfig, checkpoint: Checkpoint | None) -> str:
    if checkpoint is not None:
        return f"sha256 {checkpoint.sha256[:12]}"
    verb = "downloaded" if config.checkpoint.source == CheckpointSource.hub else "made"
    return f"not on this machine yet (would be {verb})"
