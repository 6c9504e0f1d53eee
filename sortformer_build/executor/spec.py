"""The executor's view of a saved package: functions, typed values and ops, over the shared reader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coremltools.proto import MIL_pb2

from sortformer_build.coreml.package import SavedProgram
from sortformer_build.coreml.package import read_package as read_saved_package

from .dtypes import TensorType, tensor_type
from .errors import ExecutorError
from .weights import BlobStore


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


def _function(saved: SavedProgram) -> Function:
    name, index = saved.function_name, saved.index
    function = saved.function
    operations = tuple(
        _operation(
            op,
            f"op #{i} ('{op.outputs[0].name if op.outputs else op.type}') of function "
            f"'{name}' in program {index}",
        )
        for i, op in enumerate(saved.operations)
    )
    inputs = tuple(Var(v.name, tensor_type(v.type)) for v in function.inputs)
    return Function(name, saved.opset, inputs, saved.output_names, operations)


def read_package(path: str | Path) -> PackageSpec:
    """The executor's view of a saved package (one ML program or a pipeline of them); weights
    are decoded on use."""
    saved = read_saved_package(Path(path))
    features = saved.features
    return PackageSpec(
        path=saved.path,
        input_names=tuple(f.name for f in features.input),
        output_names=tuple(f.name for f in features.output),
        programs=tuple(
            ProgramSpec(program.index, _function(program), BlobStore(program.model_dir))
            for program in saved.programs
        ),
        metadata=saved.metadata,
    )
