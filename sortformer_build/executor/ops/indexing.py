"""Indexing ops: gather / scatter families and the two slice ops."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ExecutorError
from .registry import OpArgs, normalize_axis, register


def checked_indices(indices: np.ndarray, size: int) -> np.ndarray:
    """Indices in [-size, size) mapped to [0, size); any other index is an error, not a wrap."""
    wide = indices.astype(np.int64)
    bad = (wide < -size) | (wide >= size)
    if bad.any():
        raise ExecutorError(f"index {wide[bad].flat[0]} is out of range for a dimension of size {size}")
    return np.where(wide < 0, wide + size, wide)


def _gather_batched(x: np.ndarray, indices: np.ndarray, axis: int, batch_dims: int) -> np.ndarray:
    batch = math.prod(x.shape[:batch_dims])
    rows = x.reshape((batch, *x.shape[batch_dims:]))
    rows = np.moveaxis(rows, axis - batch_dims + 1, 1)  # [B, gathered axis, middle..., trailing...]
    picks = indices.reshape((batch, *indices.shape[batch_dims:]))
    batch_index = np.arange(batch).reshape((batch,) + (1,) * (picks.ndim - 1))
    taken = rows[batch_index, picks]  # [B, index dims..., middle..., trailing...]
    n_index, n_middle = picks.ndim - 1, axis - batch_dims
    order = [0, *range(1 + n_index, 1 + n_index + n_middle), *range(1, 1 + n_index)]
    order += list(range(1 + n_index + n_middle, taken.ndim))
    return taken.transpose(order).reshape(x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis + 1 :])


@register("gather")
def _gather(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis", 0), x.ndim)
    indices = checked_indices(args.tensor("indices"), x.shape[axis])
    batch_dims = args.int_param("batch_dims", 0)
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    return _gather_batched(x, indices, axis, batch_dims)


@register("gather_along_axis")
def _gather_along_axis(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = normalize_axis(args.int_param("axis", 0), x.ndim)
    return np.take_along_axis(x, checked_indices(args.tensor("indices"), x.shape[axis]), axis=axis)


@register("gather_nd")
def _gather_nd(args: OpArgs) -> np.ndarray:
    x, indices = args.tensor("x"), args.tensor("indices")
    batch_dims = args.int_param("batch_dims", 0)
    depth = indices.shape[-1]
    batch = math.prod(x.shape[:batch_dims])
    rows = x.reshape((batch, *x.shape[batch_dims:]))
    picks = indices.reshape(batch, -1, depth)
    key = tuple(checked_indices(picks[..., j], x.shape[batch_dims + j]) for j in range(depth))
    taken = rows[(np.arange(batch)[:, None], *key)]
    return taken.reshape(indices.shape[:-1] + x.shape[batch_dims + depth :])


def _divide(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.floor_divide(x, y) if np.issubdtype(x.dtype, np.integer) else np.true_divide(x, y)


_SCATTER_MODES = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
}


def _scatter_into(target: np.ndarray, key: tuple[np.ndarray, ...], updates: np.ndarray, mode: str) -> None:
    """target[key] (op)= updates, accumulating repeated indices."""
    if mode == "update":
        target[key] = updates
    elif mode == "div":
        target[key] = _divide(target[key], updates)
    elif mode in _SCATTER_MODES:
        _SCATTER_MODES[mode].at(target, key, updates)
    else:
        raise ExecutorError(f"unknown scatter mode '{mode}'")


@register("scatter")
def _scatter(args: OpArgs) -> np.ndarray:
    data = args.tensor("data")
    axis = normalize_axis(args.int_param("axis", 0), data.ndim)
    out = data.copy()
    key = (checked_indices(args.tensor("indices"), data.shape[axis]),)
    updates = np.moveaxis(args.tensor("updates"), axis, 0)
    _scatter_into(np.moveaxis(out, axis, 0), key, updates, args.str_param("mode", "add"))
    return out


@register("scatter_along_axis")
def _scatter_along_axis(args: OpArgs) -> np.ndarray:
    data, indices = args.tensor("data"), args.tensor("indices")
    axis = normalize_axis(args.int_param("axis", 0), data.ndim)
    key = list(np.ix_(*(np.arange(n) for n in indices.shape)))
    key[axis] = checked_indices(indices, data.shape[axis])
    out = data.copy()
    _scatter_into(out, tuple(key), args.tensor("updates"), args.str_param("mode", "add"))
    return out


@register("scatter_nd")
def _scatter_nd(args: OpArgs) -> np.ndarray:
    data, indices = args.tensor("data"), args.tensor("indices")
    key = tuple(checked_indices(indices[..., j], data.shape[j]) for j in range(indices.shape[-1]))
    out = data.copy()
    _scatter_into(out, key, args.tensor("updates"), args.str_param("mode", "add"))
    return out


def _mask(args: OpArgs, name: str, rank: int) -> list[bool]:
    value = args.optional(name)
    return [False] * rank if value is None else [bool(v) for v in np.ravel(value)]


@register("slice_by_index")
def _slice_by_index(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    begin, end = args.ints_param("begin"), args.ints_param("end")
    stride = args.ints_param("stride", [1] * x.ndim)
    begin_mask, end_mask = _mask(args, "begin_mask", x.ndim), _mask(args, "end_mask", x.ndim)
    squeeze_mask = _mask(args, "squeeze_mask", x.ndim)
    key: list[int | slice] = []
    for i in range(x.ndim):
        if squeeze_mask[i]:
            key.append(begin[i])
        else:
            key.append(slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]))
    return np.asarray(x[tuple(key)])


@register("slice_by_size")
def _slice_by_size(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    key = []
    for start, size, dim in zip(args.ints_param("begin"), args.ints_param("size"), x.shape, strict=True):
        start = start + dim if start < 0 else start
        key.append(slice(start, dim if size < 0 else start + size))
    return x[tuple(key)]
