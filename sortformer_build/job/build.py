"""One build job: run the registered stages over a job context, publish only what they verified."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.config import BuildConfig, validate_config
from sortformer_build.errors import BuildError
from sortformer_build.job.scratch import job_scratch
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.base import JobContext, Stage, lazy_dataset
from sortformer_build.stages.evaluation import log_table
from sortformer_build.stages.manifest import Manifest, job_digest, published_manifest
from sortformer_build.stages.registry import job_stages
from sortformer_build.stages.steps import StepLog
from sortformer_build.store import atomic
from sortformer_build.store.budget import enforce_budget
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.provenance import tool_versions
from sortformer_build.store.usage import Uses

log = logging.getLogger("sortformer_build")


class OutputError(BuildError):
    """The output folder cannot receive the artifact."""


@dataclass
class BuildResult:
    package: Path
    manifest_path: Path
    manifest: Manifest
    up_to_date: bool


def build(config: BuildConfig) -> BuildResult:
    """Build, verify and publish one artifact; raise BuildError (nothing published) if unfit."""
    for warning in validate_config(config):
        log.warning("%s", warning)
    log.info("Build cache: %s", config.cache_root)
    paths = ArtifactPaths.of(config)
    ensure_writable(paths.folder)
    atomic.sweep_stale_partials(paths.folder)  # what killed jobs left behind
    uses = Uses()
    try:
        return _build(config, paths, uses)
    finally:
        uses.release()
        if config.cache:
            enforce_budget(config.build_cache_dir, config.cache_max_gb)


def _build(config: BuildConfig, paths: ArtifactPaths, uses: Uses) -> BuildResult:
    with job_scratch(config.cache_root) as scratch, atomic.scratch_folder(paths.folder) as staging:
        cache = BuildCache(config.build_cache_dir, enabled=config.cache, scratch=scratch, uses=uses)
        job = JobContext(
            config=config,
            cache=cache,
            steps=StepLog(),
            versions=tool_versions(),
            staging=staging,
            dataset=lazy_dataset(config),
        )
        # The checkpoint stage comes first: nothing else can be keyed without its digest.
        first, *rest = job_stages(config)
        _run(first, job)
        current = _published(job) if config.cache else None
        if current is not None:
            log.info("%s is up to date (same checkpoint, config and tools); nothing to build", paths.package)
            if config.evaluate is not None:
                log_table(current.evaluation)
            return BuildResult(paths.package, paths.manifest, current, up_to_date=True)
        for stage in rest:
            _run(stage, job)
    manifest = Manifest.read(paths.manifest)
    log.info("Published %s (%.1f MB)", paths.package, manifest.artifact.bytes / 1e6)
    return BuildResult(paths.package, paths.manifest, manifest, up_to_date=False)


def _run(stage: Stage, job: JobContext) -> None:
    reason = stage.skip_reason(job.config)
    if reason is None:
        stage.execute(job)
    else:
        job.steps.skip(stage.name, reason)
        job.verification.skipped[stage.name] = reason


def _published(job: JobContext) -> Manifest | None:
    facts = job.key_facts()
    return published_manifest(
        job.config, job_digest(job.config, facts.checkpoint_sha256, job.versions, facts.dataset_sha256)
    )


def ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = atomic.partial_path(folder / "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"output folder {folder} is not writable: {error.strerror or error}") from None
