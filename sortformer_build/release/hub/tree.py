"""The repo's layout on disk: `<path_in_repo>/<precision>/<file name>.mlmodelc` (compiled and
loaded on macOS) and/or `.mlpackage`, the model card at the root and `<path_in_repo>/release.json`.
Built in a `.partial-` folder and renamed into place whole: a failure leaves the previous staged
tree (or none), never half of one."""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sortformer_build.coreml import macos
from sortformer_build.records.release import Provenance, ReleaseEntry, ReleaseIndex, StagedFile
from sortformer_build.release.hub.card import CardFacts, write_card
from sortformer_build.release.hub.config import Format, PublishConfig
from sortformer_build.release.hub.errors import PublishError
from sortformer_build.release.hub.release import Model, Release
from sortformer_build.store import atomic

CARD_FILE = "README.md"
RELEASE_FILE = "release.json"

log = logging.getLogger("sortformer_build")


@dataclass(frozen=True)
class StagedRelease:
    root: Path
    files: list[StagedFile]
    # Each model's folders in the repo (`v3/fp16/Sortformer_v2.1.mlmodelc`): remote files under
    # them that are not staged belong to an older build and go.
    model_folders: list[str]

    def local_path(self, file: StagedFile) -> Path:
        return self.root / file.path_in_repo

    @property
    def total_bytes(self) -> int:
        return sum(file.bytes for file in self.files)


def release_folder(path_in_repo: str) -> str:
    """`path_in_repo` as a clean relative POSIX path, or PublishError."""
    path = PurePosixPath(path_in_repo.strip("/"))
    if not path.parts or ".." in path.parts or path_in_repo.startswith("/"):
        raise PublishError(f"path_in_repo must be a folder inside the repo (like v3), got {path_in_repo!r}")
    return path.as_posix()


def require_platform(formats: list[Format]) -> None:
    """Refuse `.mlmodelc` where Core ML cannot compile."""
    if not formats:
        raise PublishError(
            "formats is empty: choose mlmodelc (what the runtime downloads), mlpackage or both"
        )
    if Format.mlmodelc in formats and not macos.available():
        raise PublishError(
            f"cannot stage .mlmodelc on {platform.system()}: compiling {macos.NEEDS_MACOS.split(' (')[0]}; "
            "publish from a Mac, or pass formats=[mlpackage] to stage the packages only"
        )


def stage_release(release: Release, settings: PublishConfig, provenance: Provenance) -> StagedRelease:
    folder = release_folder(settings.path_in_repo)
    formats = settings.format_values
    require_platform(formats)
    facts = CardFacts(
        repo_id=settings.repo_id,
        path_in_repo=folder,
        formats=[value.value for value in formats],
        core_ml_check=_core_ml_check(formats),
        provenance=provenance,
    )
    with atomic.staged(settings.staging_root) as partial:
        partial.mkdir()
        model_folders = []
        for model in release.models:
            assert model.manifest is not None, "stage only a release without problems"
            for value in formats:
                relative = f"{folder}/{model.manifest.release_stem}.{value.value}"
                _stage_model(model.paths.package, partial / relative, value)
                model_folders.append(relative)
        write_card(partial / CARD_FILE, release, facts, settings.card)
        files = describe_files(partial)
        index = f"{folder}/{RELEASE_FILE}"
        _release_index(release, settings, folder, provenance, files).write(partial / index)
        files.append(_describe(partial, partial / index))
    return StagedRelease(settings.staging_root, files, model_folders)


def _core_ml_check(formats: list[Format]) -> str:
    if Format.mlmodelc in formats:
        return (
            f"every `.mlmodelc` was compiled from its verified package and loaded with all compute "
            f"units on macOS {platform.mac_ver()[0]}"
        )
    return "none here: packages only, staged where Core ML cannot compile; compile them on a Mac"


def _stage_model(package: Path, destination: Path, value: Format) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if value is Format.mlpackage:
        shutil.copytree(package, destination)
        return
    log.info("Compiling %s and loading it with all compute units", package)
    try:
        macos.compile_package(package, destination)
        macos.load_compiled(destination)
    except Exception as error:  # Core ML reports compile and load failures with many types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PublishError(f"{package} does not compile and load with Core ML: {first}") from None


def describe_files(root: Path) -> list[StagedFile]:
    return [_describe(root, path) for path in sorted(root.rglob("*")) if path.is_file()]


def _describe(root: Path, path: Path) -> StagedFile:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return StagedFile(
        path_in_repo=path.relative_to(root).as_posix(), bytes=path.stat().st_size, sha256=digest.hexdigest()
    )


def _release_index(
    release: Release, settings: PublishConfig, folder: str, provenance: Provenance, files: list[StagedFile]
) -> ReleaseIndex:
    return ReleaseIndex(
        repo_id=settings.repo_id,
        path_in_repo=folder,
        published_by=provenance,
        models=[_model_entry(model, folder, files) for model in release.models],
        files=files,
    )


def _model_entry(model: Model, folder: str, files: list[StagedFile]) -> ReleaseEntry:
    manifest = model.manifest
    assert manifest is not None and model.manifest_sha256 is not None, "stage only a release without problems"
    prefix = f"{folder}/{manifest.release_stem}."
    return ReleaseEntry(
        release_path=manifest.artifact.release_path,
        variant=manifest.variant.name,
        compression=manifest.compression.name,
        staged=sorted(
            {_top_folder(file.path_in_repo, prefix) for file in files if file.path_in_repo.startswith(prefix)}
        ),
        manifest_sha256=model.manifest_sha256,
        package_content_sha256=manifest.artifact.content_sha256,
        job_digest=manifest.job_digest,
        checkpoint_sha256=manifest.checkpoint.sha256,
    )


def _top_folder(path: str, prefix: str) -> str:
    """`v3/fp16/X.mlmodelc/model.mil` under prefix `v3/fp16/X.` -> `v3/fp16/X.mlmodelc`."""
    return prefix + path[len(prefix) :].split("/", 1)[0]
