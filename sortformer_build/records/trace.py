"""Reference traces (`sortformer_build.trace`): the index beside a trace's arrays, the figures of
one trace compared with another, the tolerances they are held to, and what a manifest records
of the trace delivered with its package."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from sortformer_build.geometry import Geometry
from sortformer_build.records.base import Record

TRACE_FORMAT: Final = "sortformer-trace"
TRACE_FORMAT_VERSION = 1
ARRAYS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".json"


def trace_file_names(name: str) -> tuple[str, str]:
    """(arrays, index) file names of the trace `name`: names like `Sortformer_v2.1` hold dots."""
    return f"{name}{ARRAYS_SUFFIX}", f"{name}{INDEX_SUFFIX}"


def chunk_name(index: int, name: str) -> str:
    return f"chunk/{index}/{name}"


def window_name(index: int, name: str) -> str:
    return f"window/{index}/{name}"


class TensorSpec(Record):
    dtype: str  # safetensors dtype name: F32, F16, I32, BOOL
    shape: tuple[int | None, ...]  # None: this dimension differs between chunks


class ChunkEntry(Record):
    index: int
    mel_start: int  # the recording's mel frame at which the `chunk` input starts (left context included)
    mel_frames: int  # mel frames of the recording in `chunk`; the rest is zero padding
    left_context: int  # output frames of left context the state update leaves out of the chunk
    right_context: int
    tensors: tuple[str, ...]  # names held for this chunk: `chunk/<index>/<name>` in the arrays


class WindowEntry(Record):
    index: int
    mel_start: int  # the recording's mel frame at which the window starts
    mel_frames: int  # mel frames of the recording in it; the rest is zero padding
    tensors: tuple[str, ...]  # `window/<index>/<name>` in the arrays


class RecordingFacts(Record):
    name: str
    sha256: str  # of the audio file as given
    sample_rate: int  # of the audio the features were computed from
    samples: int


class FeatureFacts(Record):
    """NeMo's preprocessor as it ran (`FilterbankFeatures`): deterministic, since it adds
    dither only in training mode."""

    n_mels: int
    n_fft: int
    win_length: int  # samples
    hop_length: int  # samples
    window: str
    normalize: str
    preemph: float | None
    mag_power: float
    log_zero_guard_value: float
    dither: float  # what was added: 0
    training_dither: float  # what the checkpoint adds in training mode only
    frames: int


class Segment(Record):
    start: float  # seconds
    end: float
    speaker: str


class ArraysFile(Record):
    file: str  # beside the index
    bytes: int
    sha256: str


class TraceHeader(Record):
    """What a trace is of, and who made it."""

    format: Literal["sortformer-trace"] = TRACE_FORMAT
    format_version: int = TRACE_FORMAT_VERSION
    kind: str  # the model kind (`kinds.KINDS`): streaming (chunks) or offline (windows)
    name: str  # the model's file name, e.g. Sortformer_v2.1
    producer: str  # what computed the outputs: nemo, executor-float16, a host runtime
    geometry: Geometry  # the variant's geometry fields
    checkpoint_sha256: str
    package_sha256: str | None = None  # the package's content digest; NeMo's own trace has none
    tools: dict[str, str] = Field(default_factory=dict)
    recording: RecordingFacts
    features: FeatureFacts | None = None
    postprocessing: dict[str, float] | None = None  # NeMo's PostProcessingParams in force
    segments: tuple[Segment, ...] | None = None
    rttm: str | None = None  # NeMo's RTTM writer's output for the segments


class TraceIndex(TraceHeader):
    """The header, and what the arrays file holds."""

    arrays: ArraysFile
    # Whole-recording tensors, stored under their own name.
    tensors: dict[str, TensorSpec] = Field(default_factory=dict)
    chunk_tensors: dict[str, TensorSpec] = Field(default_factory=dict)
    window_tensors: dict[str, TensorSpec] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)  # name -> the stored name holding the same content
    chunks: tuple[ChunkEntry, ...] = ()
    windows: tuple[WindowEntry, ...] = ()

    def header(self) -> TraceHeader:
        return TraceHeader(**{name: getattr(self, name) for name in TraceHeader.model_fields})

    def names(self) -> list[str]:
        """Every tensor name the trace holds, stored or aliased."""
        names = list(self.tensors)
        names += [chunk_name(entry.index, name) for entry in self.chunks for name in entry.tensors]
        names += [window_name(entry.index, name) for entry in self.windows for name in entry.tensors]
        return names


class Tolerance(Record):
    """A difference is within tolerance when max |candidate - reference| over the valid frames
    is at most atol + rtol x max |reference| over the same frames. Speaker-cache frames are
    compared as a set, and up to `unmatched` of them (a share) may have no counterpart within
    that bound."""

    atol: float = 0.0
    rtol: float = 0.0
    unmatched: float = 0.0


class Tolerances(Record):
    tensors: dict[str, Tolerance]

    def of(self, name: str) -> Tolerance:
        return self.tensors.get(name, Tolerance())

    def merged(self, overrides: Tolerances) -> Tolerances:
        return Tolerances(tensors={**self.tensors, **overrides.tensors})


class TensorDifference(Record):
    """One tensor of the candidate against the reference."""

    tensor: str  # its name without the chunk (window) index
    unit: str  # what `first_at` counts: chunk, window, sample, mel frame, output frame
    compared: int  # chunks (windows) compared; 1 for a whole-recording tensor
    max_error: float  # max |difference| over everything compared (set-compared frames: matched ones)
    max_unmatched: float | None = None  # set-compared frames: the largest share without a counterpart
    tolerance: Tolerance
    first_at: int | None = None  # where it first leaves its tolerance; None: it never does
    chunk: int | None = None  # the chunk (window) `first_at` falls in
    error: float | None = None  # max |difference| there; None: the shapes differ
    bound: float | None = None  # what the tolerance allowed there
    unmatched: float | None = None  # the share of set-compared frames without a counterpart there
    note: str | None = None  # e.g. the shapes, when they differ

    @property
    def parted(self) -> bool:
        return self.first_at is not None

    def excess(self) -> str:
        """By how much it left its tolerance, in words."""
        if self.error is None:
            return self.note or "shapes differ"
        if self.unmatched is not None and self.unmatched > self.tolerance.unmatched:
            return (
                f"{self.unmatched:.1%} of the cache's frames unmatched within {self.bound:.3g} "
                f"(> {self.tolerance.unmatched:.0%})"
            )
        text = f"error {self.error:.3g} > {self.bound:.3g}"
        return f"{text}; {self.note}" if self.note else text


class TraceComparison(Record):
    """A candidate trace against a reference (`trace.compare.compare_traces`): the figures a
    manifest records for the package's own trace against NeMo's."""

    reference: str  # producer of each trace
    candidate: str
    unit: str  # chunk or window
    reference_count: int  # chunks (windows) in each trace
    candidate_count: int
    compared_count: int
    tensors: tuple[TensorDifference, ...]  # in data-flow order
    not_compared: tuple[str, ...]  # tensors of the reference the candidate lacks
    first_chunk: int | None  # the first chunk (window) where any tensor parts; None: none does
    first_tensor: str | None

    @property
    def parted(self) -> bool:
        return self.first_tensor is not None

    def first(self) -> TensorDifference | None:
        return next((d for d in self.tensors if d.tensor == self.first_tensor), None)

    def summary(self) -> str:
        """One line for a log or a manifest step."""
        compared = f"{self.compared_count} {self.unit}s, {len(self.tensors)} tensors"
        first = self.first()
        if first is None:
            return f"{self.candidate} follows {self.reference} within tolerance over {compared}"
        return (
            f"{self.candidate} parts from {self.reference} at {self.unit} {self.first_chunk}, first in "
            f"{first.tensor} ({first.excess()}; {compared})"
        )


class DeliveredTrace(Record):
    """NeMo's trace delivered with a package (every compression of one model shares it): its
    files relative to the output folder, and the package's own trace compared with it."""

    index: str  # `traces/<file name>.json`
    arrays: str  # `traces/<file name>.safetensors`
    arrays_sha256: str
    bytes: int  # of the arrays
    recording: str
    comparison: TraceComparison | None = None  # None: the package's trace was not made
