"""Reading a saved `.mlpackage`: its model spec, the ML program(s) it holds and their weight files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coremltools.proto import MIL_pb2, Model_pb2

from .dtypes import TensorType, tensor_type
from .errors import ExecutorError
from .weights import BlobStore

_DEFAULT_FUNCTION = "main"


@dataclass(frozen=True)
class Var:
    """A named value of a program: a function input or an op output, with its declared type."""

    name: str
    type: TensorType


@dataclass(frozen=True)
class Literal:
    """A constant written into the program itself: an op attribute or an inline argument."""

    value: MIL_pb2.Value
    type: TensorType


Binding = str | Literal  # an op argument: the name of a `Var`, or a `Literal`


@dataclass(frozen=True)
class Operation:
    """One op of a program: its type, its arguments by parameter name, and its declared outputs."""

    type: str
    inputs: Mapping[str, tuple[Binding, ...]]
    outputs: tuple[Var, ...]
    location: str
    has_blocks: bool


@dataclass(frozen=True)
class Function:
    """The function of an ML program that a prediction runs."""

    name: str
    opset: str
    inputs: tuple[Var, ...]
    outputs: tuple[str, ...]
    operations: tuple[Operation, ...]


@dataclass(frozen=True)
class ProgramSpec:
    """One ML program of a package (a pipeline holds several), with the store of its weights."""

    index: int
    function: Function
    blobs: BlobStore


@dataclass(frozen=True)
class PackageSpec:
    """A whole package: its programs in execution order and the names its description declares."""

    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    programs: tuple[ProgramSpec, ...]
    metadata: Mapping[str, str]


def _root_model_file(package: Path) -> Path:
    manifest = package / "Manifest.json"
    if not manifest.is_file():
        raise ExecutorError(f"{package} is not an .mlpackage: Manifest.json is missing")
    entries = json.loads(manifest.read_text())
    root = entries["itemInfoEntries"][entries["rootModelIdentifier"]]
    return package / "Data" / root["path"]


def _binding(binding: MIL_pb2.Argument.Binding) -> Binding:
    if binding.WhichOneof("binding") == "name":
        return binding.name
    return Literal(binding.value, tensor_type(binding.value.type))


def _operation(op: MIL_pb2.Operation, location: str) -> Operation:
    inputs: dict[str, tuple[Binding, ...]] = {
        param: tuple(_binding(b) for b in argument.arguments) for param, argument in op.inputs.items()
    }
    for param, value in op.attributes.items():
        if param == "name":
            continue
        if param in inputs:
            raise ExecutorError(f"{location}: '{param}' is both an input and an attribute")
        inputs[param] = (Literal(value, tensor_type(value.type)),)
    outputs = tuple(Var(o.name, tensor_type(o.type)) for o in op.outputs)
    return Operation(op.type, inputs, outputs, location, has_blocks=len(op.blocks) > 0)


def _function(program: MIL_pb2.Program, name: str, index: int) -> Function:
    if name not in program.functions:
        raise ExecutorError(f"program {index} has no function '{name}' (it has {sorted(program.functions)})")
    function = program.functions[name]
    block = function.block_specializations[function.opset]
    operations = tuple(
        _operation(
            op,
            f"op #{i} ('{op.outputs[0].name if op.outputs else op.type}') of function "
            f"'{name}' in program {index}",
        )
        for i, op in enumerate(block.operations)
    )
    inputs = tuple(Var(v.name, tensor_type(v.type)) for v in function.inputs)
    return Function(name, function.opset, inputs, tuple(block.outputs), operations)


def _programs(model: Model_pb2.Model, model_dir: Path, found: list[ProgramSpec]) -> None:
    kind = model.WhichOneof("Type")
    if kind == "pipeline":
        for sub_model in model.pipeline.models:
            _programs(sub_model, model_dir, found)
        return
    if kind != "mlProgram":
        raise ExecutorError(f"model type '{kind}' is not supported (only ML programs and pipelines)")
    index = len(found)
    name = model.description.defaultFunctionName or _DEFAULT_FUNCTION
    found.append(ProgramSpec(index, _function(model.mlProgram, name, index), BlobStore(model_dir)))


def _features(
    description: Model_pb2.ModelDescription,
) -> Model_pb2.ModelDescription | Model_pb2.FunctionDescription:
    """Where the inputs and outputs are declared: per function in multifunction models."""
    if not description.functions:
        return description
    name = description.defaultFunctionName or _DEFAULT_FUNCTION
    for function in description.functions:
        if function.name == name:
            return function
    raise ExecutorError(f"the model description has no function '{name}'")


def read_package(path: str | Path) -> PackageSpec:
    """Parse a saved `.mlpackage` (one ML program or a pipeline of them) without decoding weights."""
    package = Path(path)
    model_file = _root_model_file(package)
    model = Model_pb2.Model()
    model.ParseFromString(model_file.read_bytes())
    programs: list[ProgramSpec] = []
    _programs(model, model_file.parent, programs)
    features = _features(model.description)
    return PackageSpec(
        path=package,
        input_names=tuple(f.name for f in features.input),
        output_names=tuple(f.name for f in features.output),
        programs=tuple(programs),
        metadata=dict(model.description.metadata.userDefined),
    )
