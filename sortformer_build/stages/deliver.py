"""The deliver stage: the verified package (and compiled model, and RTTMs) renamed into the output
folder, NeMo's reference trace copied beside the precision folders, then the manifest that vouches
for them, under a lock so two jobs writing one artifact leave one consistent pair. What is replaced
goes through the job's staging folder, so a job killed here leaves nothing beside the artifacts but
that folder, which the next job removes. (Publishing a
release to the Hugging Face Hub is `release.hub`.)"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from sortformer_build import faults
from sortformer_build.config import BuildConfig
from sortformer_build.coreml.package import package_digest, package_size
from sortformer_build.kinds import kind_of
from sortformer_build.records.manifest import (
    ArtifactRecord,
    CheckpointRecord,
    CompressionRecord,
    Manifest,
    VariantRecord,
    Verification,
)
from sortformer_build.records.trace import DeliveredTrace, TraceComparison
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.base import Job, UncachedStage
from sortformer_build.stages.slots import (
    CHECKPOINT,
    DEVICE_REPORT,
    EVALUATION,
    EVALUATION_DIR,
    JOB_DIGEST,
    NEMO_TRACE,
    ON_DEVICE,
    PACKAGE,
    PARITY,
    PROGRAMS,
    RECIPE,
    TRACE_COMPARISON,
)
from sortformer_build.store import atomic

if TYPE_CHECKING:
    from sortformer_build.stages.trace import NemoTrace


class DeliverStage(UncachedStage):
    name = "deliver"
    reads = (JOB_DIGEST, CHECKPOINT, PROGRAMS, PACKAGE)
    reads_if_present = (
        PARITY,
        ON_DEVICE,
        DEVICE_REPORT,
        EVALUATION,
        EVALUATION_DIR,
        NEMO_TRACE,
        TRACE_COMPARISON,
        RECIPE,
    )

    def description(self, config: BuildConfig) -> str:
        return f"Delivering into {config.artifact_dir}"

    def execute(self, job: Job) -> None:
        paths = ArtifactPaths.of(job.config)
        staged = ArtifactPaths.beside(job.get(PACKAGE).path)
        with atomic.lock(paths.folder / paths.name):
            with self.step(job) as step:
                content = package_digest(staged.package)
                for source, final in (
                    (staged.package, paths.package),
                    (staged.compiled, paths.compiled),
                    (staged.probabilities, paths.probabilities),
                    (job.find(EVALUATION_DIR), paths.evaluations),
                ):
                    if source is not None and source.exists():
                        atomic.replace(source, final, job.staging)
                    elif final != paths.package:  # an earlier build's: not this manifest's
                        atomic.retire(final, job.staging)
                    if final == paths.package:
                        faults.point("deliver.between-files", paths.folder)
                step.detail = str(paths.package)
                trace = job.find(NEMO_TRACE)
                delivered = None if trace is None else deliver_trace(trace, paths, job.find(TRACE_COMPARISON))
            faults.point("deliver.before-manifest", paths.folder)
            # The manifest names this step too: written last, it is what says "done".
            manifest_of(job, content, delivered).write(paths.manifest, job.staging)
        # Remember the digest for the published files: the next warm check is free.
        package_digest(paths.package, job.config.cache_layout.package_digests, known=content)


def deliver_trace(
    trace: NemoTrace, paths: ArtifactPaths, comparison: TraceComparison | None
) -> DeliveredTrace:
    """NeMo's trace copied from its cache entry into the output folder's `traces/`, arrays first:
    a reader checks the arrays against the index's sha256."""
    facts, destination = trace.facts, paths.traces
    with atomic.lock(destination / facts.index):
        for name in (facts.arrays, facts.index):
            source, final = trace.folder / name, destination / name
            # Every compression of a model delivers the same trace.
            if not final.is_file() or final.read_bytes() != source.read_bytes():
                with atomic.staged(final) as temporary:
                    shutil.copyfile(source, temporary)
    return DeliveredTrace(
        index=f"{destination.name}/{facts.index}",
        arrays=f"{destination.name}/{facts.arrays}",
        arrays_sha256=facts.arrays_sha256,
        bytes=facts.bytes,
        recording=facts.recording,
        comparison=comparison,
    )


def manifest_of(job: Job, content_sha256: str, trace: DeliveredTrace | None = None) -> Manifest:
    config = job.config
    checkpoint = job.get(CHECKPOINT)
    paths = ArtifactPaths.of(config)
    compression, variant, geometry = config.compression, config.variant, config.variant.geometry
    evaluation = job.find(EVALUATION)
    return Manifest(
        artifact=ArtifactRecord(
            file=paths.package.name,
            content_sha256=content_sha256,
            bytes=package_size(paths.package),
            release_path=paths.release_path,
        ),
        variant=VariantRecord(
            name=variant.name, version=variant.version, file_name=variant.file_name, released=variant.released
        ),
        compression=CompressionRecord(
            name=compression.name,
            folder=compression.folder,
            nbits=compression.nbits,
            release=compression.release,
            recipe=job.find(RECIPE),
        ),
        deployment_target=config.deployment_target,
        geometry=geometry,
        shapes=kind_of(geometry).shapes(geometry),
        checkpoint=CheckpointRecord(
            source=checkpoint.source,
            origin=checkpoint.origin,
            file=str(checkpoint.path),
            sha256=checkpoint.sha256,
        ),
        parameters=job.get(PROGRAMS).parameters,
        versions=job.versions,
        code=job.get(JOB_DIGEST).code,
        steps=list(job.steps.steps),
        seconds=dict(job.steps.timings),
        job_digest=job.get(JOB_DIGEST).digest,
        config=config,
        verification=Verification(
            parity=job.find(PARITY), on_device=job.find(ON_DEVICE), device=job.find(DEVICE_REPORT)
        ),
        evaluations=[] if evaluation is None else [evaluation],
        trace=trace,
    )
