"""The verification stages catch broken packages, and the reference is NeMo's own streaming."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.cli.verify import main as verify_main
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    ExecutorPrecision,
    GateConfig,
    VariantConfig,
    VerifyConfig,
)
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.coreml.package import read_package, write_spec
from sortformer_build.executor.step import package_step
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.job.build import build
from sortformer_build.records.parity import ParityFigures
from sortformer_build.verify import reference
from sortformer_build.verify.compare import compute_reference, package_figures
from sortformer_build.verify.gates import gate
from sortformer_build.verify.lint import Expectation, lint_package

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)
NVIDIA_HIGH = StreamingGeometry(340, 1, 40, 40, 188, 300)


FP16_GATES = GateConfig(max_prob_error=0.01, min_decision_agreement=0.999)
FP16 = CompressionConfig(name="fp16", folder="fp16", gates=FP16_GATES)


def tiny_config(
    output: Path, cache: Path, geometry: StreamingGeometry = DEFAULT, compression: CompressionConfig = FP16
) -> BuildConfig:
    return BuildConfig(
        variant=VariantConfig(name="test", version="v2.1", file_name="Sortformer_test", **geometry.__dict__),
        compression=compression,
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
    saved = read_package(package)
    edit(saved.spec)
    write_spec(saved, saved.spec)


def _parity(package: Path, geometry: StreamingGeometry, model) -> tuple[ParityFigures, list[str]]:
    """An fp16 package's figures against NeMo, judged by the fp16 gates."""
    settings = VerifyConfig()
    data = compute_reference(model, geometry, 64, settings)
    step = package_step(package, ExecutorPrecision.float16)
    figures = package_figures(step, data, geometry, 64, ExecutorPrecision.float16).figures
    return figures, gate(figures, FP16_GATES, settings.max_emb_error_ratio)


def test_good_package_is_verified_with_figures(built) -> None:
    result, _ = built
    statuses = {step.name: step.status for step in result.manifest.steps}
    assert statuses["lint"] == statuses["parity"] == "verified"
    figures = result.manifest.verification.parity
    assert figures is not None and figures.streaming_vs_nemo is not None
    steps = figures.per_call_vs_nemo
    assert steps.lengths_equal and steps.overall.max_abs_prob_error < 1e-2
    assert steps.overall.prob_spread > 0.2, "synthetic outputs are not decisive enough to test anything"
    assert figures.streaming_vs_nemo.chunks >= 2


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


def swap_two_head_weights(spec) -> None:
    """Point two same-shaped head weight matrices at each other's data: a plausible converter
    bug that keeps every shape, name and type intact."""
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


def swapped_weights_copy(package: Path, folder: Path) -> Path:
    copy = _copy(package, folder)
    _edit_spec(copy, swap_two_head_weights)
    return copy


def test_swapped_weights_fail_parity(built, tmp_path: Path, shared_cache: Path, model) -> None:
    result, config = built
    package = swapped_weights_copy(result.package, tmp_path)
    assert lint_package(package, Expectation(geometry=DEFAULT, d_model=64)) == []
    figures, failures = _parity(package, config.variant.geometry, model)
    assert failures, figures.per_call_vs_nemo.overall


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


def test_fp16_length_arithmetic_on_a_long_chunk_fails_parity(tmp_path: Path, model) -> None:
    """NvidiaHigh's 3048-frame chunk: fp16 rounds NeMo's float length maths, one frame is
    masked too early; float16 execution catches it, float32 execution would not."""
    from sortformer_build.coreml.convert import assemble_pipeline, convert_programs
    from sortformer_build.coreml.export import TracedProgram, trace
    from sortformer_build.coreml.targets import DeploymentTarget

    traced = trace(model, NVIDIA_HIGH)
    broken = FloatLengthPreEncoder(model).eval()
    with torch.no_grad():
        module = torch.jit.trace(broken, traced.pre_encoder.examples, check_trace=False)
    traced.pre_encoder = TracedProgram(
        module, traced.pre_encoder.input_names, traced.pre_encoder.output_names, traced.pre_encoder.examples
    )
    files = convert_programs(traced, DeploymentTarget.iOS17, tmp_path)
    package = tmp_path / "broken.mlpackage"
    assemble_pipeline(files, NVIDIA_HIGH, {}, package)
    figures, failures = _parity(package, NVIDIA_HIGH, model)
    assert any("chunk embeddings differ" in failure for failure in failures), figures.per_call_vs_nemo


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


PALETTIZED6 = CompressionConfig(
    name="palettized6",
    folder="palettized",
    nbits=6,
    gates=GateConfig(min_decision_agreement=0.97, min_twin_decision_agreement=0.97),
)


@pytest.fixture(scope="module")
def programs(model, tmp_path_factory: pytest.TempPathFactory) -> ProgramFiles:
    """The tiny model's Default programs, converted for these tests."""
    from sortformer_build.coreml.convert import convert_programs
    from sortformer_build.coreml.export import trace
    from sortformer_build.coreml.targets import DeploymentTarget

    return convert_programs(
        trace(model, DEFAULT), DeploymentTarget.iOS17, tmp_path_factory.mktemp("programs")
    )


def _palettized(program: Path, destination: Path) -> Path:
    from sortformer_build.config import PalettizerEngine
    from sortformer_build.coreml.palettize import palettize_program
    from sortformer_build.store.cache import ArrayStore

    palettize_program(program, 6, PalettizerEngine.fast, destination, ArrayStore(None))
    return destination


def _pipeline(pre_encoder: Path, head: Path, destination: Path) -> Path:
    from sortformer_build.coreml.convert import assemble_pipeline

    assemble_pipeline(ProgramFiles(pre_encoder, head), DEFAULT, {}, destination)
    return destination


@pytest.fixture(scope="module")
def palettized_package(programs: ProgramFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("palettized")
    head = _palettized(programs.head, folder / "head.mlpackage")
    return _pipeline(programs.pre_encoder, head, folder / "Sortformer_test.mlpackage")


def _findings(package: Path, nbits: int | None) -> list[str]:
    return lint_package(package, Expectation(geometry=DEFAULT, d_model=64, nbits=nbits))


def test_a_palettized_package_passes_lint_as_what_it_is(palettized_package: Path) -> None:
    assert _findings(palettized_package, 6) == []


def test_lookup_tables_of_the_wrong_size_are_caught(palettized_package: Path) -> None:
    assert "compression: look-up tables of [64] entries in a 4-bit build" in _findings(palettized_package, 4)


def test_an_fp16_build_carrying_lookup_tables_is_caught(palettized_package: Path) -> None:
    assert any(
        finding.startswith("compression: an fp16 build has")
        for finding in _findings(palettized_package, None)
    )


def test_a_palettized_pre_encoder_is_caught(programs: ProgramFiles, tmp_path: Path) -> None:
    pre_encoder = _palettized(programs.pre_encoder, tmp_path / "pre_encoder.mlpackage")
    head = _palettized(programs.head, tmp_path / "head.mlpackage")
    package = _pipeline(pre_encoder, head, tmp_path / "Sortformer_test.mlpackage")
    assert "compression: the pre-encoder is palettized; it must keep full-precision weights" in _findings(
        package, 6
    )


def test_linear_int8_weights_are_caught(programs: ProgramFiles, tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    head = ct.models.MLModel(str(programs.head), skip_model_load=True)
    config = OptimizationConfig(
        global_config=OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=512)
    )
    linear_quantize_weights(head, config).save(str(tmp_path / "head.mlpackage"))
    package = _pipeline(
        programs.pre_encoder, tmp_path / "head.mlpackage", tmp_path / "Sortformer_test.mlpackage"
    )
    assert any("has linear weight quantization" in finding for finding in _findings(package, None))


def test_a_palettized_build_failing_its_gate_against_the_fp16_twin_is_not_published(
    tmp_path: Path, shared_cache: Path
) -> None:
    from sortformer_build.stages.steps import StepFailed

    # Even 1-bit tables flip no decision of the tiny model, so the threshold is out of reach: the
    # test is that the twin's figures are measured, gated, and stop the build.
    crushed = CompressionConfig(
        name="palettized1", folder="palettized1", nbits=1, gates=GateConfig(min_twin_decision_agreement=1.01)
    )
    with pytest.raises(StepFailed, match=r"decisions at 0\.5 agreeing with the fp16 twin per call"):
        build(tiny_config(tmp_path, shared_cache, compression=crushed))
    # Nothing published, not even the empty release folder.
    assert not (tmp_path / "palettized1").exists()
