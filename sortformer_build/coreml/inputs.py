"""The inputs a package declares, and arrays to feed it: zeros, or seeded random values. Read from
the package's specification, so any Core ML model with array inputs can be fed, ours or not."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from sortformer_build.coreml.package import PackageError, read_package

# Core ML's array data types, by their names in the specification, as NumPy types.
_DTYPES: dict[str, type[np.generic]] = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "DOUBLE": np.float64,
    "INT32": np.int32,
    "INT8": np.int8,
}


class InputFill(StrEnum):
    zeros = "zeros"
    random = "random"


@dataclass(frozen=True)
class DeclaredInput:
    name: str
    shape: tuple[int, ...]
    dtype: type[np.generic]

    def describe(self) -> str:
        return f"{self.name} {np.dtype(self.dtype).name}[{', '.join(str(size) for size in self.shape)}]"


def declared_inputs(package: Path) -> tuple[DeclaredInput, ...]:
    """The array inputs of `package`, in declaration order (a flexible shape gives its default)."""
    from coremltools.proto import FeatureTypes_pb2

    names = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    found = []
    for feature in read_package(package).features.input:
        kind = feature.type.WhichOneof("Type")
        if kind != "multiArrayType":
            raise PackageError(f"{package}: input '{feature.name}' is a {kind}, not an array")
        array = feature.type.multiArrayType
        type_name = names.Name(array.dataType)
        if type_name not in _DTYPES:
            raise PackageError(f"{package}: input '{feature.name}' has data type {type_name}")
        shape = tuple(int(size) for size in array.shape)
        found.append(DeclaredInput(feature.name, shape, _DTYPES[type_name]))
    return tuple(found)


def input_arrays(inputs: tuple[DeclaredInput, ...], fill: InputFill, seed: int = 0) -> dict[str, np.ndarray]:
    """One array per input. Random floats are standard normal; random integers are lengths in
    these models, drawn up to the shortest sequence among the float inputs so each is valid
    for every buffer it may count."""
    if fill is InputFill.zeros:
        return {item.name: np.zeros(item.shape, dtype=item.dtype) for item in inputs}
    generator = np.random.default_rng(seed)
    bound = _length_bound(inputs)
    arrays = {}
    for item in inputs:
        if np.issubdtype(item.dtype, np.integer):
            lengths = generator.integers(0, bound, size=item.shape, endpoint=True)
            arrays[item.name] = lengths.astype(item.dtype)
        else:
            arrays[item.name] = generator.standard_normal(item.shape).astype(item.dtype)
    return arrays


def _length_bound(inputs: tuple[DeclaredInput, ...]) -> int:
    sizes = [
        size for item in inputs if np.issubdtype(item.dtype, np.floating) for size in item.shape if size > 1
    ]
    return min(sizes, default=1)
