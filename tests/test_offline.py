"""The offline model (one program over a whole window): built from the tiny checkpoint for both
release compressions, its contract read back from the saved package, its padded frames as
NeMo gives them, and the lint catching a palettized subsampling."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from coremltools.proto import Model_pb2

from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    ExecutorPrecision,
    PalettizerEngine,
    VariantConfig,
    VariantMode,
)
from sortformer_build.coreml.palettize import palettize_program
from sortformer_build.executor import load_package
from sortformer_build.geometry import OfflineGeometry
from sortformer_build.job.build import BuildResult, build
from sortformer_build.store.cache import ArrayStore
from sortformer_build.verify.lint import Expectation, lint_package

from .conftest import OFFLINE, SCRIPT
from .test_stages import PALETTIZED6
from .test_verification import FP16

FILE_NAME, WINDOW = OFFLINE["offline"]
FLOAT32, INT32 = 65568, 131104
LUT = "constexpr_lut_to_dense"
VERIFY = str(Path(SCRIPT).with_name("sortformer-build-verify"))


def offline_config(output: Path, cache: Path, compression=FP16) -> BuildConfig:
    variant = VariantConfig(
        name="offline", version="v2.1", file_name=FILE_NAME, mode=VariantMode.offline, window_frames=WINDOW
    )
    return BuildConfig(
        variant=variant,
        compression=compression,
        checkpoint=CheckpointConfig(source="tiny"),
        output_dir=str(output),
        cache_dir=str(cache),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, BuildResult]:
    """Both twins from one conversion, by calling the library."""
    output = tmp_path_factory.mktemp("offline")
    return {
        compression.name: build(offline_config(output, shared_cache, compression))
        for compression in (FP16, PALETTIZED6)
    }


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path):
    return load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))


def _spec(package: Path) -> Model_pb2.Model:
    spec = Model_pb2.Model()
    spec.ParseFromString((package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    return spec


def _operations(spec: Model_pb2.Model) -> list:
    function = spec.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


@pytest.mark.parametrize("compression", ["fp16", "palettized6"])
def test_the_saved_package_meets_the_offline_contract(built, compression: str) -> None:
    spec = _spec(built[compression].package)
    assert spec.WhichOneof("Type") == "mlProgram", "one program, no pipeline"
    features = {
        kind: {f.name: (f.type.multiArrayType.dataType, tuple(f.type.multiArrayType.shape)) for f in declared}
        for kind, declared in (("in", spec.description.input), ("out", spec.description.output))
    }
    assert features == {
        "in": {"mel": (FLOAT32, (1, 128, WINDOW)), "mel_length": (INT32, (1,))},
        "out": {"speaker_preds": (FLOAT32, (1, WINDOW // 8, 4))},
    }
    metadata = dict(spec.description.metadata.userDefined)
    assert metadata["window_frames"] == str(WINDOW) and metadata["subsampling_factor"] == "8"
    assert metadata["frame_duration"] == "0.08" and metadata["checkpoint_version"] == "v2.1"
    assert spec.specificationVersion <= 8, "newer than iOS17 / macOS14"


def test_only_the_palettized_twin_has_lookup_tables_and_never_in_the_subsampling(built) -> None:
    fp16, palettized = (_operations(_spec(built[name].package)) for name in ("fp16", "palettized6"))
    assert not [op for op in fp16 if op.type == LUT]
    tables = [op for op in palettized if op.type == LUT]
    assert tables and {
        op.attributes["lut"].type.tensorType.dimensions[-1].constant.size for op in tables
    } == {64}
    subsampling = [op for op in palettized if "subsampling" in op.outputs[0].name]
    assert subsampling and all(op.type == "const" for op in subsampling)


def test_twins_are_verified_from_one_conversion(built) -> None:
    for compression, result in built.items():
        statuses = {step.name: step.status for step in result.manifest.steps}
        assert statuses["lint"] == statuses["parity"] == "verified", compression
        assert statuses["on-device"] == "skipped"
        figures = result.manifest.verification.parity
        assert figures is not None and figures.streaming_vs_nemo is None
        assert len(figures.per_call_vs_nemo.cases) == 3
    assert {step.name: step.status for step in built["palettized6"].manifest.steps}["programs"] == "cached"
    fp16 = built["fp16"].manifest.verification.parity
    assert fp16.per_call_vs_nemo.overall.prob_spread > 0.2, "synthetic outputs are not decisive enough"
    assert built["palettized6"].manifest.verification.parity.per_call_vs_fp16 is not None
    assert built["fp16"].manifest.shapes.latency_seconds == 30.72


@pytest.mark.parametrize("valid", [1001, 3069])
def test_a_short_padded_window_comes_out_as_nemo_gives_it(built, model, valid: int) -> None:
    """Past the valid length NeMo masks the probabilities to zero; 3069 mel frames would round
    to 3068 under fp16 length arithmetic and shift the last valid frame."""
    mel = np.random.default_rng(valid).standard_normal((1, 128, WINDOW), dtype=np.float32)
    mel[:, :, valid:] = 0.0
    with torch.no_grad():
        embs, lengths = model.frontend_encoder(
            processed_signal=torch.from_numpy(mel), processed_signal_length=torch.tensor([valid])
        )
        nemo = model.forward_infer(embs, lengths)[0].numpy()
    inputs = {"mel": mel, "mel_length": np.array([valid], dtype=np.int32)}
    ours = load_package(built["fp16"].package).predict(inputs, precision=ExecutorPrecision.float16.value)
    preds = ours["speaker_preds"][0]
    frames = int(lengths[0])
    assert np.abs(preds - nemo).max() < 1e-2
    assert np.all(preds[frames:] == 0.0) and np.all(nemo[frames:] == 0.0)
    assert np.abs(preds[frames - 1]).max() > 0.0


def test_a_palettized_subsampling_is_caught(built, tmp_path: Path) -> None:
    fp16 = built["fp16"].package
    everything = tmp_path / "everything.mlpackage"
    palettize_program(fp16, 6, PalettizerEngine.fast, everything, ArrayStore(None))
    expected = Expectation(geometry=OfflineGeometry(WINDOW), nbits=6)
    findings = lint_package(everything, expected)
    assert any("subsampling weights are palettized" in finding for finding in findings), findings
    # Metadata is on the assembled package only: the bare program also fails for that.
    assert any(finding.startswith("metadata:") for finding in findings)


def test_the_verify_command_passes_both_twins(built) -> None:
    """The console script reads the kind from the package's metadata, the compression from the
    manifest beside it."""
    packages = [str(result.package) for result in built.values()]
    run = subprocess.run([VERIFY, *packages], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": ok\n") == 2, run.stdout


def test_a_wrong_window_in_the_metadata_is_caught(built) -> None:
    expected = Expectation(geometry=dataclasses.replace(OfflineGeometry(WINDOW), window_frames=1536))
    findings = lint_package(built["fp16"].package, expected)
    assert any("differs from the expected" in finding for finding in findings), findings
