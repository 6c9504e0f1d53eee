"""The publish stage: the verified package (and compiled model) renamed into place, then the
manifest that vouches for them, under a lock so two jobs writing one artifact leave one
consistent pair."""

from __future__ import annotations

from sortformer_build.config import BuildConfig, config_dict
from sortformer_build.coreml.package import package_digest, package_size
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.base import JobContext, Stage, need
from sortformer_build.stages.manifest import (
    ArtifactRecord,
    CheckpointRecord,
    CompressionRecord,
    Manifest,
    VariantRecord,
    job_digest,
    shapes_of,
)
from sortformer_build.store import atomic
from sortformer_build.store.provenance import python_version


class PublishStage(Stage):
    name = "publish"

    def description(self, config: BuildConfig) -> str:
        return f"Publishing into {config.artifact_dir}"

    def execute(self, job: JobContext) -> None:
        paths = ArtifactPaths.of(job.config)
        staged = need(job.package, "staged package")
        with atomic.lock(paths.folder / paths.name):
            with self.step(job) as step:
                manifest = manifest_of(job, package_digest(staged))
                for source, final in (
                    (staged, paths.package),
                    (staged.with_suffix(".mlmodelc"), paths.compiled),
                    (job.evaluation_dir, paths.evaluation),
                ):
                    if source is not None and source.exists():
                        atomic.replace(source, final)
                    elif final != paths.package:  # an earlier build's: not this manifest's
                        atomic.remove(final)
                step.detail = str(paths.package)
            # The manifest names the publish step too: written last, it is what says "done".
            manifest.steps, manifest.seconds = list(job.steps.steps), dict(job.steps.timings)
            manifest.write(paths.manifest)
        # Remember the digest for the published files: the next warm check is free.
        package_digest(paths.package, job.config.digest_memo_dir, known=manifest.artifact.content_sha256)


def manifest_of(job: JobContext, content_sha256: str) -> Manifest:
    config = job.config
    checkpoint = need(job.checkpoint, "checkpoint")
    paths = ArtifactPaths.of(config)
    staged = need(job.package, "staged package")
    compression, variant = config.compression, config.variant
    return Manifest(
        artifact=ArtifactRecord(
            file=paths.package.name,
            content_sha256=content_sha256,
            bytes=package_size(staged),
            release_path=paths.release_path,
        ),
        variant=VariantRecord(variant.name, variant.version, variant.file_name, variant.released),
        deployment_target=config.deployment_target.value,
        compression=CompressionRecord(
            compression.name, compression.folder, compression.nbits, compression.release
        ),
        geometry=config.variant.geometry,
        shapes=shapes_of(config.variant.geometry),
        checkpoint=CheckpointRecord(
            source=checkpoint.source,
            origin=checkpoint.origin,
            file=str(checkpoint.path),
            sha256=checkpoint.sha256,
        ),
        parameters=need(job.programs, "converted programs").parameters,
        versions={"python": python_version(), **job.versions},
        steps=[],
        seconds={},
        job_digest=job_digest(config, checkpoint.sha256, job.versions, job.key_facts().dataset_sha256),
        config=config_dict(config),
        verification=job.verification.as_dict(),
        evaluation=job.evaluation,
    )
