"""The verification stages catch broken packages, and the reference is NeMo's own streaming."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sortformer_build.verify.check import ParityJob, run_parity

from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.cli.verify import main as verify_main
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    VariantConfig,
    VerifyConfig,
)
from sortformer_build.coreml.package import SPEC_PATH, load_spec
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.job.build import build
from sortformer_build.store.cache import BuildCache, Entry
from sortformer_build.verify import reference
from sortformer_build.verify.lint import Expectation, lint_package

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)
NVIDIA_HIGH = StreamingGeometry(340, 1, 40, 40, 188, 300)


def tiny_config(output: Path, cache: Path, geometry: StreamingGeometry = DEFAULT) -> BuildConfig:
    return BuildConfig(
        variant=VariantConfig(name="test", version="v2.1", file_name="Sortformer_test", **geometry.__dict__),
        compression=CompressionConfig(name="fp16", folder="fp16"),
        checkpoint=CheckpointConfig(source="tiny"),
        output_dir=str(output),
        cache_dir=str(cache),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path):
    """A verified tiny Default package, built by calling the library (no Hydra)."""
    output = tmp_path_factory.mktemp("verified")
    result = build(tiny_config(output, shared_cache))
    return result, tiny_config(output, shared_cache)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path):
    return load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))


def _copy(package: Path, tmp_path: Path) -> Path:
    copy = tmp_path / package.name
    shutil.copytree(package, copy)
    return copy


def _edit_spec(package: Path, edit) -> None:
    spec = load_spec(package)
    edit(spec)
    (package / SPEC_PATH).write_bytes(spec.SerializeToString())


def _parity(package: Path, config: BuildConfig, shared_cache: Path, model, programs: Entry, nbits=None):
    job = ParityJob(
        package=package,
        geometry=config.variant.geometry,
        d_model=64,
        nbits=nbits,
        checkpoint_sha256="tiny-test",
        programs=programs,
        versions={},
    )
    return run_parity(job, VerifyConfig(), BuildCache(shared_cache / "parity-tests"), lambda: model)


def test_good_package_is_verified_with_figures(built) -> None:
    result, _ = built
    statuses = {step["name"]: step["status"] for step in result.record["steps"]}
    assert statuses["lint"] == statuses["parity"] == "verified"
    figures = result.record["verification"]["parity"]
    steps = figures["per_step_vs_nemo"]
    assert steps["lengths_equal"] and steps["overall"]["max_abs_prob_error"] < 1e-2
    assert steps["overall"]["prob_spread"] > 0.2, "synthetic outputs are not decisive enough to test anything"
    assert figures["streaming_vs_nemo"]["chunks"] >= 2


def test_output_wired_to_an_input_is_caught(built, tmp_path: Path) -> None:
    result, _ = built
    package = _copy(result.package, tmp_path)

    def alias(spec) -> None:
        head = spec.pipeline.models[1]
        function = head.mlProgram.functions["main"]
        function.block_specializations[function.opset].outputs.append("pre_encoder_lengths")

    _edit_spec(package, alias)
    findings = lint_package(package, Expectation(geometry=DEFAULT, d_model=64))
    assert any("returns its input pre_encoder_lengths unchanged" in finding for finding in findings)


def test_swapped_weights_fail_parity(built, tmp_path: Path, shared_cache: Path, model) -> None:
    result, config = built
    package = _copy(result.package, tmp_path)

    def swap(spec) -> None:
        head = spec.pipeline.models[1]
        function = head.mlProgram.functions["main"]
        consts = [
            op
            for op in function.block_specializations[function.opset].operations
            if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"
        ]
        by_shape: dict[tuple, list] = {}
        for op in consts:
            dims = tuple(d.constant.size for d in op.attributes["val"].type.tensorType.dimensions)
            by_shape.setdefault(dims, []).append(op)
        first, second = next(ops for dims, ops in by_shape.items() if len(dims) == 2 and len(ops) >= 2)[:2]
        a, b = first.attributes["val"].blobFileValue, second.attributes["val"].blobFileValue
        a.offset, b.offset = b.offset, a.offset

    _edit_spec(package, swap)
    assert lint_package(package, Expectation(geometry=DEFAULT, d_model=64)) == []
    figures, failures = _parity(package, config, shared_cache, model, Entry(tmp_path, hit=True))
    assert failures, figures["per_step_vs_nemo"]["overall"]


def test_wrong_metadata_is_caught(built, tmp_path: Path, capsys) -> None:
    result, _ = built
    package = _copy(result.package, tmp_path)
    _edit_spec(package, lambda spec: spec.description.metadata.userDefined.update({"chunk_len": "7"}))
    findings = lint_package(package, Expectation(geometry=DEFAULT, d_model=64))
    assert any("differs from the expected" in finding for finding in findings)
    # Without an expectation the package contradicts itself: shapes do not fit its own metadata.
    assert verify_main([str(package)]) == 1
    assert "contract: input chunk has shape [1, 112, 128], expected [1, 120, 128]" in capsys.readouterr().out


def test_geometry_mismatch_is_caught(built) -> None:
    result, _ = built
    nvidia_low = StreamingGeometry(6, 1, 7, 188, 188, 144)
    findings = lint_package(result.package, Expectation(geometry=nvidia_low, d_model=64))
    assert findings[0].startswith("metadata: geometry")
    assert "contract: input fifo has shape [1, 40, 64], expected [1, 188, 64]" in findings


def test_verify_command_passes_a_good_package(built, capsys) -> None:
    result, _ = built
    assert verify_main([str(result.package)]) == 0
    assert capsys.readouterr().out.strip() == f"{result.package}: ok"


class FloatLengthPreEncoder(torch.nn.Module):
    """The pre-encoder as NeMo writes it: subsampled lengths in floating point."""

    def __init__(self, model) -> None:
        super().__init__()
        self.subsampling = model.encoder.pre_encode

    def forward(self, chunk, chunk_lengths, spkcache, spkcache_lengths, fifo, fifo_lengths):
        from sortformer_build.coreml.export import pack

        embs, lengths = self.subsampling(x=chunk, lengths=chunk_lengths)
        lengths = lengths.to(torch.int32)
        packed, total = pack(spkcache, spkcache_lengths, fifo, fifo_lengths, embs, lengths)
        return embs, lengths, packed, total


def test_fp16_length_arithmetic_on_a_long_chunk_fails_parity(
    tmp_path: Path, shared_cache: Path, model
) -> None:
    """NvidiaHigh's 3048-frame chunk: fp16 rounds NeMo's float length maths, one frame is
    masked too early; float16 execution catches it, float32 execution would not."""
    from sortformer_build.coreml.convert import assemble_pipeline, convert_programs
    from sortformer_build.coreml.export import TracedProgram, trace

    traced = trace(model, NVIDIA_HIGH)
    broken = FloatLengthPreEncoder(model).eval()
    with torch.no_grad():
        module = torch.jit.trace(broken, traced.pre_encoder.examples, check_trace=False)
    traced.pre_encoder = TracedProgram(
        module, traced.pre_encoder.input_names, traced.pre_encoder.output_names, traced.pre_encoder.examples
    )
    convert_programs(traced, "fp16", "iOS17", tmp_path)
    package = tmp_path / "broken.mlpackage"
    assemble_pipeline(
        tmp_path / "pre_encoder.mlpackage", tmp_path / "head.mlpackage", NVIDIA_HIGH, {}, package
    )
    config = tiny_config(tmp_path, shared_cache, NVIDIA_HIGH)
    figures, failures = _parity(package, config, shared_cache, model, Entry(tmp_path, hit=True))
    assert any("chunk embeddings differ" in failure for failure in failures), figures["per_step_vs_nemo"]


def test_reference_loop_is_nemos_own_streaming(model) -> None:
    """Our loop with NeMo's step reproduces NeMo's `forward_streaming` (async buffers)."""
    audio = reference.synthetic_conversation(20.0, seed=1)
    mel = reference.mel_features(model, audio)
    ours = reference.stream(
        reference.streaming_modules(DEFAULT, 64), DEFAULT, mel, reference.nemo_step(model)
    )
    modules = model.sortformer_modules
    for key, value in DEFAULT.__dict__.items():
        setattr(modules, key, value)
    model.async_streaming = True
    with torch.no_grad():
        nemo = model.forward_streaming(torch.from_numpy(mel), torch.tensor([mel.shape[2]]))[0].numpy()
    assert ours.chunks == int(np.ceil(mel.shape[2] / (DEFAULT.chunk_len * 8)))
    assert ours.spkcache.shape[0] == DEFAULT.spkcache_len, "the stream never filled the speaker cache"
    np.testing.assert_allclose(ours.preds, nemo, atol=1e-5)
