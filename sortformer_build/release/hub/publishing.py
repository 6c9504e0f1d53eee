"""Publishing a finished release: check it, stage the repo layout, then upload (or list)."""

from __future__ import annotations

from pathlib import Path

from sortformer_build.records.release import Provenance
from sortformer_build.release.hub.checks import release_problems
from sortformer_build.release.hub.config import PublishConfig
from sortformer_build.release.hub.errors import PublishError, ReleaseRefused
from sortformer_build.release.hub.release import Release, read_release
from sortformer_build.release.hub.tree import release_folder, require_formats, require_platform, stage_release
from sortformer_build.release.hub.upload import (
    ADD,
    Operation,
    operations,
    repo_url,
    require_online,
    upload,
)
from sortformer_build.store.provenance import current_provenance

MB = 1e6


def publish(settings: PublishConfig) -> None:
    """Check, stage and upload (or, in a dry run, list) the release; raise PublishError if unfit."""
    folder = release_folder(settings.path_in_repo)
    require_formats(settings.format_values)
    release = read_release(Path(settings.output_dir))
    require_platform(settings.format_values, {manifest.deployment_target for manifest in release.manifests()})
    problems = release_problems(release)
    if problems:
        raise ReleaseRefused(settings.output_dir, problems)
    if not settings.dry_run:
        require_online(settings.repo_id)
        _refuse_synthetic(release, settings.allow_synthetic)
    provenance = current_provenance()
    staged = stage_release(release, settings, provenance)
    print(f"Staged {staged.root}: {len(staged.files)} files, {staged.total_bytes / MB:.1f} MB")
    url = repo_url(settings.repo_id, settings.revision, folder)
    if settings.dry_run:
        planned = operations(staged, remote={})
        print(f"Dry run: would commit {len(planned)} operations to {url} (no network used):")
        _print_operations(planned)
        return
    message = settings.commit_message or _commit_message(release, folder, provenance)
    planned, link = upload(
        staged, settings.repo_id, folder, settings.revision, settings.create_pr, message, provenance
    )
    if link is None:
        print(f"Nothing to upload: {url} already holds every staged file")
        return
    _print_operations(planned)
    print(f"Published: {link}")


def _refuse_synthetic(release: Release, allowed: bool) -> None:
    sources = {
        manifest.checkpoint.source for manifest in release.manifests() if manifest.checkpoint.random_weights
    }
    if sources and not allowed:
        raise PublishError(
            f"the release was built from {', '.join(sorted(sources))} random weights, not NVIDIA's: "
            "refusing to upload (allow_synthetic=true to upload it anyway, e.g. to a test repo)"
        )


def _commit_message(release: Release, folder: str, provenance: Provenance) -> str:
    return f"Publish {folder}: {len(release.models)} models ({provenance.describe()})"


def _print_operations(planned: list[Operation]) -> None:
    for operation in planned:
        print(f"  {operation.describe()}")
    added = sum(operation.bytes or 0 for operation in planned if operation.action == ADD)
    print(f"  {len(planned)} operations, {added / MB:.1f} MB to upload")
