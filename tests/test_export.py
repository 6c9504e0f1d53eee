"""The export wrappers compute what NeMo's own modules compute (float32, before conversion)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.coreml.export import Head, PreEncoder, pack, trace
from sortformer_build.geometry import StreamingGeometry

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path):
    return load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))


def _lengths(value: int) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.int32)


@pytest.mark.parametrize(
    ("cache", "fifo", "chunk"), [(0, 0, 14), (0, 0, 0), (5, 0, 14), (0, 7, 3), (188, 40, 14), (3, 40, 9)]
)
def test_pack_matches_nemo_concat_and_pad(model, cache: int, fifo: int, chunk: int) -> None:
    generator = torch.Generator().manual_seed(cache * 100 + fifo * 10 + chunk)
    buffers = [torch.randn(1, n, 64, generator=generator) for n in (188, 40, 14)]
    lengths = [_lengths(n) for n in (cache, fifo, chunk)]
    packed, total = pack(buffers[0], lengths[0], buffers[1], lengths[1], buffers[2], lengths[2])
    reference, reference_total = model.sortformer_modules.concat_and_pad(buffers, [x.long() for x in lengths])
    valid = cache + fifo + chunk
    assert int(total) == int(reference_total) == valid
    assert packed.shape == (1, 242, 64)
    assert torch.equal(packed[:, :valid], reference[:, :valid])
    assert not packed[:, valid:].any()


@pytest.mark.parametrize("chunk_frames", [112, 57, 8, 1, 0])
def test_pre_encoder_matches_nemo_subsampling(model, chunk_frames: int) -> None:
    chunk = torch.randn(1, 112, 128, generator=torch.Generator().manual_seed(chunk_frames))
    embs, lengths, _, _ = PreEncoder(model).eval()(
        chunk,
        _lengths(chunk_frames),
        torch.zeros(1, 188, 64),
        _lengths(0),
        torch.zeros(1, 40, 64),
        _lengths(0),
    )
    with torch.no_grad():
        reference, reference_lengths = model.encoder.pre_encode(x=chunk, lengths=torch.tensor([chunk_frames]))
    assert lengths.dtype == torch.int32
    assert int(lengths) == int(reference_lengths)
    torch.testing.assert_close(embs, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("cache", "fifo", "chunk_frames"), [(0, 0, 112), (100, 20, 112), (188, 40, 60)])
def test_wrappers_match_nemo_forward_for_export(model, cache: int, fifo: int, chunk_frames: int) -> None:
    generator = torch.Generator().manual_seed(cache + fifo + chunk_frames)
    inputs = (
        torch.randn(1, 112, 128, generator=generator),
        _lengths(chunk_frames),
        torch.randn(1, 188, 64, generator=generator),
        _lengths(cache),
        torch.randn(1, 40, 64, generator=generator),
        _lengths(fifo),
    )
    with torch.no_grad():
        embs, lengths, packed, total = PreEncoder(model).eval()(*inputs)
        preds = Head(model).eval()(packed, total)
        reference_preds, reference_embs, reference_lengths = model.forward_for_export(
            *(x.long() if x.dtype == torch.int32 else x for x in inputs)
        )
    valid = int(total)
    assert int(lengths) == int(reference_lengths)
    torch.testing.assert_close(embs, reference_embs, rtol=0, atol=1e-6)
    torch.testing.assert_close(preds[:, :valid], reference_preds[:, :valid], rtol=0, atol=1e-5)
    assert not preds[:, valid:].any()


def test_trace_has_the_contract_names_and_shapes(model) -> None:
    traced = trace(model, DEFAULT)
    assert traced.d_model == 64
    assert traced.pre_encoder.input_names[0] == "chunk"
    assert tuple(traced.pre_encoder.examples[0].shape) == (1, 112, 128)
    assert tuple(traced.head.examples[0].shape) == (1, 242, 64)
