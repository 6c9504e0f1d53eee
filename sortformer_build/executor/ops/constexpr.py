"""Constants: `const` and the compressed-weight `constexpr_*` ops (iOS16 and iOS18 forms)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ExecutorError
from ..weights import unpack_sub_byte
from .registry import OpArgs, normalize_axis, register


@register("const")
def _const(args: OpArgs) -> np.ndarray | str:
    return args.value("val")


def _lut_ios16(indices: np.ndarray, lut: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    bits = int(math.log2(lut.size))
    if 1 << bits != lut.size:
        raise ExecutorError(f"LUT size {lut.size} is not a power of two")
    flat = unpack_sub_byte(indices.astype(np.uint8), bits, math.prod(shape), signed=False)
    return lut[flat].reshape(shape)


def _lut_ios18(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None) -> np.ndarray:
    rank = indices.ndim
    if lut.ndim != rank + 2:
        raise ExecutorError(f"LUT of rank {lut.ndim} for indices of rank {rank} (expected {rank + 2})")
    # Each index reads the table of its block: block b of axis i covers indices.shape[i] / lut.shape[i].
    blocks = [
        np.arange(n) // (n // groups) for n, groups in zip(indices.shape, lut.shape[:rank], strict=True)
    ]
    grid = np.ix_(*blocks)
    values = lut[(*grid, indices.astype(np.intp))]  # [*indices.shape, VECTOR_SIZE]
    vector_size = lut.shape[-1]
    if vector_size == 1:
        return values[..., 0]
    if vector_axis is None:
        raise ExecutorError("vector_axis is required when the LUT holds vectors")
    axis = normalize_axis(vector_axis, rank)
    values = np.moveaxis(values, -1, axis + 1)
    shape = list(indices.shape)
    shape[axis] *= vector_size
    return values.reshape(shape)


@register("constexpr_lut_to_dense")
def _lut_to_dense(args: OpArgs) -> np.ndarray:
    indices, lut = args.tensor("indices"), args.tensor("lut")
    if args.has("shape"):
        return _lut_ios16(indices, lut, tuple(args.ints_param("shape")))
    vector_axis = args.int_param("vector_axis") if args.has("vector_axis") else None
    return _lut_ios18(indices, lut, vector_axis)


def _along_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scalar or per-`axis` vector shaped to broadcast against a rank-`rank` tensor."""
    if param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis] = param.size
    return param.reshape(shape)


@register("constexpr_affine_dequantize")
def _affine_dequantize(args: OpArgs) -> np.ndarray:
    data = args.tensor("quantized_data")
    axis = normalize_axis(args.int_param("axis"), data.ndim)
    zero_point = _along_axis(args.tensor("zero_point").astype(np.float32), data.ndim, axis)
    scale = _along_axis(args.tensor("scale").astype(np.float32), data.ndim, axis)
    return ((data.astype(np.float32) - zero_point) * scale).astype(args.out_dtype(), copy=False)


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    for axis, (size, groups) in enumerate(zip(shape, param.shape, strict=True)):
        param = np.repeat(param, size // groups, axis=axis)
    return param


@register("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(args: OpArgs) -> np.ndarray:
    data = args.tensor("data").astype(np.float32)
    offset = args.optional("offset")
    if offset is not None:
        data = data - _repeat_blocks(offset.astype(np.float32), data.shape)
    scale = _repeat_blocks(args.tensor("scale").astype(np.float32), data.shape)
    return (data * scale).astype(args.out_dtype(), copy=False)


@register("constexpr_cast")
def _constexpr_cast(args: OpArgs) -> np.ndarray:
    return args.tensor("source_val").astype(args.out_dtype())


@register("constexpr_sparse_to_dense")
def _sparse_to_dense(args: OpArgs) -> np.ndarray:
    data, mask = args.tensor("nonzero_data"), args.tensor("mask")
    if args.has("shape"):
        shape = tuple(args.ints_param("shape"))
        mask = unpack_sub_byte(mask.astype(np.uint8), 1, math.prod(shape), signed=False).reshape(shape)
    dense = np.zeros(mask.shape, dtype=data.dtype)
    dense[mask != 0] = data
    return dense
