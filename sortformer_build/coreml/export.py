"""Export wrappers: the two traced programs of the streaming pipeline, and the one program of
the offline model.

The pre-encoder subsamples one chunk and packs spkcache | fifo | chunk into one fixed-length,
zero-padded sequence; the head runs NeMo's FastConformer, Transformer and speaker sigmoids on
it. Together they compute NeMo's `forward_for_export` with static shapes. The offline model
subsamples a whole window and runs the head on it: NeMo's non-streaming `forward` without the
preprocessor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sortformer_build import contract
from sortformer_build.geometry import OfflineGeometry, StreamingGeometry


def _time_mask(frames: int, lengths: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, frames, 1) mask of valid frames, for (batch, channel, time, feature) tensors."""
    valid = torch.arange(frames, dtype=torch.int32).unsqueeze(0) < lengths.unsqueeze(1)
    return valid.to(dtype).unsqueeze(1).unsqueeze(-1)


class PreEncoder(torch.nn.Module):
    """NeMo's masked conv subsampling of a chunk, then the arithmetic spkcache|fifo|chunk packing.

    NeMo computes the subsampled lengths in floating point; fp16 compute would round them above
    2048 frames, so lengths here stay int32 end to end (same values: floor((n + 2p - k) / s) + 1).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.subsampling = model.encoder.pre_encode

    def forward(
        self,
        chunk: torch.Tensor,
        chunk_lengths: torch.Tensor,
        spkcache: torch.Tensor,
        spkcache_lengths: torch.Tensor,
        fifo: torch.Tensor,
        fifo_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        embs, lengths = self.subsample(chunk, chunk_lengths)
        packed, total = pack(spkcache, spkcache_lengths, fifo, fifo_lengths, embs, lengths)
        return embs, lengths, packed, total

    def subsample(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Time-major (1, mel frames, features) to (1, frames, d_model) embeddings and their
        valid length."""
        x = features.unsqueeze(1)
        mask = _time_mask(x.shape[2], lengths, x.dtype)
        for layer in self.subsampling.conv:
            x = layer(x * mask)
            if isinstance(layer, torch.nn.Conv2d) and layer.stride != (1, 1):
                padding, kernel, stride = layer.padding[0], layer.kernel_size[0], layer.stride[0]
                lengths = (lengths + (2 * padding - kernel)) // stride + 1
                mask = _time_mask(x.shape[2], lengths, x.dtype)
        x = x * mask
        batch, channels, frames, features = x.shape
        embs = self.subsampling.out(x.transpose(1, 2).reshape(batch, frames, channels * features))
        return embs, lengths


def pack(
    spkcache: torch.Tensor,
    spkcache_lengths: torch.Tensor,
    fifo: torch.Tensor,
    fifo_lengths: torch.Tensor,
    chunk: torch.Tensor,
    chunk_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `*_lengths` frames of each buffer, back to back, then zeros (NeMo's concat_and_pad).

    One gather with indices computed from the lengths: slicing by length would create
    zero-length slices when a buffer is empty, which the Neural Engine and BNNS reject.
    """
    n_cache, n_fifo = spkcache.shape[1], fifo.shape[1]
    frames = n_cache + n_fifo + chunk.shape[1]
    position = torch.arange(frames, dtype=torch.int32)
    cache_end = spkcache_lengths
    fifo_end = cache_end + fifo_lengths
    total = fifo_end + chunk_lengths
    source = torch.where(
        position >= fifo_end,
        (n_cache + n_fifo) + position - fifo_end,
        torch.where(position >= cache_end, n_cache + position - cache_end, position),
    )
    # Index `frames` is the zero row appended below.
    source = torch.where(position < total, source, torch.full_like(position, frames))
    zero = torch.zeros(1, 1, chunk.shape[2], dtype=chunk.dtype)
    packed = torch.index_select(torch.cat([spkcache, fifo, chunk, zero], dim=1), 1, source)
    return packed, total


class Head(torch.nn.Module):
    """FastConformer over the packed sequence, then the Transformer and speaker sigmoids."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, embs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        encoded, encoded_lengths = self.model.frontend_encoder(
            processed_signal=embs, processed_signal_length=lengths, bypass_pre_encode=True
        )
        return self.model.forward_infer(encoded, encoded_lengths)


class WholeWindow(torch.nn.Module):
    """The offline model: channels-first mel features of one window, subsampled with integer
    lengths, then the head."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.pre_encoder, self.head = PreEncoder(model), Head(model)

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor) -> torch.Tensor:
        embs, lengths = self.pre_encoder.subsample(mel.transpose(1, 2), mel_length)
        return self.head(embs, lengths)


@dataclass
class TracedProgram:
    module: torch.jit.ScriptModule
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    examples: tuple[torch.Tensor, ...]


@dataclass
class TracedModels:
    pre_encoder: TracedProgram
    head: TracedProgram
    d_model: int


def example_inputs(geometry: StreamingGeometry, d_model: int) -> tuple[torch.Tensor, ...]:
    """Partly filled buffers, so tracing sees every branch of the packing arithmetic."""
    generator = torch.Generator().manual_seed(0)

    def length(value: int) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.int32)

    return (
        torch.randn(1, geometry.chunk_mel_frames, contract.N_MELS, generator=generator),
        length(geometry.chunk_mel_frames),
        torch.randn(1, geometry.spkcache_len, d_model, generator=generator),
        length(geometry.spkcache_len // 2),
        torch.randn(1, geometry.fifo_len, d_model, generator=generator),
        length(geometry.fifo_len // 2),
    )


def trace(model: Any, geometry: StreamingGeometry) -> TracedModels:
    """Trace both programs for `geometry` (static shapes: one model serves one geometry)."""
    d_model = int(model.encoder.d_model)
    pre_encoder, head = PreEncoder(model).eval(), Head(model).eval()
    pre_examples = example_inputs(geometry, d_model)
    with torch.no_grad():
        _, _, packed, total = pre_encoder(*pre_examples)
        traced_pre = torch.jit.trace(pre_encoder, pre_examples, check_trace=False)
        traced_head = torch.jit.trace(head, (packed, total), check_trace=False)
    return TracedModels(
        pre_encoder=TracedProgram(
            traced_pre, contract.INPUT_NAMES, contract.PRE_ENCODER_OUTPUTS, pre_examples
        ),
        head=TracedProgram(traced_head, contract.HEAD_INPUTS, contract.HEAD_OUTPUTS, (packed, total)),
        d_model=d_model,
    )


def trace_window(model: Any, geometry: OfflineGeometry) -> TracedProgram:
    """Trace the offline model for `geometry`'s window, with a padded example so that the
    length masks are traced as computed, not folded."""
    generator = torch.Generator().manual_seed(0)
    mel = torch.randn(1, contract.N_MELS, geometry.window_frames, generator=generator)
    examples = (mel, torch.tensor([geometry.window_frames // 2 + 1], dtype=torch.int32))
    with torch.no_grad():
        traced = torch.jit.trace(WholeWindow(model).eval(), examples, check_trace=False)
    return TracedProgram(traced, contract.OFFLINE_INPUTS, contract.OFFLINE_OUTPUTS, examples)
