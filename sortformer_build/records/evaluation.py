"""What an evaluation found: diarization error rates of an artifact on one dataset, against the
ground truth, against NeMo's own diarization and against its fp16 twin; and the per-recording
runs a diarization keeps in the build cache."""

from __future__ import annotations

from enum import StrEnum

from sortformer_build.records.base import Record

# A stretch of a recording, in seconds.
Region = tuple[float, float]


class RttmSet(StrEnum):
    """The RTTM folders of an evaluation delivered beside its package (`<dataset>/<set>/`)."""

    truth = "truth"  # the dataset's ground truth, where it has one
    nemo = "nemo"  # NeMo's own diarization
    artifact = "artifact"  # the package's
    fp16 = "fp16"  # a compressed package's fp16 twin's


class DerRates(Record):
    """Diarization error rate and its parts, as fractions of the scored reference speech."""

    der: float
    missed: float
    false_alarm: float
    confusion: float


class Scoring(Record):
    """How DER was scored: pyannote.metrics' collar (total width around each reference boundary)
    and whether overlapped speech counts."""

    collar: float
    scored_overlap: bool

    def describe(self) -> str:
        return f"collar {self.collar:g} s, overlap {'scored' if self.scored_overlap else 'ignored'}"


class RecordingDer(Record):
    recording: str
    vs_truth: DerRates | None  # None: the recording has no ground truth
    vs_nemo: DerRates
    regions: list[Region] | None = None  # where it was scored; None: not recorded


class DatasetEvaluation(Record):
    """One dataset diarized by the artifact and scored; one per dataset in a manifest."""

    dataset: str  # its name: a manifest keeps one evaluation per dataset name
    dataset_sha256: str  # of every file it reads (see `evaluate.datasets.dataset_digest`)
    # Of everything the evaluation depends on beyond the package: the dataset's content, the
    # evaluation settings and the code of the evaluation stages (see `job.runner`).
    digest: str
    backend: str  # what ran the artifact: `executor-float16`, `coreml`
    scoring: Scoring
    der_vs_truth: DerRates | None  # overall; None when the dataset has no ground truth
    der_vs_nemo: DerRates
    # DER minus the fp16 twin's, in percentage points (on the ground truth, else against NeMo);
    # None for an fp16 artifact.
    der_change_vs_fp16_pp: float | None
    recordings: list[RecordingDer]
    audio_seconds: float
    real_time_factor: float  # the artifact's diarization: processing seconds per audio second
    nemo_real_time_factor: float
    rttm_dir: str  # the artifact's and NeMo's RTTMs: `<file name>.evaluation/<dataset>/`

    def summary(self) -> str:
        """One line: the three comparisons."""
        parts = []
        if self.der_vs_truth is not None:
            parts.append(f"DER {self.der_vs_truth.der:.2%} vs ground truth ({self.dataset})")
        parts.append(f"{self.der_vs_nemo.der:.2%} vs NeMo")
        if self.der_change_vs_fp16_pp is not None:
            parts.append(f"{self.der_change_vs_fp16_pp:+.2f} pp vs fp16")
        return ", ".join(parts)


class RecordingRun(Record):
    """One recording diarized: how long it was, how long it took, where it is scored."""

    name: str
    audio_seconds: float
    seconds: float  # processing time, audio loading to RTTM (by a worker process: its share of it)
    regions: list[Region]
