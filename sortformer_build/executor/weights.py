"""Decoding of constant values: immediate proto values and MIL blob storage files (`weight.bin`).

Blob storage format, version 2 (all little-endian, every record 64-byte aligned):
  file header   uint32 count, uint32 version (= 2), 7 x uint64 reserved
  per blob      metadata: uint32 sentinel (0xDEADBEEF), uint32 blob data type, uint64 size in bytes,
                uint64 absolute offset of the data, 5 x uint64 reserved; then the raw data.
A `BlobFileValue` names the file and the offset of a blob's *metadata* record. Sub-byte types are
packed least significant bit first, element after element, across byte boundaries.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
from coremltools.proto import MIL_pb2

from .dtypes import SUB_BYTE_BITS, TensorType, storage_dtype, tensor_type
from .errors import ExecutorError

_FILE_HEADER = struct.Struct("<II")
_BLOB_METADATA = struct.Struct("<IIQQ")
_SENTINEL = 0xDEADBEEF
_MODEL_PATH_PREFIX = "@model_path/"

_BLOB_DTYPES: dict[int, str] = {
    1: "fp16",
    2: "fp32",
    3: "uint8",
    4: "int8",
    5: "bf16",
    6: "int16",
    7: "uint16",
    8: "int4",
    9: "uint1",
    10: "uint2",
    11: "uint4",
    12: "uint3",
    13: "uint6",
    14: "int32",
    15: "uint32",
    16: "fp8e4m3fn",
    17: "fp8e5m2",
}

# Immediate values of these types are serialised as raw bytes rather than as number lists.
_IMMEDIATE_AS_BYTES = frozenset(
    {"fp16", "int4", "int8", "uint1", "uint2", "uint3", "uint4", "uint6", "uint8", "uint32"}
)


def unpack_sub_byte(packed: np.ndarray, bits: int, count: int, signed: bool) -> np.ndarray:
    """Unpack `count` `bits`-wide integers packed LSB first from a uint8 buffer."""
    needed = math.ceil(count * bits / 8)
    if packed.size < needed:
        raise ExecutorError(f"{packed.size} packed bytes cannot hold {count} {bits}-bit values")
    bit_matrix = np.unpackbits(packed[:needed], bitorder="little")[: count * bits].reshape(count, bits)
    values = bit_matrix.astype(np.int16) @ (1 << np.arange(bits, dtype=np.int16))
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


def _from_bytes(raw: np.ndarray, declared: TensorType, where: str) -> np.ndarray:
    shape = declared.static_shape(where)
    count = math.prod(shape)
    bits = SUB_BYTE_BITS.get(declared.dtype)
    dtype = storage_dtype(declared.dtype)
    expected_bytes = math.ceil(count * bits / 8) if bits else count * dtype.itemsize
    if raw.size != expected_bytes:
        raise ExecutorError(f"{where}: {raw.size} bytes, but {declared.describe()} needs {expected_bytes}")
    if bits:
        return unpack_sub_byte(raw, bits, count, signed=declared.dtype == "int4").reshape(shape)
    return raw.view(dtype).reshape(shape)


class BlobStore:
    """Reads blobs from the weight files of one model directory (`Data/com.apple.CoreML`)."""

    def __init__(self, model_dir: Path) -> None:
        self._model_dir = model_dir
        self._files: dict[str, np.memmap] = {}

    def _file(self, file_name: str) -> np.memmap:
        if file_name not in self._files:
            relative = file_name.removeprefix(_MODEL_PATH_PREFIX)
            path = self._model_dir / relative
            if not path.is_file():
                raise ExecutorError(f"weight file '{file_name}' not found at {path}")
            data = np.memmap(path, dtype=np.uint8, mode="r")
            if data.size < _FILE_HEADER.size:
                raise ExecutorError(f"{path}: too short for a blob storage header")
            _count, version = _FILE_HEADER.unpack_from(data.data, 0)
            if version != 2:
                raise ExecutorError(f"{path}: blob storage version {version}, expected 2")
            self._files[file_name] = data
        return self._files[file_name]

    def read(self, file_name: str, offset: int, declared: TensorType) -> np.ndarray:
        """The blob whose metadata record is at `offset`, decoded as the declared type."""
        data = self._file(file_name)
        where = f"blob at offset {offset} of '{file_name}'"
        if offset + _BLOB_METADATA.size > data.size:
            raise ExecutorError(f"{where}: offset beyond the end of the file ({data.size} bytes)")
        sentinel, blob_dtype, size, data_offset = _BLOB_METADATA.unpack_from(data.data, offset)
        if sentinel != _SENTINEL:
            raise ExecutorError(f"{where}: bad metadata sentinel {sentinel:#x}")
        stored = _BLOB_DTYPES.get(blob_dtype, f"enum {blob_dtype}")
        if stored != declared.dtype:
            raise ExecutorError(f"{where}: stores {stored}, the program declares {declared.describe()}")
        if data_offset + size > data.size:
            raise ExecutorError(f"{where}: data runs past the end of the file")
        raw = np.array(data[data_offset : data_offset + size])
        return _from_bytes(raw, declared, where)


def _immediate(tensor: MIL_pb2.TensorValue, declared: TensorType) -> np.ndarray | str:
    kind = tensor.WhichOneof("value")
    shape = declared.static_shape("immediate value")
    if kind == "bytes":
        raw = np.frombuffer(tensor.bytes.values, dtype=np.uint8)
        if declared.dtype not in _IMMEDIATE_AS_BYTES:
            raise ExecutorError(f"immediate bytes for a {declared.describe()} value")
        return _from_bytes(raw, declared, "immediate value")
    if kind is None:
        raise ExecutorError(f"immediate {declared.describe()} value has no data")
    values = list(getattr(tensor, kind).values)
    if declared.dtype == "string":
        return values[0] if not shape else np.array(values, dtype=object).reshape(shape)
    return np.array(values, dtype=storage_dtype(declared.dtype)).reshape(shape)


def decode_value(value: MIL_pb2.Value, blobs: BlobStore) -> np.ndarray | str:
    """A proto `Value` (immediate or in a blob file) in its exact storage dtype; strings as `str`."""
    declared = tensor_type(value.type)
    kind = value.WhichOneof("value")
    if kind == "immediateValue":
        if value.immediateValue.WhichOneof("value") != "tensor":
            raise ExecutorError("only tensor immediate values are supported")
        return _immediate(value.immediateValue.tensor, declared)
    if kind == "blobFileValue":
        blob = value.blobFileValue
        return blobs.read(blob.fileName, blob.offset, declared)
    raise ExecutorError(f"value of kind '{kind}' cannot be decoded")
