"""Matrix products: linear, matmul and einsum."""

from __future__ import annotations

import numpy as np

from ..errors import ExecutorError
from ..tiles import matmul
from .registry import OpArgs, register


@register("linear")
def _linear(args: OpArgs) -> np.ndarray:
    x, weight, bias = args.tensor("x"), args.tensor("weight"), args.optional("bias")
    flat = matmul(x.reshape(-1, x.shape[-1]), weight.T, args.threads)
    if bias is not None:
        flat += bias
    return flat.reshape(x.shape[:-1] + weight.shape[:1]).astype(args.out_dtype(), copy=False)


@register("matmul")
def _matmul(args: OpArgs) -> np.ndarray:
    x, y = args.tensor("x"), args.tensor("y")
    if args.bool_param("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if args.bool_param("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return matmul(x, y, args.threads).astype(args.out_dtype(), copy=False)


def _broadcast_pair(x: np.ndarray, y: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast the given axes of `x` and `y` against each other (size-1 dims stretch)."""
    x_shape, y_shape = list(x.shape), list(y.shape)
    for axis in axes:
        x_shape[axis] = y_shape[axis] = max(x.shape[axis], y.shape[axis])
    return np.broadcast_to(x, x_shape), np.broadcast_to(y, y_shape)


@register("einsum")
def _einsum(args: OpArgs) -> np.ndarray:
    x, y = args.tensors("values")
    if x.ndim not in (3, 4) or x.ndim != y.ndim:
        raise ExecutorError(f"einsum takes two tensors of rank 3 or 4, got ranks {x.ndim} and {y.ndim}")
    # MIL einsum multiplies matrices on axes -1 / -3 and broadcasts the other (batch) axes.
    x, y = _broadcast_pair(x, y, (-2,) if x.ndim == 3 else (0, 2))
    return np.einsum(args.str_param("equation"), x, y, optimize=True).astype(args.out_dtype(), copy=False)
