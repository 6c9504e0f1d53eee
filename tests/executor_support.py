"""Helpers for the executor tests: build small MIL programs, save them as packages, load them back."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path

import coremltools as ct
import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Program, types
from coremltools.proto import Model_pb2

from sortformer_build.executor import Model, load_package

IOS17 = ct.target.iOS17
_MIL_DTYPES = {np.dtype(np.float32): types.fp32, np.dtype(np.int32): types.int32}
_counter = itertools.count()


def save(mlmodel: ct.models.MLModel, directory: Path) -> Path:
    path = directory / f"model_{next(_counter)}.mlpackage"
    mlmodel.save(str(path))
    return path


def convert(
    prog: Program,
    *,
    precision: ct.precision = ct.precision.FLOAT32,
    target: ct.target = IOS17,
    optimize: bool = False,
) -> ct.models.MLModel:
    """Convert without graph passes unless asked, so the ops under test reach the package as built."""
    return ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=target,
        compute_precision=precision,
        pass_pipeline=ct.PassPipeline.DEFAULT if optimize else ct.PassPipeline.EMPTY,
    )


def build(
    directory: Path,
    body: Callable[..., object],
    inputs: Mapping[str, np.ndarray],
    *,
    target: ct.target = IOS17,
    precision: ct.precision = ct.precision.FLOAT32,
    optimize: bool = False,
) -> Model:
    """Make `body` (arguments named like `inputs`, in order) a program, save it, load it with the executor."""
    specs = [mb.TensorSpec(shape=v.shape, dtype=_MIL_DTYPES[v.dtype]) for v in inputs.values()]
    prog = mb.program(input_specs=specs, opset_version=target)(body)
    path = save(convert(prog, precision=precision, target=target, optimize=optimize), directory)
    return load_package(path)


def run(
    directory: Path,
    body: Callable[..., object],
    inputs: Mapping[str, np.ndarray],
    precision: str = "float32",
    target: ct.target = IOS17,
) -> dict[str, np.ndarray]:
    return build(directory, body, inputs, target=target).predict(dict(inputs), precision)


def read_spec(path: Path) -> Model_pb2.Model:
    spec = Model_pb2.Model()
    spec.ParseFromString((path / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
    return spec


def write_spec(path: Path, spec: Model_pb2.Model) -> None:
    (path / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec.SerializeToString())
