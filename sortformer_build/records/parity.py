"""What the parity checks measured: a package's speaker probabilities against NeMo's, per model
call (a streaming step, or an offline window) and over a whole stream. Figures only; the gates
judge them. A figure that was not measured is None, never 0."""

from __future__ import annotations

from enum import StrEnum

from sortformer_build.records.base import Record


class Agreement(Record):
    """How closely a package's probabilities follow a reference over valid frames."""

    max_abs_prob_error: float
    mean_abs_prob_error: float
    decision_agreement: float  # share of (frame, speaker) pairs on the same side of 0.5
    argmax_agreement: float  # share of frames whose most active speaker is the same
    prob_spread: float  # std of the reference probabilities: the scale errors are judged on
    frames: int


class CallFigures(Record):
    """One package against a reference, call by call over the reference cases."""

    cases: list[Agreement]
    overall: Agreement
    # The chunk embeddings and their lengths; None for a model that returns neither (offline).
    max_abs_emb_error: float | None = None
    emb_error_ratio: float | None = None  # max error over the reference embeddings' largest magnitude
    mean_abs_emb_error: float | None = None
    lengths_equal: bool | None = None


class StreamFigures(Record):
    """A whole stream through NeMo's state update: probabilities and the final buffers."""

    chunks: int
    frames: int
    agreement: Agreement
    spkcache_frames: tuple[int, int]  # (the package's, the reference's)
    spkcache_max_abs_error: float | None  # None when the caches differ in length
    fifo_frames: tuple[int, int]


class TraceSource(StrEnum):
    """What a kept probability trace runs over."""

    stream = "stream"  # the synthetic conversation, streamed through NeMo's state update
    windows = "windows"  # the offline reference windows, one after the other


class TraceStretch(Record):
    """A run of consecutive output frames of a trace: the stream, or one window."""

    name: str
    frames: int


class ProbabilityTrace(Record):
    """The package's and NeMo's speaker probabilities behind the figures, kept beside the package
    (see `verify.probabilities`) so a report can draw them without running a model."""

    file: str  # in the manifest's folder
    source: TraceSource
    stretches: list[TraceStretch]  # in order; their frames add up to the trace's
    speakers: int

    @property
    def frames(self) -> int:
        return sum(stretch.frames for stretch in self.stretches)


class ParityFigures(Record):
    """Everything one parity check measured for one package."""

    precision: str  # the executor mode, or "core_ml" for predictions by Core ML itself
    per_call_vs_nemo: CallFigures
    streaming_vs_nemo: StreamFigures | None = None  # None: the model does not stream (offline)
    per_call_vs_fp16: CallFigures | None = None  # None: the package is the fp16 one
    trace: ProbabilityTrace | None = None  # None: not kept (Core ML's own predictions)

    def summary(self) -> str:
        """One line for the log, the step's detail and the release matrix."""
        calls = self.per_call_vs_nemo.overall
        text = (
            f"per call: max |dp| {calls.max_abs_prob_error:.1e}, decisions {calls.decision_agreement:.2%}, "
            f"argmax {calls.argmax_agreement:.2%}"
        )
        if self.streaming_vs_nemo is not None:
            stream = self.streaming_vs_nemo
            text += (
                f"; streaming {stream.chunks} chunks: max |dp| {stream.agreement.max_abs_prob_error:.1e}, "
                f"decisions {stream.agreement.decision_agreement:.2%}"
            )
        if self.per_call_vs_fp16 is not None:
            twin = self.per_call_vs_fp16.overall
            text += (
                f"; vs fp16 twin: decisions {twin.decision_agreement:.2%}, argmax {twin.argmax_agreement:.2%}"
            )
        return text
