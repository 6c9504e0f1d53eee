"""Activation ops and softmax."""

from __future__ import annotations

import numpy as np
from scipy import special

from ..errors import ExecutorError
from .registry import OpArgs, register

_SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))
_SQRT_HALF = np.float32(np.sqrt(0.5))


def _channel_vector(values: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel [C] vector shaped to broadcast over axis 1 of a rank-`rank` tensor."""
    return values.reshape((1, -1) + (1,) * (rank - 2))


@register("relu")
def _relu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return np.maximum(x, x.dtype.type(0))


@register("relu6")
def _relu6(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return np.clip(x, x.dtype.type(0), x.dtype.type(6))


@register("sigmoid")
def _sigmoid(args: OpArgs) -> np.ndarray:
    return special.expit(args.tensor("x"))


@register("silu")
def _silu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return x * special.expit(x)


@register("softplus")
def _softplus(args: OpArgs) -> np.ndarray:
    return np.logaddexp(args.tensor("x"), np.float32(0))


@register("softsign")
def _softsign(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return x / (1 + np.abs(x))


@register("gelu")
def _gelu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    mode = args.str_param("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + special.erf(x * _SQRT_HALF))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * special.expit(1.702 * x)
    raise ExecutorError(f"unknown gelu mode '{mode}'")


@register("leaky_relu")
def _leaky_relu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return np.where(x >= 0, x, x * args.float_param("alpha")).astype(x.dtype, copy=False)


@register("elu")
def _elu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    negative = args.float_param("alpha") * np.expm1(np.minimum(x, 0))
    return np.where(x > 0, x, negative).astype(x.dtype, copy=False)


@register("thresholded_relu")
def _thresholded_relu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return np.where(x >= args.float_param("alpha"), x, x.dtype.type(0))


@register("clamped_relu")
def _clamped_relu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    alpha, beta = args.float_param("alpha"), args.float_param("beta")
    return np.minimum(np.where(x >= 0, x, alpha * x), beta).astype(x.dtype, copy=False)


@register("linear_activation")
def _linear_activation(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return (args.float_param("alpha") * x + args.float_param("beta")).astype(x.dtype, copy=False)


@register("scaled_tanh")
def _scaled_tanh(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return (args.float_param("alpha") * np.tanh(args.float_param("beta") * x)).astype(x.dtype, copy=False)


@register("sigmoid_hard")
def _sigmoid_hard(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    linear = args.float_param("alpha") * x + args.float_param("beta")
    return np.clip(linear, 0, 1).astype(x.dtype, copy=False)


@register("prelu")
def _prelu(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    alpha = _channel_vector(args.tensor("alpha"), x.ndim)
    return np.where(x > 0, x, alpha * x).astype(x.dtype, copy=False)


@register("softplus_parametric")
def _softplus_parametric(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    alpha = _channel_vector(args.tensor("alpha"), x.ndim)
    beta = _channel_vector(args.tensor("beta"), x.ndim)
    return (alpha * np.logaddexp(beta * x, np.float32(0))).astype(x.dtype, copy=False)


@register("softmax")
def _softmax(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    axis = args.int_param("axis", -1)
    # One new array, written in place by each step: the same operations, without allocating more.
    shifted = np.subtract(x, np.max(x, axis=axis, keepdims=True))
    np.exp(shifted, out=shifted)
    return np.divide(shifted, np.sum(shifted, axis=axis, keepdims=True), out=shifted)
