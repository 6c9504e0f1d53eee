"""Normalisation ops: layer_norm, batch_norm, instance_norm and l2_norm."""

from __future__ import annotations

import numpy as np

from .registry import OpArgs, normalize_axis, register


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    """x centred and scaled over `axes`, in one new array that each later step, `_affine`'s too,
    writes into: the same operations as with a new array per step, without allocating them."""
    # On 0-d arrays the difference is a NumPy scalar, which nothing can be written into.
    centered = np.asarray(x - np.mean(x, axis=axes, keepdims=True))
    variance = np.mean(np.square(centered), axis=axes, keepdims=True)
    return np.divide(centered, np.sqrt(variance + epsilon), out=centered)


def _affine(args: OpArgs, y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """y * gamma + beta, each optional, with gamma and beta reshaped to `shape`, in place in the
    op's own `y`."""
    gamma, beta = args.optional("gamma"), args.optional("beta")
    if gamma is not None:
        np.multiply(y, gamma.reshape(shape), out=y)
    if beta is not None:
        np.add(y, beta.reshape(shape), out=y)
    return y


@register("layer_norm")
def _layer_norm(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axes = tuple(sorted(normalize_axis(a, x.ndim) for a in args.ints_param("axes", range(x.ndim))))
    y = _normalize(x, axes, args.float_param("epsilon", 1e-5))
    shape = tuple(x.shape[i] if i in axes else 1 for i in range(x.ndim))
    return _affine(args, y, shape).astype(x.dtype, copy=False)


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


@register("batch_norm")
def _batch_norm(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    shape = _channel_shape(x)
    mean, variance = args.tensor("mean").reshape(shape), args.tensor("variance").reshape(shape)
    y = (x - mean) / np.sqrt(variance + args.float_param("epsilon", 1e-5))
    return _affine(args, y, shape).astype(x.dtype, copy=False)


@register("instance_norm")
def _instance_norm(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    y = _normalize(x, tuple(range(2, x.ndim)), args.float_param("epsilon", 1e-5))
    shape = _channel_shape(x)
    return _affine(args, y, shape).astype(x.dtype, copy=False)


@register("l2_norm")
def _l2_norm(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axes = tuple(range(x.ndim - 3, x.ndim))
    norm = np.sqrt(np.sum(np.square(x), axis=axes, keepdims=True) + args.float_param("epsilon", 1e-6))
    return (x / norm).astype(x.dtype, copy=False)
