"""MIL data types: their names, how they are stored, and how the executor holds them."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
from coremltools.proto import MIL_pb2

from .errors import ExecutorError
from .threads import chunk_count, run

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

    def static_shape(self, where: str) -> tuple[int, ...]:
        """The shape, which a value stored in the model (blob or immediate) must fix entirely."""
        dims = self.shape or ()
        fixed = tuple(d for d in dims if d is not None)
        if len(fixed) != len(dims):
            raise ExecutorError(f"{where}: a stored value cannot have the symbolic shape {self.describe()}")
        return fixed


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


# float32 bit patterns: the sign, the magnitude (sign cleared), the exponent field; from 65520 up a
# value rounds to infinity; above infinity lie the NaNs.
_SIGN = np.uint32(0x80000000)
_MAGNITUDE = np.uint32(0x7FFFFFFF)
_EXPONENT = np.uint32(0x7F800000)
_OVERFLOW = np.uint32(0x477FF000)
_INFINITY = np.uint32(0x7F800000)
# The exponent field of 2**-14, float16's smallest normal exponent, and of the factor 2**13: float16
# keeps 10 of float32's 23 mantissa bits, so 13 are dropped.
_SMALLEST_EXPONENT = np.uint32(113 << 23)
_DROPPED = np.uint32(13 << 23)


@numba.njit(nogil=True)
def _round_flat(values: np.ndarray) -> bool:
    """Round a 1-D float32 array to float16 values in place; returns whether it holds NaNs (left as is).

    A magnitude m with exponent e (at least -14, float16's smallest normal one) is rounded by float32's
    own addition: in m + 2**(e+13) the last kept bit is worth 2**(e-10), float16's spacing at e (and, at
    -14, its subnormal spacing), so the sum is m rounded to nearest, ties to even, and subtracting
    2**(e+13) again is exact. The sign is put back after. A value past the float16 range becomes
    infinity. The loop has no branches, so it compiles to SIMD.
    """
    bits = values.view(np.uint32)
    has_nan = False
    for i in range(bits.size):
        pattern = bits[i]
        magnitude = np.uint32(pattern & _MAGNITUDE)
        sign = np.uint32(pattern & _SIGN)
        exponent = np.uint32(max(np.uint32(magnitude & _EXPONENT), _SMALLEST_EXPONENT))
        scale = np.uint32(exponent + _DROPPED).view(np.float32)
        size = magnitude.view(np.float32)
        rounded = np.uint32(np.float32((size + scale) - scale).view(np.uint32) | sign)
        infinite = np.uint32(sign | _INFINITY)
        bits[i] = rounded if magnitude < _OVERFLOW else (infinite if magnitude <= _INFINITY else pattern)
        has_nan |= bool(magnitude > _INFINITY)
    return has_nan


def round_to_fp16(values: npt.ArrayLike, *, reuse: bool = False, threads: int = 1) -> np.ndarray:
    """float32 values rounded to the nearest float16 (ties to even), still held as float32.

    Same result as `values.astype(np.float16).astype(np.float32)`, bit for bit, in one compiled pass
    instead of NumPy's two conversions, split over up to `threads` threads. The result is a new array
    in the memory layout of `values`; with `reuse` (the caller vouches that nothing else reads
    `values`), a writeable float32 `values` held in one block of memory is rounded in place and
    returned.
    """
    array = np.asarray(values)
    if reuse and array.dtype == np.float32 and array.flags.writeable:
        flat = array.ravel(order="K")
        if np.may_share_memory(flat, array):  # a view: the array is one block of memory
            round_in_place(flat, threads)
            return array
    rounded = np.array(array, dtype=np.float32, order="K")
    round_in_place(rounded.ravel(order="K"), threads)
    return rounded


def round_in_place(flat: np.ndarray, threads: int = 1) -> None:
    """Round a 1-D float32 array (or a contiguous view) to float16 values in place."""
    chunks = chunk_count(flat.size, threads)
    if chunks == 1:
        _round_chunk(flat)
    else:
        run(lambda start, stop: _round_chunk(flat[start:stop]), flat.size, chunks)


def _round_chunk(flat: np.ndarray) -> None:
    if _round_flat(flat):
        # NumPy's own conversion, so that NaN payloads come out as NumPy makes them.
        nan = np.isnan(flat)
        flat[nan] = flat[nan].astype(np.float16).astype(np.float32)
