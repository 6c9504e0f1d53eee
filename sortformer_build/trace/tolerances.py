"""How far a candidate trace may stray from the reference, tensor by tensor, and what a tensor
that strays usually says about the loop that wrote it. Data, overridable from a JSON file
(`Tolerances`: `{"tensors": {"preds": {"atol": 0.1}}}`, merged over the defaults).

The defaults pass a correct fp16 model driven by a correct loop, and no loop with a wrong step
(docs/traces.md gives the measurements behind each): probabilities and embeddings leave room for
the error an fp16 model feeds back through the state; the count of silent frames for a popped
frame whose probabilities sum to within float16 noise of the silence threshold; lengths and
flags are exact.
"""

from __future__ import annotations

from pathlib import Path

from sortformer_build import contract
from sortformer_build.records.trace import Tolerance, Tolerances
from sortformer_build.trace import format as trace_format
from sortformer_build.trace.format import TraceError

# Tables are keyed by a tensor's name without its index: `spkcache` for `chunk/<i>/spkcache`,
# `window/mel` for `window/<i>/mel`, `mel` for the whole recording's features.
WINDOW_MEL = trace_format.window_key(contract.MEL)
WINDOW_MEL_LENGTH = trace_format.window_key(contract.MEL_LENGTH)
WINDOW_PREDS = trace_format.window_key(contract.OFFLINE_PREDS)

_PROBABILITIES = Tolerance(atol=0.05)
_EMBEDDINGS = Tolerance(rtol=0.05)
# NeMo's compression keeps the top-scoring frames per speaker; near-equal scores let float16
# noise keep another frame of the same speaker, which shifts every later frame's position: the
# cache is compared as a set (compare.CHUNK_FRAMES), and a share of its frames may go unmatched.
_CACHE_EMBEDDINGS = Tolerance(rtol=0.05, unmatched=0.05)
# The cache's probabilities are copies made when its frames were popped, not fed-back outputs:
# a frame kept by a near tie has near-equal ones, so they are held to a per-step error.
_CACHE_PROBABILITIES = Tolerance(atol=0.02, unmatched=0.1)
_FEATURES = Tolerance(atol=0.01)

DEFAULT_TOLERANCES = Tolerances(
    tensors={
        trace_format.AUDIO: Tolerance(atol=1e-4),
        trace_format.MEL: _FEATURES,
        contract.CHUNK: _FEATURES,
        contract.SPKCACHE: _CACHE_EMBEDDINGS,
        contract.FIFO: _EMBEDDINGS,
        contract.CHUNK_EMBS: _EMBEDDINGS,
        contract.SPEAKER_PREDS: Tolerance(atol=0.05, unmatched=0.05),
        trace_format.CHUNK_PREDS: _PROBABILITIES,
        trace_format.STATE_SPKCACHE: _CACHE_EMBEDDINGS,
        trace_format.STATE_SPKCACHE_PREDS: _CACHE_PROBABILITIES,
        trace_format.STATE_FIFO: _EMBEDDINGS,
        trace_format.STATE_FIFO_PREDS: _PROBABILITIES,
        trace_format.STATE_MEAN_SIL_EMB: _EMBEDDINGS,
        trace_format.STATE_N_SIL_FRAMES: Tolerance(atol=1, rtol=0.02),
        trace_format.PREDS: _PROBABILITIES,
        WINDOW_MEL: _FEATURES,
        WINDOW_PREDS: _PROBABILITIES,
    }
)

FRAMING = "framing"  # the chunk (window) entries of the index: where each sits in the recording

# What a first difference in a tensor usually means, in data-flow order within a chunk: when
# several tensors part at the same chunk, the first of them is the likely cause.
MEANINGS = {
    trace_format.AUDIO: "the audio itself: decoding, resampling or channel mixing",
    trace_format.MEL: "mel features: framing (centre padding, hop, frame count), window, pre-emphasis, "
    "log guard or per-feature normalisation",
    FRAMING: "chunk framing: where the chunk loader starts each chunk, its left and right context, "
    "the last chunk (a phantom chunk at the end?)",
    contract.CHUNK: "mel framing: which feature frames the chunk holds (context at the edges, a shift "
    "by a frame, zero padding) or the features themselves",
    contract.CHUNK_LENGTHS: "mel framing: the valid feature frames of the chunk (first or last chunk)",
    contract.SPKCACHE_LENGTHS: "speaker-cache length fed to the model: the FIFO pop size, or the clamp "
    "after compression (an off-by-one?)",
    contract.SPKCACHE: "speaker-cache contents fed to the model: the frames a FIFO pop moved, or cache "
    "compression",
    contract.FIFO_LENGTHS: "FIFO length fed to the model: when the FIFO pops, and how many frames",
    contract.FIFO: "FIFO contents fed to the model: the chunk appended without its context frames, or "
    "the frames a pop removed",
    contract.CHUNK_EMB_LENGTHS: "the model's subsampled chunk length: chunk_lengths, or the model's "
    "length arithmetic (fp16 rounding)",
    contract.CHUNK_EMBS: "the model's chunk embeddings: its chunk input, or the pre-encoder",
    contract.SPEAKER_PREDS: "the model's probabilities: its inputs (tensors above) or the model itself",
    trace_format.CHUNK_PREDS: "the chunk's probabilities kept by the update: the left and right context "
    "trimmed from the model's output",
    trace_format.STATE_FIFO_LENGTHS: "FIFO pop: when it pops (FIFO plus chunk over fifo_len) and how "
    "many frames (the update period)",
    trace_format.STATE_FIFO: "FIFO update: the chunk appended without its context, the popped frames "
    "removed from the front",
    trace_format.STATE_FIFO_PREDS: "FIFO probabilities: read from the model's output at the FIFO's "
    "place (after the cache's valid frames)",
    trace_format.STATE_N_SIL_FRAMES: "silence profile: popped frames whose probabilities sum below the "
    "silence threshold are counted",
    trace_format.STATE_MEAN_SIL_EMB: "silence profile: the running mean embedding of silent popped frames",
    trace_format.STATE_SPKCACHE_LENGTHS: "speaker-cache length: popped frames added, clamped to "
    "spkcache_len when it compresses",
    trace_format.STATE_COMPRESSED: "cache compression: when it runs (cache plus popped frames over "
    "spkcache_len)",
    trace_format.STATE_SPKCACHE: "cache compression: per-speaker top-k frame selection, score boosts, "
    "silence frames from the silence profile; or the pop appending other frames",
    trace_format.STATE_SPKCACHE_PREDS: "cache compression: the probabilities kept with the selected frames",
    WINDOW_MEL: "window framing: where each window starts (the stride) and its zero padding",
    WINDOW_MEL_LENGTH: "window framing: the valid mel frames of the window (the last window)",
    WINDOW_PREDS: "the model's probabilities for the window: its input or the model",
    trace_format.PREDS: "the final probabilities: the chunk (window) outputs kept, or how windows are "
    "stitched (speaker order over the overlap, averaging)",
}
FLOW = tuple(MEANINGS)


def read_tolerances(path: Path) -> Tolerances:
    """The defaults with `path`'s entries over them."""
    from sortformer_build.records.base import RecordError

    try:
        return DEFAULT_TOLERANCES.merged(Tolerances.read(path))
    except RecordError as error:
        raise TraceError(f"tolerances: {error}") from None
