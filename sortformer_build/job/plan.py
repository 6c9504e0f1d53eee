"""Dry runs: what one build job would do, worked out without building anything.

The plan asks the build's own questions (`build.artifact_key`, `programs_key`, `palettize_key`,
`published_record`, `BuildCache.lookup`), so "up to date" and "cache hit" mean here exactly what
they mean to `build`. It makes no checkpoint, loads no model and imports neither torch,
coremltools nor NeMo: a dry run of the whole release takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from sortformer_build.checkpoint.sources import Checkpoint, find_checkpoint
from sortformer_build.config import BuildConfig, CheckpointSource, validate_config
from sortformer_build.job.build import (
    PALETTIZE_STAGE,
    PROGRAMS_STAGE,
    artifact_key,
    artifact_paths,
    palettize_key,
    programs_key,
    published_record,
)
from sortformer_build.store.cache import BuildCache, digest_of, tool_versions
from sortformer_build.verify.check import REFERENCE_STAGE, reference_key

log = logging.getLogger("sortformer_build")

HIT, MISS, OFF = "hit", "miss", "off"
# A checkpoint not made or downloaded yet has no sha256, hence no cache keys.
UNKNOWN = "unknown"


@dataclass
class JobPlan:
    package: str
    compression: str
    geometry: str
    latency_seconds: float
    checkpoint: str
    up_to_date: bool
    # Cache stage -> HIT, MISS, OFF (cache=false) or UNKNOWN; empty when up to date.
    stages: dict[str, str]
    warnings: list[str]

    def describe(self) -> str:
        """One line: what the job would do."""
        action = "up to date, nothing to build" if self.up_to_date else "would build"
        stages = "".join(f"; {stage} {state}" for stage, state in self.stages.items())
        return (
            f"Dry run: {self.package} {action} [{self.geometry}; latency {self.latency_seconds:.2f} s; "
            f"checkpoint {self.checkpoint}{stages}]"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def plan_job(config: BuildConfig) -> JobPlan:
    """What `build(config)` would do now; raise the same ConfigError or GeometryError it would."""
    warnings = validate_config(config)
    for warning in warnings:
        log.warning("%s", warning)
    package, _ = artifact_paths(config)
    geometry = config.variant.geometry
    checkpoint = find_checkpoint(config.checkpoint, config.variant.version, config.cache_root / "checkpoints")
    plan = JobPlan(
        package=str(package),
        compression=config.compression.name,
        geometry=geometry.describe(),
        latency_seconds=geometry.latency_seconds,
        checkpoint=_checkpoint_text(config, checkpoint),
        up_to_date=False,
        stages=dict.fromkeys(_stages(config), UNKNOWN),
        warnings=warnings,
    )
    if checkpoint is None:
        return plan
    versions = tool_versions()
    if not config.cache:
        plan.stages = dict.fromkeys(plan.stages, OFF)
    elif published_record(config, digest_of(artifact_key(config, checkpoint.sha256, versions))) is not None:
        plan.up_to_date, plan.stages = True, {}
    else:
        plan.stages = _stage_hits(config, checkpoint, versions)
    return plan


def _stages(config: BuildConfig) -> list[str]:
    stages = [PROGRAMS_STAGE] if config.compression.nbits is None else [PROGRAMS_STAGE, PALETTIZE_STAGE]
    return [*stages, REFERENCE_STAGE] if config.verify.parity else stages


def _checkpoint_text(config: BuildConfig, checkpoint: Checkpoint | None) -> str:
    if checkpoint is not None:
        return f"sha256 {checkpoint.sha256[:12]}"
    verb = "downloaded" if config.checkpoint.source == CheckpointSource.hub else "made"
    return f"not on this machine yet (would be {verb})"


def _stage_hits(config: BuildConfig, checkpoint: Checkpoint, versions: dict[str, str]) -> dict[str, str]:
    cache = BuildCache(config.cache_root / "build")
    programs = programs_key(config, checkpoint.sha256, versions)
    hits = {PROGRAMS_STAGE: HIT if cache.lookup(PROGRAMS_STAGE, programs) else MISS}
    if config.compression.nbits is not None:
        head = palettize_key(config, cache.path(PROGRAMS_STAGE, programs).name, versions)
        hits[PALETTIZE_STAGE] = HIT if cache.lookup(PALETTIZE_STAGE, head) else MISS
    if config.verify.parity:
        reference = reference_key(checkpoint.sha256, config.variant.geometry, config.verify, versions)
        hits[REFERENCE_STAGE] = HIT if cache.lookup(REFERENCE_STAGE, reference) else MISS
    return hits
