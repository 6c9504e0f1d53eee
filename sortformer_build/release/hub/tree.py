"""The repo's layout on disk: `<path_in_repo>/<precision>/<file name>.mlmodelc` (compiled and
loaded on macOS) and/or `.mlpackage`, NeMo's reference traces in `<path_in_repo>/traces/` (one
per model, shared by its compressions), the model card at the root with its timeline images in
`<path_in_repo>/figures/`, and `<path_in_repo>/release.json`.
Built in a `.partial-` folder and renamed into place whole: a failure leaves the previous staged
tree (or none), never half of one."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sortformer_build import faults
from sortformer_build.coreml import host, macos
from sortformer_build.coreml.coreml_errors import CoreMLError
from sortformer_build.coreml.package import package_size
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.records.device import ComputeUnits, DeviceReport
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.release import Provenance, ReleaseEntry, ReleaseIndex, StagedFile
from sortformer_build.release.hub.card import CardFacts, CardImage, write_card
from sortformer_build.release.hub.config import Format, PublishConfig
from sortformer_build.release.hub.errors import PublishError
from sortformer_build.release.hub.release import Model, Release
from sortformer_build.store import atomic, space

CARD_FILE = "README.md"
RELEASE_FILE = "release.json"
FIGURES_FOLDER = "figures"

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


def require_formats(formats: list[Format]) -> None:
    if not formats:
        raise PublishError(
            "formats is empty: choose mlmodelc (what the runtime downloads), mlpackage or both"
        )


def require_platform(formats: list[Format], targets: set[DeploymentTarget]) -> None:
    """Refuse `.mlmodelc` where Core ML cannot compile models built for `targets`."""
    if Format.mlmodelc not in formats:
        return
    for target in sorted(targets):
        found = host.for_target(target)
        if found.skip is not None:
            raise PublishError(
                f"cannot stage .mlmodelc here: {found.detail}; "
                "publish from a Mac, or pass formats=[mlpackage] to stage the packages only"
            )


def stage_release(release: Release, settings: PublishConfig, provenance: Provenance) -> StagedRelease:
    folder = release_folder(settings.path_in_repo)
    formats = settings.format_values
    needed = len(formats) * sum(package_size(model.paths.package) for model in release.models)
    with atomic.lock(settings.staging_root):
        # Every publish stages under this lock: partial trees beside the staged one are a killed one's.
        atomic.remove_partials_of(settings.staging_root)
        with (
            space.reported(settings.staging_root.parent, "the staged release", lambda: needed, exact=True),
            atomic.staged(settings.staging_root) as partial,
        ):
            files, model_folders = _stage_tree(release, settings, provenance, folder, partial)
    return StagedRelease(settings.staging_root, files, model_folders)


def _stage_tree(
    release: Release, settings: PublishConfig, provenance: Provenance, folder: str, partial: Path
) -> tuple[list[StagedFile], list[str]]:
    partial.mkdir()
    model_folders = []
    reports = {}
    for model in release.models:
        assert model.manifest is not None, "stage only a release without problems"
        for value in settings.format_values:
            relative = model_folder(folder, model.manifest, value)
            report = _stage_model(model.paths.package, partial / relative, value)
            faults.point("hub.tree", settings.staging_root.parent)
            if report is not None:
                reports[model.manifest.release_stem] = report
            model_folders.append(relative)
    _stage_traces(release, partial / folder)
    facts = CardFacts(
        repo_id=settings.repo_id,
        path_in_repo=folder,
        formats=[value.value for value in settings.format_values],
        device_reports=reports,
        provenance=provenance,
        timelines=_stage_timelines(release, partial, folder),
    )
    write_card(partial / CARD_FILE, release, facts, settings.card)
    files = describe_files(partial)
    index = f"{folder}/{RELEASE_FILE}"
    _release_index(release, settings, folder, provenance, files).write(partial / index)
    files.append(_describe(partial, partial / index))
    return files, model_folders


def _stage_traces(release: Release, destination: Path) -> None:
    """Each model's reference trace, once: the compressions of a model name the same files."""
    for model in release.models:
        files = model.trace_files()
        assert model.manifest is not None, "stage only a release without problems"
        if files is None or model.manifest.trace is None:
            continue
        for source, relative in zip(
            files, (model.manifest.trace.index, model.manifest.trace.arrays), strict=True
        ):
            target = destination / relative
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


def _stage_timelines(release: Release, partial: Path, folder: str) -> list[CardImage]:
    """The card's timeline images, as files of the repo (release.json lists them with the rest)."""
    from sortformer_build.release.report.geometries import geometry_timelines

    models = [(model.paths, model.manifest) for model in release.models if model.manifest is not None]
    images = []
    for timeline in geometry_timelines(models):
        relative = f"{folder}/{FIGURES_FOLDER}/{timeline.file}"
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        (partial / relative).write_bytes(timeline.image.png)
        images.append(CardImage(relative, timeline.image.alt, timeline.image.caption))
    return images


def _stage_model(package: Path, destination: Path, value: Format) -> DeviceReport | None:
    """Copy the package, or compile it and measure it on this Mac (first prediction in a fresh
    process, latency, memory, where its ops run)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if value is Format.mlpackage:
        shutil.copytree(package, destination)
        return None
    log.info("Compiling %s and measuring it with all compute units", package)
    try:
        return macos.measure_device(package, destination, ComputeUnits.all)
    except CoreMLError as error:
        raise PublishError(f"{package} does not compile, load and predict with Core ML: {error}") from None


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
        models=[_model_entry(model, folder, settings.format_values) for model in release.models],
        files=files,
    )


def _model_entry(model: Model, folder: str, formats: list[Format]) -> ReleaseEntry:
    manifest = model.manifest
    assert manifest is not None and model.manifest_sha256 is not None, "stage only a release without problems"
    return ReleaseEntry(
        release_path=manifest.artifact.release_path,
        variant=manifest.variant.name,
        compression=manifest.compression.name,
        staged=[model_folder(folder, manifest, value) for value in formats],
        manifest_sha256=model.manifest_sha256,
        package_content_sha256=manifest.artifact.content_sha256,
        job_digest=manifest.job_digest,
        checkpoint_sha256=manifest.checkpoint.sha256,
        trace=None if manifest.trace is None else f"{folder}/{manifest.trace.index}",
    )


def model_folder(folder: str, manifest: Manifest, value: Format) -> str:
    """A model's folder in the repo: `v3/fp16/Sortformer_v2.1.mlmodelc`."""
    return f"{folder}/{manifest.release_stem}.{value.value}"
