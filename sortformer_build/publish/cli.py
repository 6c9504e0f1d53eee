"""The `sortformer-build-publish` command: Hydra composes conf/publish.yaml, `publish` does the work."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import BuildError
from ..logs import quiet_third_party
from .card import SYNTHETIC_SOURCES
from .checks import release_problems
from .config import PublishConfig
from .errors import PublishError, ReleaseRefused
from .provenance import Provenance, current_provenance
from .release import Release, read_release
from .stage import release_folder, require_platform, stage_release
from .upload import ADD, Operation, operations, repo_url, require_online, upload

PROGRAM = "sortformer-build-publish"
MB = 1e6


def publish(settings: PublishConfig) -> None:
    """Check, stage and upload (or, in a dry run, list) the release; raise PublishError if unfit."""
    folder = release_folder(settings.path_in_repo)
    require_platform(settings.format_values)
    release = read_release(Path(settings.output_dir))
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
    sources = {m.manifest.checkpoint.source for m in release.models if m.manifest} & set(SYNTHETIC_SOURCES)
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


def report(settings: PublishConfig) -> int:
    """Run `publish`; one line per problem on stderr. Returns the exit status."""
    try:
        publish(settings)
    except ReleaseRefused as refusal:
        print(f"{PROGRAM}: {refusal}", file=sys.stderr)
        for problem in refusal.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except (BuildError, OSError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    return 0


@hydra.main(version_base="1.3", config_path="pkg://sortformer_build.conf", config_name="publish")
def _hydra_main(cfg: DictConfig) -> None:
    quiet_third_party()
    try:
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        print(f"{PROGRAM}: error: invalid configuration: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    assert isinstance(settings, PublishConfig)
    status = report(settings)
    if status:
        sys.exit(status)


def register_schema() -> None:
    ConfigStore.instance().store(group="schema", name="publish", node=PublishConfig)


def main() -> None:
    register_schema()
    _hydra_main()
