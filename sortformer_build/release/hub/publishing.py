"""Publishing a finished release: check it, stage the repo layout, then upload (or list)."""

from __future__ import annotations

from pathlib import Path

from sortformer_build.records.release import Provenance
from sortformer_build.release.hub.checks import release_problems
from sortformer_build.release.hub.config import RUNTIME_FOLDER, RUNTIME_REPO, PublishConfig
from sortformer_build.release.hub.errors import ReleaseRefused, UploadRefused
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


def publish(settings: PublishConfig, release_set: set[str]) -> None:
    """Check, stage and upload (or, in a dry run, list) the release; raise PublishError if unfit,
    UploadRefused (after staging, in a dry run) if an upload would be refused. `release_set`:
    the release paths a full release publishes (`fp16/Sortformer_v2.1`, ...)."""
    folder = release_folder(settings.path_in_repo)
    require_formats(settings.format_values)
    release = read_release(Path(settings.output_dir))
    require_platform(settings.format_values, {manifest.deployment_target for manifest in release.manifests()})
    problems = release_problems(release)
    if problems:
        raise ReleaseRefused(settings.output_dir, problems)
    reasons = upload_refusals(release, settings, release_set)
    if not settings.dry_run:
        if reasons:
            raise UploadRefused(reasons)
        require_online(settings.repo_id)
    provenance = current_provenance()
    staged = stage_release(release, settings, provenance)
    print(f"Staged {staged.root}: {len(staged.files)} files, {staged.total_bytes / MB:.1f} MB")
    url = repo_url(settings.repo_id, settings.revision, folder)
    if settings.dry_run:
        planned = operations(staged, remote={})
        print(f"Dry run: would commit {len(planned)} operations to {url} (no network used):")
        _print_operations(planned)
        if reasons:
            raise UploadRefused(reasons)
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


def upload_refusals(release: Release, settings: PublishConfig, release_set: set[str]) -> list[str]:
    """Why an upload of this (fit) release would be refused, one line per reason."""
    reasons = []
    sources = {m.checkpoint.source for m in release.manifests() if m.checkpoint.random_weights}
    if sources and not settings.allow_synthetic:
        reasons.append(
            f"the release was built from {', '.join(sorted(sources))} random weights, not NVIDIA's "
            "(allow_synthetic=true to upload it anyway, e.g. to a test repo)"
        )
    if not settings.allow_partial:
        present = {manifest.release_stem for manifest in release.manifests()}
        missing = sorted(release_set - present)
        if missing:
            reasons.append(
                f"{len(missing)} of the {len(release_set)} models of the release set are missing "
                f"({', '.join(missing)}): sweep them all, or allow_partial=true"
            )
        if (settings.repo_id, release_folder(settings.path_in_repo)) != (RUNTIME_REPO, RUNTIME_FOLDER):
            reasons.append(
                f"the runtime downloads from {RUNTIME_REPO} {RUNTIME_FOLDER}/, not "
                f"{settings.repo_id} {settings.path_in_repo}/ (allow_partial=true to publish there anyway)"
            )
    return reasons


def _commit_message(release: Release, folder: str, provenance: Provenance) -> str:
    return f"Publish {folder}: {len(release.models)} models ({provenance.describe()})"


def _print_operations(planned: list[Operation]) -> None:
    for operation in planned:
        print(f"  {operation.describe()}")
    added = sum(operation.bytes or 0 for operation in planned if operation.action == ADD)
    print(f"  {len(planned)} operations, {added / MB:.1f} MB to upload")
