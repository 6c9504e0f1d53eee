"""What NeMo itself computes, for the parity stage to compare a package against.

Everything here runs NeMo's own code: `forward_for_export` (one streaming step with fixed-size,
zero-padded buffers), its preprocessor, its chunk loader and its fixed-size streaming state
update (`streaming_update_async`). Only the model call of the streaming loop is pluggable, so
the same loop drives NeMo and a Core ML package.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.contract import StepFunction
from sortformer_build.geometry import SUBSAMPLING_FACTOR, StreamingGeometry
from sortformer_build.progress import counted

SAMPLE_RATE = 16000

# (name, spkcache fill, fifo fill, chunk fill) as fractions of each buffer.
CHUNK_CASES = (
    ("stream start: empty cache and FIFO, full chunk", 0.0, 0.0, 1.0),
    ("partly filled cache and FIFO, full chunk", 0.5, 0.6, 1.0),
    ("full cache and FIFO, full chunk", 1.0, 1.0, 1.0),
    ("short last chunk, partly filled cache and FIFO", 0.3, 1.0, 0.55),
)


@dataclass
class StreamResult:
    preds: np.ndarray  # (frames, speakers): every output frame of the stream
    spkcache: np.ndarray  # final speaker cache (frames, d_model), valid frames only
    fifo: np.ndarray  # final FIFO, valid frames only
    chunks: int


@dataclass(frozen=True)
class ChunkStep:
    """One turn of the streaming loop, as an observer of `stream` sees it."""

    index: int
    mel_start: int  # the recording's mel frame at which `chunk` starts (left context included)
    mel_frames: int  # mel frames of the recording in `chunk`; the rest is zero padding
    left_context: int  # output frames of left context the state update leaves out of the chunk
    right_context: int
    inputs: dict[str, np.ndarray]  # the six contract inputs, as the step got them
    outputs: dict[str, np.ndarray]
    # NeMo's StreamingSortformerState after `streaming_update_async`, live: the loop goes on
    # updating it (some tensors in place), so an observer copies what it keeps.
    state: Any
    chunk_preds: np.ndarray  # (1, frames, speakers): the chunk's own probabilities from the update


# Sees every chunk right after NeMo's state update.
Observer = Callable[[ChunkStep], None]


def chunk_cases(model: Any, geometry: StreamingGeometry, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs for one streaming step at several buffer fills; buffer contents are real
    pre-encoder embeddings of random features, as a running stream would hold."""
    generator = np.random.default_rng(seed)
    d_model = int(model.encoder.d_model)
    cases = []
    for _, cache_fill, fifo_fill, chunk_fill in CHUNK_CASES:
        chunk = generator.standard_normal((1, geometry.chunk_mel_frames, contract.N_MELS), dtype=np.float32)
        chunk_frames = max(1, round(geometry.chunk_mel_frames * chunk_fill))
        chunk[:, chunk_frames:] = 0.0
        cases.append(
            {
                contract.CHUNK: chunk,
                contract.CHUNK_LENGTHS: np.array([chunk_frames], dtype=np.int32),
                **_buffer(model, contract.SPKCACHE, geometry.spkcache_len, cache_fill, d_model, generator),
                **_buffer(model, contract.FIFO, geometry.fifo_len, fifo_fill, d_model, generator),
            }
        )
    return cases


def _buffer(
    model: Any, name: str, size: int, fill: float, d_model: int, generator: np.random.Generator
) -> dict:
    import torch

    frames = round(size * fill)
    buffer = np.zeros((1, size, d_model), dtype=np.float32)
    if frames:
        mel = generator.standard_normal((1, frames * SUBSAMPLING_FACTOR, contract.N_MELS), dtype=np.float32)
        with torch.no_grad():
            embs, _ = model.encoder.pre_encode(x=torch.from_numpy(mel), lengths=torch.tensor([mel.shape[1]]))
        buffer[:, :frames] = embs.numpy()[:, :frames]
    return {name: buffer, f"{name}_lengths": np.array([frames], dtype=np.int32)}


def nemo_step(model: Any) -> StepFunction:
    """NeMo's exported streaming step (`forward_for_export`) as a step function."""
    import torch

    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(inputs[name]) for name in contract.INPUT_NAMES]
        tensors = [tensor.long() if tensor.dtype == torch.int32 else tensor for tensor in tensors]
        with torch.no_grad():
            preds, embs, lengths = model.forward_for_export(*tensors)
        return {
            contract.SPEAKER_PREDS: preds.numpy(),
            contract.CHUNK_EMBS: embs.numpy(),
            contract.CHUNK_EMB_LENGTHS: lengths.numpy().astype(np.int32),
        }

    return step


def synthetic_conversation(seconds: float, seed: int) -> np.ndarray:
    """A few "speakers" (harmonic voices with distinct pitch and vowel-like formants) taking
    turns, overlapping and pausing: audio with structure, made here, no downloads."""
    generator = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    time = np.arange(samples) / SAMPLE_RATE
    audio = 0.003 * generator.standard_normal(samples)
    for pitch in (110.0, 165.0, 220.0, 290.0):
        voice = sum(np.sin(2 * np.pi * pitch * k * time + k) / k for k in range(1, 12))
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * generator.uniform(3, 6) * time) ** 2
        audio += 0.2 * voice * syllables * _turns(samples, generator)
    return (audio / np.max(np.abs(audio))).astype(np.float32)


def _turns(samples: int, generator: np.random.Generator) -> np.ndarray:
    active = np.zeros(samples)
    start = int(generator.uniform(0, 2) * SAMPLE_RATE)
    while start < samples:
        length = int(generator.uniform(0.8, 3.0) * SAMPLE_RATE)
        active[start : start + length] = 1.0
        start += length + int(generator.uniform(1.0, 6.0) * SAMPLE_RATE)
    return active


def mel_features(model: Any, audio: np.ndarray) -> np.ndarray:
    """NeMo's own preprocessing of the model (eval mode: no dither): (1, 128, frames)."""
    import torch

    with torch.no_grad():
        features, length = model.process_signal(
            audio_signal=torch.from_numpy(audio)[None], audio_signal_length=torch.tensor([audio.size])
        )
    return features[:, :, : int(length)].numpy()


def streaming_modules(geometry: StreamingGeometry, d_model: int) -> Any:
    """NeMo's SortformerModules configured for `geometry`: its chunk loader and state update
    need no weights, so a package can be streamed without restoring the checkpoint."""
    from nemo.collections.asr.modules.sortformer_modules import SortformerModules

    return SortformerModules(num_spks=4, fc_d_model=d_model, **asdict(geometry)).eval()


def stream(
    modules: Any,
    geometry: StreamingGeometry,
    mel: np.ndarray,
    step: StepFunction,
    observer: Observer | None = None,
) -> StreamResult:
    """NeMo's asynchronous streaming loop (`forward_streaming` with `async_streaming`), with
    `step` in place of the model: fixed-size inputs in, NeMo's state update on the outputs;
    `observer` sees each chunk after the update."""
    import torch

    features = torch.from_numpy(mel)
    state = modules.init_streaming_state(batch_size=1, async_streaming=True)
    total = [np.zeros((0, 4), dtype=np.float32)]
    loader = modules.streaming_feat_loader(
        feat_seq=features,
        feat_seq_length=torch.tensor([mel.shape[2]]),
        feat_seq_offset=torch.zeros(1, dtype=torch.long),
    )
    chunks = 0
    expected = math.ceil(mel.shape[2] / (geometry.chunk_len * SUBSAMPLING_FACTOR))
    progress = counted(loader, expected, "streaming chunk by chunk", "chunks")
    for index, chunk, chunk_lengths, left_offset, right_offset in progress:
        inputs = _step_inputs(geometry, chunk.numpy(), int(chunk_lengths), state)
        outputs = step(inputs)
        emb_frames = int(outputs[contract.CHUNK_EMB_LENGTHS][0])
        # A fixed-size package pads the chunk; the state update must see its valid frames only.
        embs = torch.from_numpy(outputs[contract.CHUNK_EMBS][:, :emb_frames].astype(np.float32))
        lc, rc = round(left_offset / SUBSAMPLING_FACTOR), math.ceil(right_offset / SUBSAMPLING_FACTOR)
        state, chunk_preds = modules.streaming_update_async(
            streaming_state=state,
            chunk=embs,
            chunk_lengths=torch.tensor([emb_frames]),
            preds=torch.from_numpy(outputs[contract.SPEAKER_PREDS].astype(np.float32)),
            lc=lc,
            rc=rc,
        )
        total.append(chunk_preds[0].numpy())
        if observer is not None:
            start = index * geometry.chunk_len * SUBSAMPLING_FACTOR - left_offset
            observer(
                ChunkStep(index, start, chunk.shape[1], lc, rc, inputs, outputs, state, chunk_preds.numpy())
            )
        chunks += 1
    return StreamResult(
        preds=np.concatenate(total),
        spkcache=state.spkcache[0, : int(state.spkcache_lengths[0])].numpy(),
        fifo=state.fifo[0, : int(state.fifo_lengths[0])].numpy(),
        chunks=chunks,
    )


def _step_inputs(
    geometry: StreamingGeometry, chunk: np.ndarray, chunk_frames: int, state: Any
) -> dict[str, np.ndarray]:
    padded = np.zeros((1, geometry.chunk_mel_frames, contract.N_MELS), dtype=np.float32)
    padded[:, : chunk.shape[1]] = chunk
    return {
        contract.CHUNK: padded,
        contract.CHUNK_LENGTHS: np.array([chunk_frames], dtype=np.int32),
        contract.SPKCACHE: state.spkcache.numpy().astype(np.float32),
        contract.SPKCACHE_LENGTHS: state.spkcache_lengths.numpy().astype(np.int32),
        contract.FIFO: state.fifo.numpy().astype(np.float32),
        contract.FIFO_LENGTHS: state.fifo_lengths.numpy().astype(np.int32),
    }
