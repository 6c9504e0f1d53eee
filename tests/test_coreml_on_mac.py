"""Core ML itself, on a Mac that can run this project's models (skipped elsewhere): the tiny
pipeline compiles, loads, predicts in a fresh process and here, and its device report is filled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sortformer_build import contract
from sortformer_build.coreml import host, macos
from sortformer_build.coreml.host import COMPUTE_PLAN_MACOS, current_facts
from sortformer_build.coreml.inputs import InputFill, declared_inputs, input_arrays
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.records.device import ComputeUnits

pytestmark = pytest.mark.skipif(
    host.for_target(DeploymentTarget.iOS17).skip is not None,
    reason="needs macOS 14 and coremltools' Core ML library",
)

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sortformer_build.checkpoint.sources import Checkpoint, load_model
    from sortformer_build.coreml.convert import assemble_pipeline, convert_programs
    from sortformer_build.coreml.export import trace
    from sortformer_build.coreml.targets import DeploymentTarget

    model = load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))
    folder = tmp_path_factory.mktemp("on-mac")
    programs = convert_programs(trace(model, DEFAULT), DeploymentTarget.iOS17, folder)
    destination = folder / "Sortformer_test.mlpackage"
    assemble_pipeline(programs, DEFAULT, {}, destination)
    return destination


@pytest.mark.parametrize("units", list(ComputeUnits))
def test_the_pipeline_compiles_loads_and_predicts(
    pipeline: Path, tmp_path: Path, units: ComputeUnits
) -> None:
    compiled = tmp_path / "Sortformer_test.mlmodelc"
    macos.compile_package(pipeline, compiled)
    macos.compile_package(pipeline, compiled)  # onto an existing folder: replaced, not nested
    assert not (compiled / compiled.name).exists()
    figures = macos.first_predict_in_child(compiled, pipeline, units)
    assert figures.load_seconds > 0 and figures.first_predict_seconds > 0
    outputs = macos.load_compiled(compiled, units).predict(
        input_arrays(declared_inputs(pipeline), InputFill.random, 0)
    )
    assert outputs[contract.SPEAKER_PREDS].shape == (1, 242, 4)
    assert outputs[contract.CHUNK_EMBS].shape == (1, 14, 64)
    assert np.isfinite(outputs[contract.SPEAKER_PREDS]).all()


def test_a_wrong_input_is_a_build_error(pipeline: Path) -> None:
    loaded = macos.load_package(pipeline, ComputeUnits.cpu_only)
    with pytest.raises(macos.CoreMLError, match="Core ML prediction failed"):
        loaded.predict({contract.CHUNK: np.zeros((1, 3), dtype=np.float32)})


def test_the_device_report_is_filled(pipeline: Path, tmp_path: Path) -> None:
    report = macos.measure_device(pipeline, tmp_path / "Sortformer_test.mlmodelc", warmup=2, calls=5)
    print(report.markdown())
    assert report.compile_seconds and report.load_seconds and report.first_predict_seconds
    assert report.latency is not None and report.latency.calls == 5
    assert report.peak_rss_bytes and report.peak_rss_bytes > 10_000_000
    if current_facts().macos >= COMPUTE_PLAN_MACOS:
        assert report.compute_plan is not None and report.compute_plan.ops > 0, report.compute_plan_note


def test_the_benchmark_compares_two_packages(pipeline: Path, tmp_path: Path) -> None:
    script = str(Path(sys.executable).with_name("sortformer-build-bench"))
    figures = tmp_path / "bench.json"
    ran = subprocess.run(
        [script, str(pipeline), str(pipeline), "--warmup", "2", "--calls", "10", "--json", str(figures)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "B/A: median " in ran.stdout and figures.exists()
