"""The trace stages (with `trace=<recording>`): NeMo's own loop on the recording, recorded chunk
by chunk (or window by window) for host runtimes to test against, cached per model (every
compression shares it); and the package's own loop run by the executor, recorded the same way and
compared with it. What records and compares lives in `trace`; these declare when each runs, what
it caches and where the delivered trace goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig, TraceConfig, TraceRecording
from sortformer_build.records.facts import TraceFacts
from sortformer_build.records.trace import TraceComparison, trace_file_names
from sortformer_build.stages.base import CachedStage, Job, KeyFacts
from sortformer_build.stages.palettize import PalettizeStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.slots import CHECKPOINT, NEMO, NEMO_TRACE, PACKAGE, TRACE_COMPARISON


@dataclass(frozen=True)
class NemoTrace:
    """NeMo's trace as its cache entry holds it."""

    folder: Path
    facts: TraceFacts

    @property
    def index(self) -> Path:
        return self.folder / self.facts.index


def _settings(config: BuildConfig) -> TraceConfig:
    assert config.trace is not None, "trace stages apply to tracing jobs only"
    return config.trace


def recording_path(settings: TraceConfig) -> Path:
    if settings.recording is TraceRecording.file:
        assert settings.path is not None, "validated with the config"
        return Path(settings.path)
    from sortformer_build.evaluate.conversation import DATA_DIR, NAME

    return DATA_DIR / f"{NAME}.flac"


def _files(config: BuildConfig) -> tuple[str, str]:
    """The trace's arrays and index file names: the model's file name, as the release has it."""
    return trace_file_names(config.variant.file_name)


class NemoTraceStage(CachedStage[TraceFacts]):
    """NeMo's trace: keyed by the weights, geometry and recording, so an fp16 package and its
    palettized twins share one entry (it is NeMo's, not theirs)."""

    name = "nemo-trace"
    facts_type = TraceFacts
    reads = (CHECKPOINT, NEMO)
    provides = (NEMO_TRACE,)

    def applies(self, config: BuildConfig) -> bool:
        return config.trace is not None

    def description(self, config: BuildConfig) -> str:
        return f"Recording NeMo's loop on {recording_path(_settings(config)).name}, chunk by chunk"

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return _files(config)

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        from sortformer_build.store.digests import file_sha256

        config = facts.config
        recording = recording_path(_settings(config))
        return {
            "checkpoint": facts.checkpoint_sha256,
            "geometry": config.variant.geometry.metadata(),
            "name": config.variant.file_name,
            "recording": file_sha256(recording, config.cache_layout.file_digests),
        }

    def build(self, job: Job, folder: Path) -> TraceFacts:
        from sortformer_build.config import PostProcessingConfig
        from sortformer_build.evaluate.segments import resolve_postprocessing
        from sortformer_build.trace.record import nemo_trace

        config = job.config
        index = nemo_trace(
            job.get(NEMO).get(),
            config.variant.geometry,
            recording_path(_settings(config)),
            folder,
            config.variant.file_name,
            job.get(CHECKPOINT).sha256,
            resolve_postprocessing(PostProcessingConfig()),  # NeMo's defaults
        )
        arrays, index_file = _files(config)
        return TraceFacts(
            index=index_file,
            arrays=arrays,
            arrays_sha256=index.arrays.sha256,
            bytes=index.arrays.bytes,
            entries=len(index.chunks) + len(index.windows),
            recording=index.recording.name,
        )

    def detail(self, facts: TraceFacts) -> str:
        return f"{facts.entries} calls, {facts.bytes / 1e6:.1f} MB"

    def accept(self, job: Job, folder: Path, facts: TraceFacts) -> None:
        job.put(NEMO_TRACE, NemoTrace(folder, facts))


class PackageTraceStage(CachedStage[TraceComparison]):
    """The package's own trace (the executor in place of NeMo's model, NeMo's state update
    around it), compared with NeMo's: keyed, like the diarization, by the cache entries the
    package is assembled from."""

    name = "package-trace"
    facts_type = TraceComparison
    upstream = (ProgramsStage.name, PalettizeStage.name, NemoTraceStage.name)
    reads = (NEMO_TRACE, PACKAGE)
    provides = (TRACE_COMPARISON,)

    def applies(self, config: BuildConfig) -> bool:
        return config.trace is not None

    def description(self, config: BuildConfig) -> str:
        return (
            f"Recording the package's loop ({_settings(config).precision.value}) and comparing it with NeMo's"
        )

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        from sortformer_build.trace.record import COMPARISON_FILE

        return (*_files(config), COMPARISON_FILE)

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        return {
            "programs": facts.entry(ProgramsStage.name),
            "compressed": facts.entry(PalettizeStage.name),
            "reference": facts.entry(NemoTraceStage.name),
            "precision": _settings(facts.config).precision.value,
        }

    def build(self, job: Job, folder: Path) -> TraceComparison:
        from sortformer_build.coreml.package import package_digest
        from sortformer_build.trace.record import package_against_nemo

        package = job.get(PACKAGE).path
        precision = _settings(job.config).precision
        return package_against_nemo(
            job.get(NEMO_TRACE).index, package, precision, folder, package_digest(package)
        )

    def detail(self, facts: TraceComparison) -> str:
        return facts.summary()

    def accept(self, job: Job, folder: Path, facts: TraceComparison) -> None:
        job.put(TRACE_COMPARISON, facts)
