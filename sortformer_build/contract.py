"""The Core ML I/O contracts the Swift runtime reads: names, dtypes and shapes per geometry,
for the streaming pipeline and for the offline whole-window model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sortformer_build.geometry import NUM_SPEAKERS, OfflineGeometry, StreamingGeometry

N_MELS = 128

# Pipeline inputs, in the order the runtime feeds them.
CHUNK = "chunk"
CHUNK_LENGTHS = "chunk_lengths"
SPKCACHE = "spkcache"
SPKCACHE_LENGTHS = "spkcache_lengths"
FIFO = "fifo"
FIFO_LENGTHS = "fifo_lengths"
INPUT_NAMES = (CHUNK, CHUNK_LENGTHS, SPKCACHE, SPKCACHE_LENGTHS, FIFO, FIFO_LENGTHS)

# Pipeline outputs.
SPEAKER_PREDS = "speaker_preds_out"
CHUNK_EMBS = "chunk_pre_encoder_embs_out"
CHUNK_EMB_LENGTHS = "chunk_pre_encoder_lengths_out"

# Internal tensors between the pre-encoder and the head (not part of the runtime contract).
PACKED_EMBS = "pre_encoder_embs"
PACKED_LENGTHS = "pre_encoder_lengths"

PRE_ENCODER_OUTPUTS = (CHUNK_EMBS, CHUNK_EMB_LENGTHS, PACKED_EMBS, PACKED_LENGTHS)
HEAD_INPUTS = (PACKED_EMBS, PACKED_LENGTHS)
HEAD_OUTPUTS = (SPEAKER_PREDS,)

# The offline model: a whole window of mel features, channels-first, in; probabilities out.
MEL = "mel"
MEL_LENGTH = "mel_length"
OFFLINE_INPUTS = (MEL, MEL_LENGTH)
OFFLINE_PREDS = "speaker_preds"
OFFLINE_OUTPUTS = (OFFLINE_PREDS,)
# Creator-defined metadata of the offline model beside its window: which weights it carries.
CHECKPOINT_VERSION = "checkpoint_version"


# One model call: the contract's inputs in, its outputs out (NeMo, the executor or Core ML).
StepFunction = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class TensorContract:
    name: str
    dtypes: tuple[str, ...]  # accepted Core ML multi-array dtypes, e.g. ("FLOAT32",)
    shape: tuple[int, ...]


def pipeline_contract(
    geometry: StreamingGeometry, d_model: int
) -> tuple[list[TensorContract], list[TensorContract]]:
    """Inputs and outputs a streaming pipeline for `geometry` must declare."""
    f32, i32 = ("FLOAT32",), ("INT32",)
    inputs = [
        TensorContract(CHUNK, f32, (1, geometry.chunk_mel_frames, N_MELS)),
        TensorContract(CHUNK_LENGTHS, i32, (1,)),
        TensorContract(SPKCACHE, f32, (1, geometry.spkcache_len, d_model)),
        TensorContract(SPKCACHE_LENGTHS, i32, (1,)),
        TensorContract(FIFO, f32, (1, geometry.fifo_len, d_model)),
        TensorContract(FIFO_LENGTHS, i32, (1,)),
    ]
    outputs = [
        TensorContract(SPEAKER_PREDS, f32, (1, geometry.prediction_frames, NUM_SPEAKERS)),
        TensorContract(CHUNK_EMBS, ("FLOAT32", "FLOAT16"), (1, geometry.chunk_frames, d_model)),
        TensorContract(CHUNK_EMB_LENGTHS, i32, (1,)),
    ]
    return inputs, outputs


def offline_contract(geometry: OfflineGeometry) -> tuple[list[TensorContract], list[TensorContract]]:
    """Inputs and outputs an offline model for `geometry` must declare."""
    inputs = [
        TensorContract(MEL, ("FLOAT32",), (1, N_MELS, geometry.window_frames)),
        TensorContract(MEL_LENGTH, ("INT32",), (1,)),
    ]
    outputs = [TensorContract(OFFLINE_PREDS, ("FLOAT32",), (1, geometry.output_frames, NUM_SPEAKERS))]
    return inputs, outputs
