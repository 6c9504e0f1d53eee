"""Shape and layout ops: reshape, transpose, concat, split, pad, tile, fill, range, sort..."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ExecutorError
from .registry import OpArgs, normalize_axis, register


@register("identity")
def _identity(args: OpArgs) -> np.ndarray:
    return args.tensor("x")


@register("shape")
def _shape(args: OpArgs) -> np.ndarray:
    return np.array(args.tensor("x").shape, dtype=np.int32)


def reshape_target(x_shape: tuple[int, ...], target: list[int]) -> tuple[int, ...]:
    """Resolve MIL reshape codes: 0 copies x's dim counted from the right (1 if none), -1 is inferred."""
    resolved = list(target)
    for i in range(1, len(resolved) + 1):
        if resolved[-i] == 0:
            resolved[-i] = x_shape[-i] if i <= len(x_shape) else 1
    if resolved.count(-1) > 1:
        raise ExecutorError(f"reshape target {target} has more than one -1")
    if -1 in resolved:
        known = math.prod(d for d in resolved if d != -1)
        resolved[resolved.index(-1)] = math.prod(x_shape) // known if known else 0
    if math.prod(resolved) != math.prod(x_shape):
        raise ExecutorError(f"cannot reshape {x_shape} to {target}")
    return tuple(resolved)


@register("reshape")
def _reshape(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return x.reshape(reshape_target(x.shape, args.ints_param("shape")))


@register("expand_dims")
def _expand_dims(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    out_rank = x.ndim + len(args.ints_param("axes"))
    return np.expand_dims(x, tuple(normalize_axis(a, out_rank) for a in args.ints_param("axes")))


@register("squeeze")
def _squeeze(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    if not args.has("axes"):
        return np.squeeze(x)
    # Non-unit axes are ignored (PyTorch semantics), not an error as in NumPy.
    axes = {normalize_axis(a, x.ndim) for a in args.ints_param("axes")}
    return np.squeeze(x, axis=tuple(a for a in sorted(axes) if x.shape[a] == 1))


@register("transpose")
def _transpose(args: OpArgs) -> np.ndarray:
    return np.transpose(args.tensor("x"), args.ints_param("perm"))


@register("flatten2d")
def _flatten2d(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = args.int_param("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("concat")
def _concat(args: OpArgs) -> np.ndarray:
    values = args.tensors("values")
    if values[0].ndim == 0:
        return np.stack(values)
    axis = normalize_axis(args.int_param("axis"), values[0].ndim)
    if not args.bool_param("interleave", False):
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@register("stack")
def _stack(args: OpArgs) -> np.ndarray:
    values = args.tensors("values")
    return np.stack(values, axis=normalize_axis(args.int_param("axis"), values[0].ndim + 1))


@register("split")
def _split(args: OpArgs) -> tuple[np.ndarray, ...]:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis"), x.ndim)
    if args.has("split_sizes"):
        sizes = args.ints_param("split_sizes")
    else:
        count = args.int_param("num_splits")
        if x.shape[axis] % count:
            raise ExecutorError(f"num_splits {count} does not divide dimension {x.shape[axis]}")
        sizes = [x.shape[axis] // count] * count
    if sum(sizes) != x.shape[axis]:
        raise ExecutorError(f"split sizes {sizes} do not add up to dimension {x.shape[axis]}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


_PAD_MODES: dict[str, Literal["constant", "reflect", "edge"]] = {
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "edge",
}


@register("pad")
def _pad(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    pad = args.ints_param("pad")
    padded_dims = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - padded_dims) + [(pad[2 * i], pad[2 * i + 1]) for i in range(padded_dims)]
    mode = args.str_param("mode", "constant")
    if mode not in _PAD_MODES:
        raise ExecutorError(f"unknown pad mode '{mode}'")
    if mode == "constant":
        return np.pad(x, widths, constant_values=args.float_param("constant_val", 0.0))
    return np.pad(x, widths, mode=_PAD_MODES[mode])


@register("tile")
def _tile(args: OpArgs) -> np.ndarray:
    return np.tile(args.tensor("x"), args.ints_param("reps"))


@register("fill")
def _fill(args: OpArgs) -> np.ndarray:
    value = args.tensor("value") if args.has("value") else np.float32(0)
    return np.full(tuple(args.ints_param("shape")), value, dtype=args.out_dtype())


@register("fill_like")
def _fill_like(args: OpArgs) -> np.ndarray:
    value = args.tensor("value") if args.has("value") else np.float32(0)
    return np.full(args.tensor("ref_tensor").shape, value, dtype=args.out_dtype())


@register("range_1d")
def _range_1d(args: OpArgs) -> np.ndarray:
    start, end, step = args.tensor("start"), args.tensor("end"), args.tensor("step")
    # NumPy's stubs take only scalars here; 0-d arrays work and keep the length arithmetic in MIL's dtype.
    return np.arange(start, end, step, dtype=start.dtype)  # type: ignore[call-overload]


@register("band_part")
def _band_part(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    lower, upper = args.int_param("lower", -1), args.int_param("upper", -1)
    rows = np.arange(x.shape[-2])[:, None]
    cols = np.arange(x.shape[-1])[None, :]
    keep = ((lower < 0) | (rows - cols <= lower)) & ((upper < 0) | (cols - rows <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@register("cumsum")
def _cumsum(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis", 0), x.ndim)
    reverse = args.bool_param("reverse", False)
    data = np.flip(x, axis) if reverse else x
    total = np.cumsum(data, axis=axis, dtype=x.dtype)
    if args.bool_param("exclusive", False):
        total = np.roll(total, 1, axis=axis)
        first = [slice(None)] * x.ndim
        first[axis] = slice(0, 1)
        total[tuple(first)] = 0
    return np.flip(total, axis) if reverse else total


@register("reverse")
def _reverse(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axes = args.ints_param("axes", range(x.ndim))
    return np.flip(x, tuple(normalize_axis(a, x.ndim) for a in axes))


def _sort_order(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    """Stable sort indices; ties keep the lower index first in both directions."""
    key = x if ascending else -x.astype(np.float64)
    return np.argsort(key, axis=axis, kind="stable")


@register("argsort")
def _argsort(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis", -1), x.ndim)
    return _sort_order(x, axis, args.bool_param("ascending", False)).astype(np.int32)


@register("topk")
def _topk(args: OpArgs) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis", -1), x.ndim)
    k = args.int_param("k", 1)
    k = x.shape[axis] if k == -1 else k
    order = np.take(_sort_order(x, axis, args.bool_param("ascending", False)), np.arange(k), axis=axis)
    values = np.take_along_axis(x, order, axis=axis)
    if not args.bool_param("return_indices", True):
        return values
    return values, order.astype(args.out_dtype(1))


@register("one_hot")
def _one_hot(args: OpArgs) -> np.ndarray:
    indices = args.tensor("indices")
    depth = args.int_param("one_hot_vector_size")
    axis = normalize_axis(args.int_param("axis", -1), indices.ndim + 1)
    positions = np.arange(depth).reshape((depth,) + (1,) * (indices.ndim - axis))
    hot = np.expand_dims(indices, axis) == positions
    on = args.tensor("on_value") if args.has("on_value") else np.int32(1)
    off = args.tensor("off_value") if args.has("off_value") else np.int32(0)
    return np.where(hot, on, off).astype(args.out_dtype(), copy=False)


@register("non_zero")
def _non_zero(args: OpArgs) -> np.ndarray:
    return np.argwhere(args.tensor("x")).astype(np.int32)


@register("sliding_windows")
def _sliding_windows(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis"), x.ndim)
    view = sliding_window_view(x, args.int_param("size"), axis=axis)
    view = np.take(view, np.arange(0, view.shape[axis], args.int_param("stride", 1)), axis=axis)
    return np.moveaxis(view, -1, axis + 1)
