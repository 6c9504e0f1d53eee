"""MIL data types: their names, how they are stored, and how the executor holds them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coremltools.proto import MIL_pb2

from .errors import ExecutorError

_PROTO_NAMES: dict[int, str] = {
    MIL_pb2.BOOL: "bool",
    MIL_pb2.STRING: "string",
    MIL_pb2.FLOAT16: "fp16",
    MIL_pb2.FLOAT32: "fp32",
    MIL_pb2.FLOAT64: "fp64",
    MIL_pb2.BFLOAT16: "bf16",
    MIL_pb2.FLOAT8E4M3FN: "fp8e4m3fn",
    MIL_pb2.FLOAT8E5M2: "fp8e5m2",
    MIL_pb2.INT4: "int4",
    MIL_pb2.INT8: "int8",
    MIL_pb2.INT16: "int16",
    MIL_pb2.INT32: "int32",
    MIL_pb2.INT64: "int64",
    MIL_pb2.UINT1: "uint1",
    MIL_pb2.UINT2: "uint2",
    MIL_pb2.UINT3: "uint3",
    MIL_pb2.UINT4: "uint4",
    MIL_pb2.UINT6: "uint6",
    MIL_pb2.UINT8: "uint8",
    MIL_pb2.UINT16: "uint16",
    MIL_pb2.UINT32: "uint32",
    MIL_pb2.UINT64: "uint64",
}

_STORAGE: dict[str, type[np.generic]] = {
    "bool": np.bool_,
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int4": np.int8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint1": np.uint8,
    "uint2": np.uint8,
    "uint3": np.uint8,
    "uint4": np.uint8,
    "uint6": np.uint8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
}

SUB_BYTE_BITS: dict[str, int] = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}


def dtype_name(proto_dtype: int) -> str:
    """The MIL name ("fp16", "int32", ...) of a `MIL_pb2.DataType` value."""
    try:
        return _PROTO_NAMES[proto_dtype]
    except KeyError:
        raise ExecutorError(f"unknown MIL data type enum value {proto_dtype}") from None


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype that stores values of MIL type `name` exactly (sub-byte types unpacked)."""
    try:
        return np.dtype(_STORAGE[name])
    except KeyError:
        raise ExecutorError(f"MIL data type '{name}' has no NumPy representation here") from None


def compute_dtype(name: str) -> np.dtype:
    """The dtype the executor holds values of MIL type `name` in: fp16 is held as float32."""
    return np.dtype(np.float32) if name == "fp16" else storage_dtype(name)


@dataclass(frozen=True)
class TensorType:
    """A declared tensor type; `None` dims are symbolic and a `None` shape has unknown rank."""

    dtype: str
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.dtype}[*]"
        return f"{self.dtype}[{', '.join('?' if d is None else str(d) for d in self.shape)}]"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want is None or want == got for want, got in zip(self.shape, shape, strict=True))


def tensor_type(value_type: MIL_pb2.ValueType) -> TensorType:
    """The `TensorType` of a proto `ValueType`; other value kinds (lists, states...) are refused."""
    kind = value_type.WhichOneof("type")
    if kind != "tensorType":
        raise ExecutorError(f"value type '{kind}' is not supported (only tensors are)")
    tensor = value_type.tensorType
    dims = list(tensor.dimensions)
    if tensor.rank < 0 or any(d.WhichOneof("dimension") == "unknown" and d.unknown.variadic for d in dims):
        return TensorType(dtype_name(tensor.dataType), None)
    shape = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in dims)
    return TensorType(dtype_name(tensor.dataType), shape)


# float16 keeps 11 significant bits; its normal exponents start at 2**-14 (biased float32 exponent 113),
# below which the spacing stays 2**-24; values from 65520 up round to infinity.
_FP16_MIN_NORMAL_EXPONENT = np.uint32(113)
_FP16_OVERFLOW = np.float32(65520.0)


def round_to_fp16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float16 (ties to even), still held as float32.

    Same result as `values.astype(np.float16).astype(np.float32)`, without NumPy's slow per-element
    float16 conversion: scale each value so that its float16 spacing becomes 1, round to an integer,
    scale back. Spacings are powers of two read from the float32 exponent, so every step is exact.
    """
    values = np.asarray(values, dtype=np.float32)
    exponent = np.maximum(
        (values.view(np.uint32) >> np.uint32(23)) & np.uint32(0xFF), _FP16_MIN_NORMAL_EXPONENT
    )
    spacing = ((exponent - np.uint32(10)) << np.uint32(23)).view(np.float32)
    inverse_spacing = ((np.uint32(264) - exponent) << np.uint32(23)).view(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = np.rint(values * inverse_spacing) * spacing
        overflow_or_nan = ~(np.abs(values) < _FP16_OVERFLOW)
        if overflow_or_nan.any():
            rounded[overflow_or_nan] = values[overflow_or_nan].astype(np.float16).astype(np.float32)
    return rounded
