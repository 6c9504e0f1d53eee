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
from typing import Any

from sortformer_build.config import BuildConfig, EvaluateConfig, EvaluationBackend
from sortformer_build.coreml import macos
from sortformer_build.evaluate.diarize import Diarization
from sortformer_build.evaluate.scoring import Comparison, ErrorBreakdown
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.assemble import fp16_twin
from sortformer_build.stages.base import CachedStage, JobContext, KeyFacts, Stage, need
from sortformer_build.stages.manifest import AGAINST_NEMO, AGAINST_TRUTH, DerRecord, EvaluationRecord
from sortformer_build.stages.palettize import PalettizeStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.steps import SCORED
from sortformer_build.store.cache import Entry

RTTM_FOLDER = "rttm"

log = logging.getLogger("sortformer_build")


def _settings(config: BuildConfig) -> EvaluateConfig:
    return need(config.evaluate, "evaluation settings")


def _unavailable(config: BuildConfig) -> str | None:
    """Why the package cannot be run here to diarize, or None."""
    if _settings(config).backend is EvaluationBackend.coreml and not macos.available():
        return macos.NEEDS_MACOS
    return None


class _DiarizationStage(CachedStage):
    """A dataset diarized by one backend: one RTTM per recording, in the entry's `rttm/`."""

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
            "versions": facts.versions,
        }

    def _diarize(self, job: JobContext, backend: Any, folder: Path) -> dict[str, Any]:
        from sortformer_build.evaluate.diarize import diarize
        from sortformer_build.evaluate.segments import resolve_postprocessing
        from sortformer_build.verify.reference import mel_features

        features = partial(mel_features, job.nemo())  # the checkpoint's own preprocessor
        dataset = need(job.dataset, "evaluation dataset").get().dataset
        postprocessing = resolve_postprocessing(_settings(job.config).postprocessing)
        return diarize(backend, dataset, features, postprocessing, folder / RTTM_FOLDER).facts()

    def detail(self, facts: dict[str, Any]) -> str:
        diarization = Diarization.from_facts(Path(), facts)
        return (
            f"{diarization.audio_seconds:.1f} s of audio, real-time factor {diarization.real_time_factor:.2f}"
        )

    @staticmethod
    def _taken(entry: Entry) -> Diarization:
        return Diarization.from_facts(entry.path / RTTM_FOLDER, entry.facts)


class NemoDiarizationStage(_DiarizationStage):
    name = "nemo-diarization"

    def description(self, config: BuildConfig) -> str:
        return f"Diarizing the {_settings(config).dataset.value} dataset with NeMo itself"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Weights and geometry: every compression of a model shares it."""
        return {
            "checkpoint": facts.checkpoint_sha256,
            "geometry": facts.config.variant.geometry.metadata(),
            **self._common_key(facts),
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        from sortformer_build.evaluate.backends import nemo_backend

        return self._diarize(job, nemo_backend(job.nemo(), job.config.variant.geometry), folder)

    def accept(self, job: JobContext, entry: Entry) -> None:
        job.nemo_diarization = self._taken(entry)


class DiarizationStage(_DiarizationStage):
    """The package's diarization, keyed by the cache entries it is assembled from (equal
    entries, equal package content), so an fp16 package and a compressed job's fp16 twin share
    one entry."""

    name = "diarization"

    def skip_reason(self, config: BuildConfig) -> str | None:
        return _unavailable(config)

    def description(self, config: BuildConfig) -> str:
        return f"Diarizing the {_settings(config).dataset.value} dataset with {self._what()}"

    def _what(self) -> str:
        return "the package"

    def _head(self, facts: KeyFacts) -> str | None:
        """The compressed program's entry; None: the conversion's own fp16 program."""
        return facts.entries.get(PalettizeStage.name)

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        settings = _settings(facts.config)
        return {
            "programs": facts.entries[ProgramsStage.name],
            "compressed": self._head(facts),
            "variant": facts.config.variant.geometry.metadata(),
            "backend": settings.backend.value,
            "precision": settings.precision.value,
            **self._common_key(facts),
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        return self._run(job, need(job.package, "staged package"), folder)

    def _run(self, job: JobContext, package: Path, folder: Path) -> dict[str, Any]:
        from sortformer_build.evaluate.backends import package_backend

        settings = _settings(job.config)
        d_model = need(job.programs, "converted programs").d_model
        geometry = job.config.variant.geometry
        backend = package_backend(package, geometry, d_model, settings.backend, settings.precision)
        return self._diarize(job, backend, folder)

    def accept(self, job: JobContext, entry: Entry) -> None:
        job.diarization = self._taken(entry)


class TwinDiarizationStage(DiarizationStage):
    """A compressed package's fp16 twin, diarized (or found where its fp16 job left it)."""

    name = "fp16-diarization"

    @property
    def cache_name(self) -> str:
        return DiarizationStage.name

    def applies(self, config: BuildConfig) -> bool:
        return config.evaluate is not None and not config.compression.is_fp16

    def _what(self) -> str:
        return "the fp16 twin"

    def _head(self, facts: KeyFacts) -> str | None:
        return None

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        with fp16_twin(job, folder) as twin:
            return self._run(job, twin, folder)

    def accept(self, job: JobContext, entry: Entry) -> None:
        job.twin_diarization = self._taken(entry)


class EvaluationStage(Stage):
    """DER of the package's diarization against the ground truth, NeMo and the fp16 twin; its
    RTTMs staged for publishing beside the package."""

    name = "evaluation"

    def applies(self, config: BuildConfig) -> bool:
        return config.evaluate is not None

    def description(self, config: BuildConfig) -> str:
        return "Scoring the diarization (DER against the ground truth, NeMo and the fp16 twin)"

    def execute(self, job: JobContext) -> None:
        with self.step(job) as step:
            if job.diarization is None:
                job.evaluation = EvaluationRecord(skipped=_unavailable(job.config))
            else:
                job.evaluation = score(job)
                job.evaluation_dir = _stage_rttms(job)
            step.status, step.detail = SCORED, job.evaluation.summary()
        log_table(job.evaluation)


def score(job: JobContext) -> EvaluationRecord:
    from sortformer_build.evaluate.scoring import compare

    settings = _settings(job.config)
    dataset = need(job.dataset, "evaluation dataset").get().dataset
    ours = need(job.diarization, "diarization")
    nemo = need(job.nemo_diarization, "NeMo's diarization")
    truth = {r.name: r.rttm for r in dataset.recordings if r.rttm is not None} if dataset.has_truth else None

    def against(hypothesis: Diarization, reference: dict[str, Path], name: str) -> Comparison:
        return compare(
            hypothesis.rttms, reference, settings.collar, settings.skip_overlap, hypothesis.regions, name
        )

    vs_truth = None if truth is None else against(ours, truth, AGAINST_TRUTH)
    vs_nemo = against(ours, nemo.rttms, AGAINST_NEMO)
    change = None
    if job.twin_diarization is not None:
        twin = job.twin_diarization
        base, twin_base = (
            (vs_truth, against(twin, truth, AGAINST_TRUTH))
            if truth is not None and vs_truth is not None
            else (vs_nemo, against(twin, nemo.rttms, AGAINST_NEMO))
        )
        change = round(100.0 * (base.overall.der - twin_base.overall.der), 4)
    overall = [record for record in (vs_truth,) if record is not None]
    return EvaluationRecord(
        der=[_record(dataset.name, comparison) for comparison in overall],
        vs_nemo=_record(dataset.name, vs_nemo),
        change_vs_fp16_pp=change,
        recordings=[
            _record(dataset.name, comparison, score.name, score.errors)
            for comparison in (*overall, vs_nemo)
            for score in comparison.recordings
        ],
        backend=ours.backend,
        audio_seconds=round(ours.audio_seconds, 3),
        real_time_factor=round(ours.real_time_factor, 4),
        nemo_real_time_factor=round(nemo.real_time_factor, 4),
        rttm_dir=str(ArtifactPaths.of(job.config).evaluation),
    )


def _record(
    dataset: str, comparison: Comparison, recording: str | None = None, errors: ErrorBreakdown | None = None
) -> DerRecord:
    errors = comparison.overall if errors is None else errors
    return DerRecord(
        dataset=dataset,
        against=comparison.against,
        collar=comparison.collar,
        scored_overlap=not comparison.skip_overlap,
        der=round(errors.der, 6),
        miss=round(errors.missed_rate, 6),
        false_alarm=round(errors.false_alarm_rate, 6),
        confusion=round(errors.confusion_rate, 6),
        recording=recording,
    )


def _stage_rttms(job: JobContext) -> Path:
    """The package's and NeMo's RTTMs, staged to be published beside the package."""
    staged = job.staging / ArtifactPaths.of(job.config).evaluation.name
    for name, diarization in (("artifact", job.diarization), ("nemo", job.nemo_diarization)):
        shutil.copytree(need(diarization, f"{name} diarization").folder, staged / name)
    return staged


def log_table(record: EvaluationRecord) -> None:
    """The DER table, per recording and overall, in the job's log (and console)."""
    if record.skipped:
        log.info("Evaluation skipped: %s", record.skipped)
        return
    overall = record.vs_nemo
    if overall is None:
        return
    scoring = f"collar {overall.collar:g} s, overlap {'scored' if overall.scored_overlap else 'skipped'}"
    log.info("DER of %s on %s (%s), rates of scored speech:", record.backend, overall.dataset, scoring)
    nemo = {row.recording: row for row in record.recordings if row.against == AGAINST_NEMO}
    truth = {row.recording: row for row in record.recordings if row.against == AGAINST_TRUTH}
    rows = [(str(name), truth.get(name), row) for name, row in nemo.items()]
    rows.append(("overall", record.der[0] if record.der else None, overall))
    log.info("  | recording | vs ground truth | missed | false alarm | confusion | vs NeMo |")
    for name, vs_truth, vs_nemo in rows:
        log.info("  | %s |", " | ".join((name, *_rates(vs_truth), f"{vs_nemo.der:.2%}")))
    if record.change_vs_fp16_pp is not None:
        log.info("  change against the fp16 twin: %+.2f percentage points", record.change_vs_fp16_pp)


def _rates(row: DerRecord | None) -> tuple[str, str, str, str]:
    if row is None:
        return ("no ground truth", "", "", "")
    values = (row.der, row.miss, row.false_alarm, row.confusion)
    return tuple(f"{value:.2%}" if value is not None else "" for value in values)  # type: ignore[return-value]
