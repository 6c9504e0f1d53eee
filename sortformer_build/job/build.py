"""One build job: run the registered stages over a job, deliver only what they verified."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.config import BuildConfig, validate_config
from sortformer_build.errors import BuildError
from sortformer_build.job.runner import Mode, Runner
from sortformer_build.job.scratch import job_scratch, job_staging
from sortformer_build.records.manifest import Manifest
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.evaluation import log_table
from sortformer_build.stages.registry import job_stages
from sortformer_build.store import atomic, space
from sortformer_build.store.budget import enforce_budget
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.usage import Uses

log = logging.getLogger("sortformer_build")


class OutputError(BuildError):
    """The output folder cannot receive the artifact."""


@dataclass
class BuildResult:
    package: Path
    manifest_path: Path
    manifest: Manifest
    up_to_date: bool  # the package: nothing was rebuilt
    evaluated: bool = False  # an up-to-date package, evaluated on a dataset it had no evaluation for


def build(config: BuildConfig) -> BuildResult:
    """Build, verify and deliver one artifact; raise BuildError (nothing delivered) if unfit."""
    for warning in validate_config(config):
        log.warning("%s", warning)
    stages = job_stages(config)
    layout = config.cache_layout
    log.info("Build cache: %s", layout.root)
    ensure_writable(layout.root, "cache folder")
    paths = ArtifactPaths.of(config)
    made = [folder for folder in (paths.folder, *paths.folder.parents) if not folder.exists()]
    ensure_writable(paths.folder, "output folder")
    uses = Uses()
    delivered = False
    try:
        with (
            job_scratch(layout.scratch) as scratch,
            job_staging(paths.folder) as staging,
            _space_said(((paths.folder, "the artifact", staging), (layout.root, "the job's files", scratch))),
        ):
            cache = BuildCache(
                layout.build, enabled=config.cache, scratch=scratch, uses=uses, digests=layout.entry_digests
            )
            runner = Runner(Mode.build, config, stages, cache, staging)
            runner.run_checkpoint()
            current = runner.published()
            if current is not None and runner.evaluation_missing(current):
                log.info(
                    "%s is up to date; evaluating it on a dataset it has no evaluation for", paths.package
                )
                runner.run_rest()
                delivered = True
                return BuildResult(paths.package, paths.manifest, Manifest.read(paths.manifest), True, True)
            if current is not None:
                log.info(
                    "%s is up to date (same checkpoint, config, tools and code); nothing to build",
                    paths.package,
                )
                for evaluation in current.evaluations:
                    log_table(evaluation, current.checkpoint.random_weights)
                delivered = True
                return BuildResult(paths.package, paths.manifest, current, up_to_date=True)
            runner.run_rest()
            delivered = True
    finally:
        uses.release()
        if not delivered:  # a failed job leaves no empty folder behind it
            for folder in made:
                atomic.remove_if_empty(folder)
        if config.cache:
            enforce_budget(layout.build, config.cache_max_gb)
    manifest = Manifest.read(paths.manifest)
    log.info("Delivered %s (%.1f MB)", paths.package, manifest.artifact.bytes / 1e6)
    return BuildResult(paths.package, paths.manifest, manifest, up_to_date=False)


@contextmanager
def _space_said(places: tuple[tuple[Path, str, Path], ...]) -> Iterator[None]:
    """A full disk the cache's own writes did not already say: which of `places` (folder, what
    the job writes there, the job's own folder there) filled, by the file the error names or
    else by the least free space, and how much the job had put there."""
    try:
        yield
    except Exception as error:
        if not space.is_full(error):
            raise
        named = space.named_file(error)
        folder, what, own = next(
            (place for place in places if named is not None and named.is_relative_to(place[0].resolve())),
            min(places, key=lambda place: space.free_bytes(place[0])),
        )
        raise space.NoSpaceError(space.describe(folder, what, space.tree_size(own), exact=False)) from None


def ensure_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = atomic.partial_path(folder / "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        hint = " (set cache_dir=... or $SORTFORMER_BUILD_CACHE)" if what == "cache folder" else ""
        raise OutputError(f"{what} {folder} is not writable: {error.strerror or error}{hint}") from None
