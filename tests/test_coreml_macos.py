"""The macOS half as far as Linux can take it: assembly that never asks Core ML to load, the
inputs a package declares, the Core ML wrappers refusing with coremltools' own errors, a first
prediction that fails in its child process, and the benchmark command's argument checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sortformer_build import contract
from sortformer_build.coreml import macos
from sortformer_build.coreml.coreml_errors import CoreMLError
from sortformer_build.coreml.inputs import InputFill, declared_inputs, input_arrays
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.coreml.package import package_digest
from sortformer_build.errors import BuildError
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.records.device import ComputeUnits

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)
BENCH = str(Path(sys.executable).with_name("sortformer-build-bench"))
on_linux = pytest.mark.skipif(sys.platform == "darwin", reason="what Core ML refuses off macOS")


@pytest.fixture(scope="module")
def programs(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ProgramFiles:
    from sortformer_build.checkpoint.sources import Checkpoint, load_model
    from sortformer_build.coreml.convert import convert_programs
    from sortformer_build.coreml.export import trace
    from sortformer_build.coreml.targets import DeploymentTarget

    model = load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))
    folder = tmp_path_factory.mktemp("programs")
    return convert_programs(trace(model, DEFAULT), DeploymentTarget.iOS17, folder)


@pytest.fixture(scope="module")
def pipeline(programs: ProgramFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sortformer_build.coreml.convert import assemble_pipeline

    destination = tmp_path_factory.mktemp("pipeline") / "Sortformer_test.mlpackage"
    assemble_pipeline(programs, DEFAULT, {}, destination)
    return destination


def test_assembly_never_asks_core_ml_to_load(
    programs: ProgramFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every MLModel made while assembling is made with skip_model_load (on macOS, a model made
    without it is compiled and loaded, Neural Engine included)."""
    from coremltools.models.model import MLModel

    from sortformer_build.coreml.convert import assemble_pipeline

    original = MLModel._get_proxy_and_spec
    loads: list[bool] = []

    def spy(self: Any, filename: str, compute_units: Any, skip_model_load: bool = False, **rest: Any) -> Any:
        loads.append(not skip_model_load)
        return original(self, filename, compute_units, skip_model_load=skip_model_load, **rest)

    monkeypatch.setattr(MLModel, "_get_proxy_and_spec", spy)
    assemble_pipeline(programs, DEFAULT, {}, tmp_path / "Sortformer_test.mlpackage")
    assert loads and not any(loads), f"{sum(loads)} of {len(loads)} models were loaded"


def test_the_pipeline_is_the_one_coremltools_makes(
    programs: ProgramFiles, pipeline: Path, tmp_path: Path
) -> None:
    """Same programs, weights and descriptions as `ct.utils.make_pipeline` (which, off macOS,
    cannot load what it makes either)."""
    import coremltools as ct

    from sortformer_build.coreml.convert import drop_volatile_metadata, unloaded_pipeline
    from sortformer_build.coreml.package import make_spec_deterministic

    paths = (programs.pre_encoder, programs.head)
    ours, theirs = tmp_path / "ours.mlpackage", tmp_path / "theirs.mlpackage"
    made = ct.utils.make_pipeline(*(ct.models.MLModel(str(path), skip_model_load=True) for path in paths))
    for model, destination in ((unloaded_pipeline(paths), ours), (made, theirs)):
        drop_volatile_metadata(model)
        model.save(str(destination))
        make_spec_deterministic(destination)
    assert package_digest(ours) == package_digest(theirs)
    weights = sorted(path.name for path in (ours / "Data" / "com.apple.CoreML" / "weights").iterdir())
    assert weights == ["0-weight.bin", "1-weight.bin"]


def test_declared_inputs_are_the_contract(pipeline: Path) -> None:
    inputs = {item.name: (item.shape, np.dtype(item.dtype)) for item in declared_inputs(pipeline)}
    assert inputs == {
        contract.CHUNK: ((1, 112, 128), np.dtype(np.float32)),
        contract.CHUNK_LENGTHS: ((1,), np.dtype(np.int32)),
        contract.SPKCACHE: ((1, 188, 64), np.dtype(np.float32)),
        contract.SPKCACHE_LENGTHS: ((1,), np.dtype(np.int32)),
        contract.FIFO: ((1, 40, 64), np.dtype(np.float32)),
        contract.FIFO_LENGTHS: ((1,), np.dtype(np.int32)),
    }


def test_inputs_are_zeros_or_seeded_random_of_the_declared_shapes(pipeline: Path) -> None:
    inputs = declared_inputs(pipeline)
    zeros = input_arrays(inputs, InputFill.zeros)
    assert all(not array.any() for array in zeros.values())
    first, again = input_arrays(inputs, InputFill.random, 3), input_arrays(inputs, InputFill.random, 3)
    other = input_arrays(inputs, InputFill.random, 4)
    for item in inputs:
        assert first[item.name].shape == item.shape and first[item.name].dtype == item.dtype
        np.testing.assert_array_equal(first[item.name], again[item.name])
    assert not np.array_equal(first[contract.CHUNK], other[contract.CHUNK])
    # Lengths stay valid for the shortest buffer they may count (the 40-frame FIFO).
    lengths = [int(first[name][0]) for name in (contract.CHUNK_LENGTHS, contract.SPKCACHE_LENGTHS)]
    assert all(0 <= length <= 40 for length in lengths)


@on_linux
def test_compiling_off_macos_fails_with_coremltools_words_and_leaves_nothing(
    pipeline: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "Sortformer_test.mlmodelc"
    with pytest.raises(CoreMLError) as caught:
        macos.compile_package(pipeline, destination)
    assert str(caught.value) == (
        "Sortformer_test.mlpackage does not compile with Core ML: "
        "Compiling a Core ML models is only support on macOS 10.13 or higher."
    )
    assert list(tmp_path.iterdir()) == []


@on_linux
def test_loading_off_macos_fails_as_a_build_error(tmp_path: Path) -> None:
    refused = r"^model.mlmodelc does not load with Core ML \(compute units cpu_only\): "
    with pytest.raises(BuildError, match=refused):
        macos.load_compiled(tmp_path / "model.mlmodelc", ComputeUnits.cpu_only)


@on_linux
def test_a_first_prediction_that_fails_in_its_child(pipeline: Path, tmp_path: Path) -> None:
    """The real child function, refused by coremltools off macOS: the failure comes back as one
    line naming the check."""
    with pytest.raises(CoreMLError) as caught:
        macos.first_predict_in_child(tmp_path / "Sortformer_test.mlmodelc", pipeline, ComputeUnits.all)
    assert str(caught.value).startswith(
        "Sortformer_test.mlmodelc: the first prediction with compute units all failed: "
        "Sortformer_test.mlmodelc does not load with Core ML (compute units all): Loading compiled"
    )


def test_a_refused_prediction_is_a_build_error_with_core_mls_line() -> None:
    class Refusing:
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise RuntimeError('{\n    NSLocalizedDescription = "Input chunk has the wrong shape.";\n}')

    loaded = macos.LoadedModel(Refusing(), "Sortformer_test.mlmodelc", ComputeUnits.all)
    refused = r"^Sortformer_test.mlmodelc: Core ML prediction failed: Input chunk has the wrong shape.$"
    with pytest.raises(CoreMLError, match=refused):
        loaded.predict({})


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=120, check=False)


def test_bench_reports_a_missing_package_first(tmp_path: Path) -> None:
    ran = _bench(str(tmp_path / "missing.mlpackage"), str(tmp_path / "other.mlpackage"))
    assert ran.returncode == 2
    assert ran.stderr == f"sortformer-build-bench: {tmp_path / 'missing.mlpackage'} does not exist\n"
    (tmp_path / "notes.txt").write_text("")
    ran = _bench(str(tmp_path / "notes.txt"), str(tmp_path / "notes.txt"))
    assert ran.returncode == 2 and "is not an .mlpackage folder" in ran.stderr


def test_bench_refuses_bad_counts(pipeline: Path) -> None:
    ran = _bench(str(pipeline), str(pipeline), "--calls", "0")
    assert ran.returncode == 2 and "argument --calls: must be at least 1, got 0" in ran.stderr


@on_linux
def test_bench_says_it_needs_macos_without_importing_torch(pipeline: Path) -> None:
    ran = _bench(str(pipeline), str(pipeline), "--compute-units", "cpu_and_ne")
    assert ran.returncode == 1
    assert ran.stderr == (
        "sortformer-build-bench needs macOS: Core ML cannot compile, load or run models on Linux\n"
    )
    probe = (
        "import sys\nfrom sortformer_build.cli.bench import main\n"
        f"main([{str(pipeline)!r}, {str(pipeline)!r}])\n"
        "print(sorted(name for name in ('torch', 'coremltools', 'nemo') if name in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_bench_refuses_models_with_different_inputs(pipeline: Path, programs: ProgramFiles) -> None:
    from sortformer_build.cli.bench import bench

    different = r"^A and B declare different inputs: Sortformer_test.mlpackage \(chunk float32\[1, 112, 128\]"
    with pytest.raises(BuildError, match=different):
        bench(pipeline, programs.head, ComputeUnits.all, InputFill.zeros, 0, 1, 1)
