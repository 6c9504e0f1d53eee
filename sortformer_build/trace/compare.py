"""A candidate trace against the reference: chunks (windows) aligned by index, every tensor both
hold compared over the reference's valid frames, and for each the first chunk where it leaves its
tolerance. The candidate may hold only some tensors and some chunks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from sortformer_build import contract
from sortformer_build.geometry import SUBSAMPLING_FACTOR
from sortformer_build.kinds import kind_of
from sortformer_build.records.trace import (
    ChunkEntry,
    TensorDifference,
    Tolerance,
    Tolerances,
    TraceComparison,
    TraceIndex,
    WindowEntry,
    chunk_name,
    window_name,
)
from sortformer_build.trace import format as trace_format
from sortformer_build.trace.format import Trace, TraceError
from sortformer_build.trace.tolerances import DEFAULT_TOLERANCES, FLOW, FRAMING


@dataclass(frozen=True)
class Frames:
    """The frames of a tensor that are compared: along `axis`, as many as the reference's
    `valid` length tensors (same chunk) add up to. The leading `unordered` ones are compared as
    a set: each reference frame against the candidate's closest. With `history`, all of them
    are: each candidate frame against every frame the reference's stream has made so far."""

    axis: int
    valid: tuple[str, ...]
    unordered: tuple[str, ...] = ()
    history: bool = False


_CACHE = (contract.SPKCACHE_LENGTHS,)
_STATE_CACHE = (trace_format.STATE_SPKCACHE_LENGTHS,)
# Which frames the speaker cache keeps is decided by near-equal scores wherever a speaker's
# probabilities saturate: float16 noise then keeps another frame of the same speaker, and every
# later frame moves. The kept frames' probabilities still match as a set; their embeddings must
# be frames the stream made (a chunk's own frames, or the silence profile), whichever were kept.
CHUNK_FRAMES = {
    contract.CHUNK: Frames(1, (contract.CHUNK_LENGTHS,)),
    contract.SPKCACHE: Frames(1, _CACHE, history=True),
    contract.FIFO: Frames(1, (contract.FIFO_LENGTHS,)),
    contract.CHUNK_EMBS: Frames(1, (contract.CHUNK_EMB_LENGTHS,)),
    # The packed sequence the head predicts over: cache, FIFO, chunk, then padding.
    contract.SPEAKER_PREDS: Frames(1, (*_CACHE, contract.FIFO_LENGTHS, contract.CHUNK_EMB_LENGTHS), _CACHE),
    trace_format.STATE_SPKCACHE: Frames(1, _STATE_CACHE, history=True),
    trace_format.STATE_SPKCACHE_PREDS: Frames(1, _STATE_CACHE, _STATE_CACHE),
    trace_format.STATE_FIFO: Frames(1, (trace_format.STATE_FIFO_LENGTHS,)),
    trace_format.STATE_FIFO_PREDS: Frames(1, (trace_format.STATE_FIFO_LENGTHS,)),
}
CHUNK = "chunk"  # the unit of a trace with chunks (`ModelKind.trace_unit`); any other has windows
WINDOW_FRAMES = {contract.MEL: Frames(2, (contract.MEL_LENGTH,))}
# Whole-recording tensors: their time axis, and what one step along it is.
RECORDING_TIME = {
    trace_format.AUDIO: (0, "sample"),
    trace_format.MEL: (2, "mel frame"),
    trace_format.PREDS: (0, "output frame"),
}
SAMPLES_PER_MEL_FRAME = 160  # 10 ms at 16 kHz


def check_comparable(reference: TraceIndex, candidate: TraceIndex, names: tuple[str, str]) -> None:
    """TraceError unless both are traces of one model (kind, geometry, checkpoint) on one recording."""
    facts = (
        ("model kind", reference.kind, candidate.kind),
        ("geometry", reference.geometry, candidate.geometry),
        ("checkpoint sha256", reference.checkpoint_sha256, candidate.checkpoint_sha256),
        ("recording sha256", reference.recording.sha256, candidate.recording.sha256),
        ("recording samples", reference.recording.samples, candidate.recording.samples),
    )
    for what, theirs, ours in facts:
        if theirs != ours:
            raise TraceError(
                f"{names[1]} is a trace of another {what} ({ours}) than {names[0]} ({theirs}): compare "
                "traces of one model on one recording"
            )


def compare_traces(
    reference: Trace, candidate: Trace, tolerances: Tolerances = DEFAULT_TOLERANCES
) -> TraceComparison:
    """Every tensor both traces hold, chunk by chunk; TraceError when they are not traces of one
    model on one recording, or share no tensor."""
    ref, cand = reference.index, candidate.index
    check_comparable(ref, cand, (str(reference.path), str(candidate.path)))
    scope = _Scope.of(ref)
    ref_entries = {entry.index: entry for entry in scope.entries(ref)}
    cand_entries = {entry.index: entry for entry in scope.entries(cand)}
    to_chunk = _chunk_of(ref)
    differences = [
        _recording_difference(reference, candidate, name, tolerances.of(name), to_chunk)
        for name in ref.tensors
        if name in cand.tensors
    ]
    differences += [
        _unit_difference(reference, candidate, name, scope, tolerances.of(scope.key(name)))
        for name in scope.tensors(ref)
        if name in scope.tensors(cand)
    ]
    if not differences:
        raise TraceError(
            f"{candidate.path} shares no tensor with {reference.path}: name them as the reference does "
            "(docs/traces.md)"
        )
    differences.append(_framing(ref_entries, cand_entries, scope.unit))
    differences.sort(key=_flow_position)
    first = min(
        (d for d in differences if d.parted), key=lambda d: (d.chunk, _flow_position(d)), default=None
    )
    return TraceComparison(
        reference=ref.producer,
        candidate=cand.producer,
        unit=scope.unit,
        reference_count=len(ref_entries),
        candidate_count=len(cand_entries),
        compared_count=len(ref_entries.keys() & cand_entries.keys()),
        tensors=tuple(differences),
        not_compared=tuple(name for name in _keys(ref) if name not in _keys(cand)),
        first_chunk=None if first is None else first.chunk,
        first_tensor=None if first is None else first.tensor,
    )


@dataclass(frozen=True)
class _Scope:
    """Chunks of a streaming trace, or windows of an offline one."""

    unit: str
    frames: dict[str, Frames]

    @classmethod
    def of(cls, index: TraceIndex) -> _Scope:
        unit = kind_of(index.geometry).trace_unit
        return cls(unit, CHUNK_FRAMES if unit == CHUNK else WINDOW_FRAMES)

    @property
    def streaming(self) -> bool:
        return self.unit == CHUNK

    def entries(self, index: TraceIndex) -> tuple[ChunkEntry, ...] | tuple[WindowEntry, ...]:
        return index.chunks if self.streaming else index.windows

    def tensors(self, index: TraceIndex) -> dict[str, trace_format.TensorSpec]:
        return index.chunk_tensors if self.streaming else index.window_tensors

    def key(self, name: str) -> str:
        return name if self.streaming else trace_format.window_key(name)

    def full_name(self, index: int, name: str) -> str:
        return chunk_name(index, name) if self.streaming else window_name(index, name)


def _keys(index: TraceIndex) -> list[str]:
    return [*index.tensors, *index.chunk_tensors, *map(trace_format.window_key, index.window_tensors)]


def _flow_position(difference: TensorDifference) -> int:
    return FLOW.index(difference.tensor) if difference.tensor in FLOW else len(FLOW)


@dataclass(frozen=True)
class _Measure:
    """One chunk's tensor against the reference's."""

    error: float | None  # None: the shapes differ
    bound: float
    unmatched: float | None = None
    note: str | None = None

    def beyond(self, tolerance: Tolerance) -> bool:
        if self.error is None or self.error > self.bound:
            return True
        return self.unmatched is not None and self.unmatched > tolerance.unmatched


@dataclass
class _Worst:
    """The running figures of one tensor over the chunks compared."""

    tolerance: Tolerance
    max_error: float = 0.0
    max_unmatched: float | None = None
    compared: int = 0
    first: tuple[int, _Measure] | None = None

    def add(self, at: int, measure: _Measure) -> None:
        self.compared += 1
        if measure.error is not None:
            self.max_error = max(self.max_error, measure.error)
        if measure.unmatched is not None:
            self.max_unmatched = max(self.max_unmatched or 0.0, measure.unmatched)
        if self.first is None and measure.beyond(self.tolerance):
            self.first = (at, measure)

    def difference(self, key: str, unit: str, to_chunk: Callable[[int], int]) -> TensorDifference:
        at, measure = self.first if self.first is not None else (None, None)
        return TensorDifference(
            tensor=key,
            unit=unit,
            compared=self.compared,
            max_error=self.max_error,
            max_unmatched=self.max_unmatched,
            tolerance=self.tolerance,
            first_at=at,
            chunk=None if at is None else to_chunk(at),
            error=None if measure is None else measure.error,
            bound=None if measure is None else measure.bound,
            unmatched=None if measure is None else measure.unmatched,
            note=None if measure is None else measure.note,
        )


def _unit_difference(
    reference: Trace, candidate: Trace, name: str, scope: _Scope, tolerance: Tolerance
) -> TensorDifference:
    held = {entry.index for entry in scope.entries(candidate.index) if name in entry.tensors}
    frames = scope.frames.get(name)
    history = _History(reference) if frames is not None and frames.history else None
    worst = _Worst(tolerance)
    # Unchanged state is stored once and aliased: equal stored content needs one comparison. A
    # history only grows, so a content's first measure stands for its repeats.
    measured: dict[tuple[str, ...], _Measure] = {}
    for entry in scope.entries(reference.index):
        if history is not None:
            history.add(entry.index)
        if name not in entry.tensors or entry.index not in held:
            continue
        full = scope.full_name(entry.index, name)
        valid = unordered = -1
        if frames is not None:
            lengths = [int(reference.tensor(scope.full_name(entry.index, n))[0]) for n in frames.valid]
            valid, unordered = sum(lengths), sum(lengths[: len(frames.unordered)])
        theirs = "" if history is not None else reference.stored_name(full)
        key = (theirs, candidate.stored_name(full), str(valid), str(unordered))
        if key not in measured:
            pool = None if history is None else history.frames()
            measured[key] = _measure(
                candidate.tensor(full), reference.tensor(full), frames, valid, unordered, tolerance, pool
            )
        worst.add(entry.index, measured[key])
    return worst.difference(scope.key(name), scope.unit, lambda at: at)


class _History:
    """Every frame the reference's stream could have put into its speaker cache by a chunk:
    each chunk's own frames (context trimmed) and each silence profile. A reference without
    the chunk's frames (not NeMo's) contributes its cache as it is."""

    def __init__(self, reference: Trace) -> None:
        self.reference = reference
        self.rows: list[np.ndarray] = []
        self._stored: set[str] = set()

    def add(self, index: int) -> None:
        trace, entry = self.reference, self.reference.index.chunks[index]
        if trace.has(chunk_name(index, contract.CHUNK_EMBS)):
            frames = int(trace.chunk(index, contract.CHUNK_EMB_LENGTHS)[0])
            embs = trace.chunk(index, contract.CHUNK_EMBS)
            self.rows.append(embs[0, entry.left_context : frames - entry.right_context])
        elif trace.has(chunk_name(index, trace_format.STATE_SPKCACHE)):
            frames = int(trace.chunk(index, trace_format.STATE_SPKCACHE_LENGTHS)[0])
            self._add_once(index, trace_format.STATE_SPKCACHE, frames)
        # Compression fills the slots of silent speakers with the silence profile (zeros before
        # any silent frame).
        self._add_once(index, trace_format.STATE_MEAN_SIL_EMB, 1)

    def _add_once(self, index: int, name: str, frames: int) -> None:
        full = chunk_name(index, name)
        stored = self.reference.stored_name(full)
        if stored not in self._stored and self.reference.has(full):
            self._stored.add(stored)
            value = self.reference.tensor(full)
            self.rows.append(value.reshape(-1, value.shape[-1])[:frames])

    def frames(self) -> np.ndarray:
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 1), np.float32)


def _measure(
    ours: np.ndarray,
    theirs: np.ndarray,
    frames: Frames | None,
    valid: int,
    unordered: int,
    tolerance: Tolerance,
    history: np.ndarray | None = None,
) -> _Measure:
    if frames is not None and ours.ndim == theirs.ndim:
        ours, theirs = _take(ours, frames.axis, valid), _take(theirs, frames.axis, valid)
    if ours.shape != theirs.shape:
        return _Measure(None, 0.0, note=f"shape {ours.shape} where the reference has {theirs.shape}")
    reference = theirs.astype(np.float64)
    bound = tolerance.atol + tolerance.rtol * float(np.abs(reference).max(initial=0.0))
    difference = np.abs(ours.astype(np.float64) - reference)
    if frames is not None and history is not None:
        closest = _closest(np.moveaxis(ours, frames.axis, 0), history)
        ordered = np.zeros(0)
    elif frames is not None and unordered > 0:
        closest = _closest(np.moveaxis(theirs, frames.axis, 0)[:unordered], np.moveaxis(ours, frames.axis, 0))
        ordered = np.moveaxis(difference, frames.axis, 0)[unordered:]
    else:
        # A single value (a length, a flag): say both.
        note = f"{ours.flat[0]} where the reference has {theirs.flat[0]}" if ours.size == 1 else None
        return _Measure(float(difference.max(initial=0.0)), bound, note=note)
    matched = closest[closest <= bound]
    error = max(float(ordered.max(initial=0.0)), float(matched.max(initial=0.0)))
    return _Measure(error, bound, unmatched=float(np.mean(closest > bound)) if closest.size else 0.0)


def _closest(frames: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each frame, max |difference| to the frame of `pool` nearest to it (Euclidean)."""
    ours, theirs = (
        array.reshape(array.shape[0], int(np.prod(array.shape[1:]))).astype(np.float32)
        for array in (frames, pool)
    )
    if theirs.shape[0] == 0 or ours.shape[1] != theirs.shape[1]:
        return np.full(ours.shape[0], np.inf)
    squared = (theirs * theirs).sum(axis=1)[None, :] - 2.0 * ours @ theirs.T
    nearest = squared.argmin(axis=1)
    return np.abs(ours - theirs[nearest]).max(axis=1, initial=0.0).astype(np.float64)


def _recording_difference(
    reference: Trace, candidate: Trace, name: str, tolerance: Tolerance, to_chunk: Callable[[str, int], int]
) -> TensorDifference:
    """A whole-recording tensor, position by position along its time axis."""
    ours, theirs = candidate.tensor(name), reference.tensor(name)
    axis, unit = RECORDING_TIME.get(name, (0, "position"))
    worst = _Worst(tolerance)
    locate = functools.partial(to_chunk, name)
    if (
        ours.ndim != theirs.ndim
        or np.delete(ours.shape, axis).tolist() != np.delete(theirs.shape, axis).tolist()
    ):
        worst.add(0, _Measure(None, 0.0, note=f"shape {ours.shape} where the reference has {theirs.shape}"))
        return worst.difference(name, unit, locate)
    frames = min(ours.shape[axis], theirs.shape[axis])
    ours_t, theirs_t = (
        np.moveaxis(_take(a, axis, frames), axis, 0).astype(np.float64) for a in (ours, theirs)
    )
    errors = np.abs(ours_t - theirs_t).reshape(frames, -1).max(axis=1, initial=0.0)
    bound = tolerance.atol + tolerance.rtol * float(np.abs(theirs_t).max(initial=0.0))
    beyond = np.flatnonzero(errors > bound)
    at = int(beyond[0]) if beyond.size else frames
    note = None
    if ours.shape[axis] != theirs.shape[axis]:
        note = f"{ours.shape[axis]} {unit}s where the reference has {theirs.shape[axis]}"
    if beyond.size or note:
        worst.first = (at, _Measure(float(errors[at]) if beyond.size else None, bound, note=note))
    worst.compared, worst.max_error = 1, float(errors.max(initial=0.0))
    return worst.difference(name, unit, locate)


def _framing(
    ref_entries: dict[int, ChunkEntry | WindowEntry],
    cand_entries: dict[int, ChunkEntry | WindowEntry],
    unit: str,
) -> TensorDifference:
    """The index entries: where each chunk (window) sits in the recording; a chunk the
    reference lacks is a framing difference too."""
    worst = _Worst(Tolerance())
    for index in sorted(cand_entries):
        ours = _placement(cand_entries[index])
        if index not in ref_entries:
            note = f"{unit} {index} is not in the reference, which has {len(ref_entries)}"
            worst.add(index, _Measure(None, 0.0, note=note))
            continue
        theirs = _placement(ref_entries[index])
        error = float(np.abs(np.subtract(ours, theirs)).max())
        placed = None if error == 0 else f"mel frames {_span(ours)} where the reference has {_span(theirs)}"
        worst.add(index, _Measure(error, 0.0, note=placed))
    return worst.difference(FRAMING, unit, lambda at: at)


def _placement(entry: ChunkEntry | WindowEntry) -> tuple[int, ...]:
    if isinstance(entry, ChunkEntry):
        return entry.mel_start, entry.mel_frames, entry.left_context, entry.right_context
    return entry.mel_start, entry.mel_frames


def _span(placement: tuple[int, ...]) -> str:
    start, frames = placement[:2]
    contexts = f", context {placement[2]}+{placement[3]}" if len(placement) > 2 else ""
    return f"[{start}, {start + frames}){contexts}"


def _take(array: np.ndarray, axis: int, frames: int) -> np.ndarray:
    return np.take(array, np.arange(min(frames, array.shape[axis])), axis=axis)


def _chunk_of(index: TraceIndex) -> Callable[[str, int], int]:
    """Maps a position along a whole-recording tensor to the chunk (window) holding it, as the
    trace's model kind cuts the recording."""
    per_mel_frame = {
        trace_format.PREDS: SUBSAMPLING_FACTOR,
        trace_format.MEL: 1,
        trace_format.AUDIO: 1 / SAMPLES_PER_MEL_FRAME,
    }
    kind = kind_of(index.geometry)
    return lambda name, at: kind.trace_entry_at(index, int(at * per_mel_frame.get(name, 1)))


def rows(comparison: TraceComparison) -> Iterator[tuple[str, ...]]:
    """The comparison as table rows: tensor, first beyond tolerance, by how much, tolerance, max error."""
    for difference in comparison.tensors:
        where = "-" if not difference.parted else f"{difference.unit} {difference.first_at}"
        if difference.parted and difference.unit not in ("chunk", "window"):
            where += f" ({comparison.unit} {difference.chunk})"
        excess = difference.excess() if difference.parted else "-"
        maximum = f"{difference.max_error:.3g}"
        if difference.max_unmatched is not None:
            maximum += f", {difference.max_unmatched:.1%} unmatched"
        yield difference.tensor, where, excess, _tolerance_text(difference.tolerance), maximum


def _tolerance_text(tolerance: Tolerance) -> str:
    parts = [f"{tolerance.atol:g}"] if tolerance.atol else []
    if tolerance.rtol:
        parts.append(f"{tolerance.rtol:g} x max|ref|")
    text = " + ".join(parts) or "exact"
    if tolerance.unmatched:
        text += f", {tolerance.unmatched:.0%} frames unmatched"
    return text
