"""What makes a release unfit to publish, one line per problem.

Lint and parity must have run and passed. Compile, load and predict need Core ML, which only
macOS has: a release built elsewhere records them as skipped (needs macOS), and that is
accepted because publishing `.mlmodelc` happens on a Mac, where the publish step compiles every
package and loads it with all compute units before anything is staged. Any other skip, and any
failed step, refuses the release.
"""

from __future__ import annotations

from collections import defaultdict

from sortformer_build.coreml import macos
from sortformer_build.coreml.package import package_digest
from sortformer_build.release.publish.release import Manifest, Model, Release
from sortformer_build.stages.steps import FAILED, SKIPPED, VERIFIED

REQUIRED_VERIFIED = ("lint", "parity")


def release_problems(release: Release) -> list[str]:
    """Every reason not to publish `release`; empty when it is fit."""
    problems = [f"{job.label}: the job failed: {job.error}" for job in release.matrix.jobs if not job.ok]
    present = []
    for model in release.models:
        found = _missing(model)
        if found:
            problems.append(found)
            continue
        assert model.manifest is not None
        problems += _artifact_problems(model, model.manifest)
        present.append(model.manifest)
    if not release.matrix.jobs:
        problems.append(f"{release.folder}: the matrix lists no jobs: nothing to publish")
    return problems + _collisions(present) + _checkpoint_problems(present)


def _missing(model: Model) -> str | None:
    if model.manifest is None:
        return f"{model.job.label}: the manifest {model.manifest_path} is missing"
    if not model.package.is_dir():
        return f"{model.job.label}: the package {model.package} is missing"
    return None


def _artifact_problems(model: Model, manifest: Manifest) -> list[str]:
    label = model.job.label
    problems = []
    if model.job.bytes is not None and model.job.bytes != manifest.bytes:
        problems.append(
            f"{label}: matrix.json says {model.job.bytes} bytes, the manifest {manifest.bytes}: "
            "it was rebuilt after the sweep; rerun the sweep"
        )
    # Read every byte again: a remembered digest keyed by file stamps could miss an edit.
    content = package_digest(model.package)
    if content != manifest.content_sha256:
        problems.append(
            f"{label}: content sha256 {content[:12]} does not match its manifest's "
            f"{manifest.content_sha256[:12]} (changed after it was verified); rebuild it"
        )
    unverified = _unverified_steps(manifest)
    if unverified:
        problems.append(f"{label}: not verified: {'; '.join(unverified)}")
    return problems


def _unverified_steps(manifest: Manifest) -> list[str]:
    found = []
    for name in REQUIRED_VERIFIED:
        step = manifest.step(name)
        if step is None:
            found.append(f"{name} did not run")
        elif step.status != VERIFIED:
            found.append(_describe(step.name, step.status, step.detail))
    for step in manifest.steps:
        if step.name in REQUIRED_VERIFIED:
            continue
        if step.status == FAILED or (step.status == SKIPPED and step.detail != macos.NEEDS_MACOS):
            found.append(_describe(step.name, step.status, step.detail))
    return found


def _describe(name: str, status: str, detail: str) -> str:
    return f"{name} {status}{f' ({detail})' if detail else ''}"


def _collisions(manifests: list[Manifest]) -> list[str]:
    paths: dict[str, list[Manifest]] = defaultdict(list)
    for manifest in manifests:
        paths[manifest.release_path].append(manifest)
    return [
        f"{path}: {len(group)} artifacts would be published here ({', '.join(str(m.path) for m in group)})"
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
        by_version[manifest.checkpoint.version][manifest.checkpoint.sha256].append(manifest.release_stem)
    for version, digests in sorted(by_version.items()):
        if len(digests) > 1:
            which = "; ".join(f"{sha[:12]}: {', '.join(stems)}" for sha, stems in sorted(digests.items()))
            problems.append(
                f"the {version} models come from {len(digests)} different checkpoints ({which}): "
                "rebuild them from one"
            )
    return problems
