"""The evaluation stages (with `evaluate=<dataset>`): the dataset diarized by NeMo, by the package
and, for a compressed package, by its fp16 twin, each cached; then DER against the ground truth,
against NeMo and against the twin. What diarizes and scores lives in `evaluate`; these declare
when each runs and what it caches."""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from sortformer_build import faults
from sortformer_build.config import BuildConfig, EvaluateConfig, EvaluationBackend
from sortformer_build.coreml import host
from sortformer_build.evaluate.diarize import Diarization
from sortformer_build.evaluate.scoring import Comparison, ErrorBreakdown
from sortformer_build.records.evaluation import DatasetEvaluation, DerRates, RecordingDer, RttmSet, Scoring
from sortformer_build.records.facts import DiarizationFacts
from sortformer_build.records.manifest import RANDOM_WEIGHT_SOURCES, Manifest
from sortformer_build.records.steps import Skip, StepStatus
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.assemble import StagedPackage, fp16_twin
from sortformer_build.stages.base import CachedStage, Job, KeyFacts, UncachedStage
from sortformer_build.stages.palettize import PalettizeStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.slots import (
    CHECKPOINT,
    DATASET,
    DIARIZATION,
    EVALUATION,
    EVALUATION_DIR,
    JOB_DIGEST,
    NEMO,
    NEMO_DIARIZATION,
    PACKAGE,
    PROGRAMS,
    TWIN_DIARIZATION,
    Slot,
)
from sortformer_build.store import atomic

RTTM_FOLDER = "rttm"

log = logging.getLogger("sortformer_build")


def _settings(config: BuildConfig) -> EvaluateConfig:
    assert config.evaluate is not None, "evaluation stages apply to evaluating jobs only"
    return config.evaluate


def _unavailable(config: BuildConfig) -> Skip | None:
    """Why the package cannot be run here to diarize, or None."""
    if _settings(config).backend is not EvaluationBackend.coreml:
        return None
    return host.for_target(config.deployment_target).skipped()


class _DiarizationStage(CachedStage[DiarizationFacts]):
    """A dataset diarized by one backend: one RTTM per recording, in the entry's `rttm/`."""

    facts_type = DiarizationFacts
    evaluates = True

    def applies(self, config: BuildConfig) -> bool:
        return config.evaluate is not None

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (RTTM_FOLDER,)

    def _common_key(self, facts: KeyFacts) -> dict[str, Any]:
        from sortformer_build.evaluate.segments import resolve_postprocessing

        settings = _settings(facts.config)
        return {
            "dataset": facts.dataset_sha256,
            "postprocessing": asdict(resolve_postprocessing(settings.postprocessing)),
        }

    def _diarize(self, job: Job, backend: Any, folder: Path) -> DiarizationFacts:
        from sortformer_build.evaluate.diarize import diarize
        from sortformer_build.evaluate.segments import resolve_postprocessing
        from sortformer_build.verify.reference import mel_features

        features = partial(mel_features, job.get(NEMO).get())  # the checkpoint's own preprocessor
        dataset = job.get(DATASET).dataset
        postprocessing = resolve_postprocessing(_settings(job.config).postprocessing)
        return diarize(backend, dataset, features, postprocessing, folder / RTTM_FOLDER).facts()

    def detail(self, facts: DiarizationFacts) -> str:
        diarization = Diarization.from_facts(Path(), facts)
        return (
            f"{diarization.audio_seconds:.1f} s of audio, real-time factor {diarization.real_time_factor:.2f}"
        )


class NemoDiarizationStage(_DiarizationStage):
    name = "nemo-diarization"
    reads = (NEMO, DATASET)
    provides = (NEMO_DIARIZATION,)

    def description(self, config: BuildConfig) -> str:
        return f"Diarizing the {_settings(config).dataset.value} dataset with NeMo itself"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Weights and geometry: every compression of a model shares it."""
        return {
            "checkpoint": facts.checkpoint_sha256,
            "geometry": facts.config.variant.geometry.metadata(),
            **self._common_key(facts),
        }

    def build(self, job: Job, folder: Path) -> DiarizationFacts:
        from sortformer_build.evaluate.backends import nemo_backend

        return self._diarize(job, nemo_backend(job.get(NEMO).get(), job.config.variant.geometry), folder)

    def accept(self, job: Job, folder: Path, facts: DiarizationFacts) -> None:
        job.put(NEMO_DIARIZATION, Diarization.from_facts(folder / RTTM_FOLDER, facts))


class DiarizationStage(_DiarizationStage):
    """The package's diarization, keyed by the cache entries it is assembled from (equal
    entries, equal package content), so an fp16 package and a compressed job's fp16 twin share
    one entry."""

    name = "diarization"
    upstream: ClassVar[tuple[str, ...]] = (ProgramsStage.name, PalettizeStage.name)
    reads: ClassVar[tuple[Slot[Any], ...]] = (NEMO, DATASET, PROGRAMS, PACKAGE)
    provides = (DIARIZATION,)

    def skip(self, config: BuildConfig) -> Skip | None:
        return _unavailable(config)

    def description(self, config: BuildConfig) -> str:
        return f"Diarizing the {_settings(config).dataset.value} dataset with {self._what()}"

    def _what(self) -> str:
        return "the package"

    def _head(self, facts: KeyFacts) -> str | None:
        """The compressed program's entry; None: the conversion's own fp16 program."""
        return facts.entry(PalettizeStage.name)

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        settings = _settings(facts.config)
        # Core ML's results depend on the OS and the chip that ran them.
        device = (
            host.current_facts().cache_identity() if settings.backend is EvaluationBackend.coreml else None
        )
        return {
            "programs": facts.entry(ProgramsStage.name),
            "compressed": self._head(facts),
            "variant": facts.config.variant.geometry.metadata(),
            "backend": settings.backend.value,
            "precision": settings.precision.value,
            "device": device,
            **self._common_key(facts),
        }

    def build(self, job: Job, folder: Path) -> DiarizationFacts:
        return self._run(job, job.get(PACKAGE).path, folder)

    def _run(self, job: Job, package: Path, folder: Path) -> DiarizationFacts:
        from sortformer_build.evaluate.backends import package_backend

        settings = _settings(job.config)
        d_model = job.get(PROGRAMS).d_model
        geometry = job.config.variant.geometry
        backend = package_backend(
            package, geometry, d_model, settings.backend, settings.precision, job.config.deployment_target
        )
        return self._diarize(job, backend, folder)

    def accept(self, job: Job, folder: Path, facts: DiarizationFacts) -> None:
        job.put(DIARIZATION, Diarization.from_facts(folder / RTTM_FOLDER, facts))


class TwinDiarizationStage(DiarizationStage):
    """A compressed package's fp16 twin, diarized (or found where its fp16 job left it)."""

    name = "fp16-diarization"
    upstream = (ProgramsStage.name,)
    reads = (NEMO, DATASET, PROGRAMS)
    provides = (TWIN_DIARIZATION,)

    @property
    def cache_name(self) -> str:
        return DiarizationStage.name

    def applies(self, config: BuildConfig) -> bool:
        return config.evaluate is not None and not config.compression.is_fp16

    def _what(self) -> str:
        return "the fp16 twin"

    def _head(self, facts: KeyFacts) -> str | None:
        return None

    def build(self, job: Job, folder: Path) -> DiarizationFacts:
        with fp16_twin(job, folder) as twin:
            return self._run(job, twin, folder)

    def accept(self, job: Job, folder: Path, facts: DiarizationFacts) -> None:
        job.put(TWIN_DIARIZATION, Diarization.from_facts(folder / RTTM_FOLDER, facts))


class EvaluationStage(UncachedStage):
    """DER of the package's diarization against the ground truth, NeMo and the fp16 twin; its
    RTTMs staged for publishing beside the package."""

    name = "evaluation"
    evaluates = True
    reads = (JOB_DIGEST, CHECKPOINT, DATASET, DIARIZATION, NEMO_DIARIZATION)
    reads_if_present = (TWIN_DIARIZATION,)
    provides = (EVALUATION, EVALUATION_DIR)

    def applies(self, config: BuildConfig) -> bool:
        return config.evaluate is not None

    def skip(self, config: BuildConfig) -> Skip | None:
        return _unavailable(config)

    def description(self, config: BuildConfig) -> str:
        return "Scoring the diarization (DER against the ground truth, NeMo and the fp16 twin)"

    def execute(self, job: Job) -> None:
        with self.step(job) as step:
            evaluation = score(job)
            job.put(EVALUATION, evaluation)
            job.put(EVALUATION_DIR, _stage_rttms(job))
            step.status, step.detail = StepStatus.scored, evaluation.summary()
        log_table(evaluation, job.get(CHECKPOINT).source in RANDOM_WEIGHT_SOURCES)


AGAINST_TRUTH, AGAINST_NEMO = "ground truth", "nemo"


def score(job: Job) -> DatasetEvaluation:
    from sortformer_build.evaluate.scoring import compare

    settings = _settings(job.config)
    loaded = job.get(DATASET)
    dataset = loaded.dataset
    ours, nemo = job.get(DIARIZATION), job.get(NEMO_DIARIZATION)
    truth = {r.name: r.rttm for r in dataset.recordings if r.rttm is not None} if dataset.has_truth else None

    def against(hypothesis: Diarization, reference: dict[str, Path], name: str) -> Comparison:
        return compare(
            hypothesis.rttms, reference, settings.collar, settings.skip_overlap, hypothesis.regions, name
        )

    vs_truth = None if truth is None else against(ours, truth, AGAINST_TRUTH)
    vs_nemo = against(ours, nemo.rttms, AGAINST_NEMO)
    change = None
    twin = job.find(TWIN_DIARIZATION)
    if twin is not None:
        base, twin_base = (
            (vs_truth, against(twin, truth, AGAINST_TRUTH))
            if truth is not None and vs_truth is not None
            else (vs_nemo, against(twin, nemo.rttms, AGAINST_NEMO))
        )
        change = round(100.0 * (base.overall.der - twin_base.overall.der), 4)
    by_truth = {} if vs_truth is None else {score.name: score.errors for score in vs_truth.recordings}
    digest = job.get(JOB_DIGEST).evaluation
    assert digest is not None, "an evaluating job's digest covers its evaluation"
    return DatasetEvaluation(
        dataset=dataset.name,
        dataset_sha256=loaded.sha256,
        digest=digest,
        backend=ours.backend,
        scoring=Scoring(collar=settings.collar, scored_overlap=not settings.skip_overlap),
        der_vs_truth=None if vs_truth is None else _rates(vs_truth.overall),
        der_vs_nemo=_rates(vs_nemo.overall),
        der_change_vs_fp16_pp=change,
        recordings=[
            RecordingDer(
                recording=score.name,
                vs_truth=_rates(by_truth[score.name]) if score.name in by_truth else None,
                vs_nemo=_rates(score.errors),
                regions=list(ours.regions[score.name]),
            )
            for score in vs_nemo.recordings
        ],
        audio_seconds=round(ours.audio_seconds, 3),
        real_time_factor=round(ours.real_time_factor, 4),
        nemo_real_time_factor=round(nemo.real_time_factor, 4),
        rttm_dir=str(ArtifactPaths.of(job.config).evaluation(dataset.name)),
    )


def _rates(errors: ErrorBreakdown) -> DerRates:
    return DerRates(
        der=round(errors.der, 6),
        missed=round(errors.missed_rate, 6),
        false_alarm=round(errors.false_alarm_rate, 6),
        confusion=round(errors.confusion_rate, 6),
    )


def _stage_rttms(job: Job) -> Path:
    """The package's, NeMo's and (compressed) the fp16 twin's RTTMs, and the ground truth, staged
    to be delivered beside the package, so a report draws them without the cache or the dataset:
    the staged `<file name>.evaluation/` holds this dataset's folder."""
    staged = ArtifactPaths.of(job.config).staged(job.staging)
    dataset = job.get(DATASET).dataset
    folder = staged.evaluation(dataset.name)
    for name, diarization in (
        (RttmSet.artifact, job.get(DIARIZATION)),
        (RttmSet.nemo, job.get(NEMO_DIARIZATION)),
        (RttmSet.fp16, job.find(TWIN_DIARIZATION)),
    ):
        if diarization is not None:
            shutil.copytree(diarization.folder, folder / name)
    for recording in dataset.recordings:
        if recording.rttm is not None:
            (folder / RttmSet.truth).mkdir(exist_ok=True)
            shutil.copyfile(recording.rttm, folder / RttmSet.truth / f"{recording.name}.rttm")
    return staged.evaluations


class PublishedPackageStage(UncachedStage):
    """Evaluating a delivered, up-to-date package on another dataset: the package is the one in
    the output folder, as it is (never rebuilt, never moved)."""

    name = "delivered-package"
    evaluates = True
    provides = (PACKAGE,)

    def description(self, config: BuildConfig) -> str:
        return "Taking the delivered package, unchanged"

    def execute(self, job: Job) -> None:
        package = ArtifactPaths.of(job.config).package
        with self.step(job) as step:
            step.status, step.detail = StepStatus.cached, str(package)
        job.put(PACKAGE, StagedPackage(package, job.config.verify.precision))


class DeliverEvaluationStage(UncachedStage):
    """The new dataset's RTTMs into place beside the package, and its evaluation added to the
    manifest (one per dataset: a dataset evaluated again replaces its entry); the package is not
    touched."""

    name = "deliver-evaluation"
    evaluates = True
    reads = (EVALUATION, EVALUATION_DIR)

    def description(self, config: BuildConfig) -> str:
        return f"Adding the evaluation to the manifest in {config.artifact_dir}"

    def execute(self, job: Job) -> None:
        paths = ArtifactPaths.of(job.config)
        evaluation = job.get(EVALUATION)
        staged = job.get(EVALUATION_DIR) / evaluation.dataset
        with atomic.lock(paths.folder / paths.name):
            with self.step(job) as step:
                paths.evaluations.mkdir(exist_ok=True)
                atomic.replace(staged, paths.evaluation(evaluation.dataset), job.staging)
                step.detail = str(paths.evaluation(evaluation.dataset))
            faults.point("deliver-evaluation.before-manifest", paths.folder)
            manifest = Manifest.read(paths.manifest)
            evaluations = [kept for kept in manifest.evaluations if kept.dataset != evaluation.dataset]
            ran = {step.name: step for step in job.steps.steps if step.name in EVALUATION_STEPS}
            steps = [ran.pop(step.name, step) for step in manifest.steps]
            updated = manifest.model_copy(
                update={"evaluations": [*evaluations, evaluation], "steps": [*steps, *ran.values()]}
            )
            atomic.write_text(paths.manifest, updated.to_json(), job.staging)


# The steps of an evaluation, whose records an evaluation on another dataset replaces.
EVALUATION_STEPS = (
    NemoDiarizationStage.name,
    DiarizationStage.name,
    TwinDiarizationStage.name,
    EvaluationStage.name,
    DeliverEvaluationStage.name,
)


def log_table(evaluation: DatasetEvaluation, random_weights: bool) -> None:
    """The DER table, per recording and overall, in the job's log (and console)."""
    log.info(
        "DER of %s on %s (%s), rates of scored speech:",
        evaluation.backend,
        evaluation.dataset,
        evaluation.scoring.describe(),
    )
    if random_weights and evaluation.der_vs_truth is not None:
        log.info("  random weights: DER against the ground truth is not meaningful (against NeMo it is)")
    rows = [(row.recording, row.vs_truth, row.vs_nemo) for row in evaluation.recordings]
    rows.append(("overall", evaluation.der_vs_truth, evaluation.der_vs_nemo))
    log.info("  | recording | vs ground truth | missed | false alarm | confusion | vs NeMo |")
    for name, vs_truth, vs_nemo in rows:
        log.info("  | %s |", " | ".join((name, *_cells(vs_truth), f"{vs_nemo.der:.2%}")))
    if evaluation.der_change_vs_fp16_pp is not None:
        log.info("  change against the fp16 twin: %+.2f percentage points", evaluation.der_change_vs_fp16_pp)


def _cells(rates: DerRates | None) -> tuple[str, str, str, str]:
    if rates is None:
        return ("no ground truth", "", "", "")
    return tuple(f"{value:.2%}" for value in (rates.der, rates.missed, rates.false_alarm, rates.confusion))  # type: ignore[return-value]
