"""What makes a release unfit to publish, one line per problem.

Lint and parity must have run and passed. Compile, load and predict need Core ML, which only
macOS has: a release built elsewhere records them as skipped for a reason that means "could not
run here", and that is accepted because publishing `.mlmodelc` happens on a Mac, where the
publish step compiles every package and loads it with all compute units before anything is
staged. Any other skip, and any failed step, refuses the release.
"""

from __future__ import annotations

from collections import defaultdict

from sortformer_build.coreml.package import package_digest
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.steps import StepStatus
from sortformer_build.release.hub.release import Model, Release

REQUIRED_VERIFIED = ("lint", "parity")


def release_problems(release: Release) -> list[str]:
    """Every reason not to publish `release`; empty when it is fit."""
    problems = [
        f"{row.label}: the job failed: {row.status.error}" for row in release.matrix.rows if not row.status.ok
    ]
    present = []
    for model in release.models:
        if model.manifest is None:
            problems.append(f"{model.label}: {model.problem}")
            continue
        if not model.paths.package.is_dir():
            problems.append(f"{model.label}: the package {model.paths.package} is missing")
            continue
        problems += _artifact_problems(model, model.manifest)
        present.append(model)
    if not release.matrix.rows:
        problems.append(f"{release.folder}: the matrix lists no jobs: nothing to publish")
    manifests = [model.manifest for model in present if model.manifest is not None]
    return problems + _collisions(present) + _checkpoint_problems(manifests)


def _artifact_problems(model: Model, manifest: Manifest) -> list[str]:
    label = model.label
    problems = []
    swept = model.row.manifest
    if swept is not None and swept.artifact.content_sha256 != manifest.artifact.content_sha256:
        problems.append(
            f"{label}: the sweep's matrix describes another build than the manifest on disk: it was "
            "rebuilt after the sweep; rerun the sweep"
        )
    # Read every byte again: a remembered digest keyed by file stamps could miss an edit.
    content = package_digest(model.paths.package)
    if content != manifest.artifact.content_sha256:
        problems.append(
            f"{label}: content sha256 {content[:12]} does not match its manifest's "
            f"{manifest.artifact.content_sha256[:12]} (changed after it was verified); rebuild it"
        )
    unverified = _unverified_steps(manifest)
    if unverified:
        problems.append(f"{label}: not verified: {'; '.join(unverified)}")
    return problems + _trace_problems(model, manifest)


def _trace_problems(model: Model, manifest: Manifest) -> list[str]:
    """The reference trace the manifest names must be there, the arrays it delivered."""
    from sortformer_build.trace.format import file_sha256

    files = model.trace_files()
    if files is None or manifest.trace is None:
        return []
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        return [
            f"{model.label}: its reference trace is missing ({', '.join(missing)}); rebuild it with trace=..."
        ]
    if file_sha256(files[1]) != manifest.trace.arrays_sha256:
        return [
            f"{model.label}: the reference trace {files[1]} is not the one its manifest names "
            "(another build's?); rebuild it with trace=..."
        ]
    return []


def _unverified_steps(manifest: Manifest) -> list[str]:
    found = []
    for name in REQUIRED_VERIFIED:
        step = manifest.step(name)
        if step is None:
            found.append(f"{name} did not run")
        elif step.status is not StepStatus.verified:
            found.append(step.describe())
    for step in manifest.steps:
        if step.name in REQUIRED_VERIFIED:
            continue
        skipped_elsewhere = step.status is StepStatus.skipped and not (
            step.skip is not None and step.skip.could_not_run_here
        )
        if step.status is StepStatus.failed or skipped_elsewhere:
            found.append(step.describe())
    return found


def _collisions(models: list[Model]) -> list[str]:
    paths: dict[str, list[Model]] = defaultdict(list)
    for model in models:
        assert model.manifest is not None
        paths[model.manifest.artifact.release_path].append(model)
    return [
        f"{path}: {len(group)} artifacts would be published here "
        f"({', '.join(str(model.paths.manifest) for model in group)})"
        for path, group in paths.items()
        if len(group) > 1
    ]


def _checkpoint_problems(manifests: list[Manifest]) -> list[str]:
    """One checkpoint per checkpoint version, all from one kind of source: a release of v2 and
    v2.1 models has two checkpoints, but never two of the same version."""
    problems = []
    sources = sorted({manifest.checkpoint.source for manifest in manifests})
    if len(sources) > 1:
        problems.append(f"the release mixes checkpoint sources ({', '.join(sources)}): build it from one")
    by_version: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for manifest in manifests:
        by_version[manifest.variant.version][manifest.checkpoint.sha256].append(manifest.release_stem)
    for version, digests in sorted(by_version.items()):
        if len(digests) > 1:
            which = "; ".join(f"{sha[:12]}: {', '.join(stems)}" for sha, stems in sorted(digests.items()))
            problems.append(
                f"the {version} models come from {len(digests)} different checkpoints ({which}): "
                "rebuild them from one"
            )
    return problems
