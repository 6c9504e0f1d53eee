"""Reductions over axes (reduce_*) and along one axis (reduce_argmax / reduce_argmin)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from ..dtypes import compute_dtype
from .registry import OpArgs, normalize_axis, register

Reducer = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]

_REDUCERS: dict[str, Reducer] = {
    "reduce_sum": lambda x, axes: np.sum(x, axis=axes, keepdims=True, dtype=x.dtype),
    "reduce_mean": lambda x, axes: np.mean(x, axis=axes, keepdims=True),
    "reduce_max": lambda x, axes: np.max(x, axis=axes, keepdims=True),
    "reduce_min": lambda x, axes: np.min(x, axis=axes, keepdims=True),
    "reduce_prod": lambda x, axes: np.prod(x, axis=axes, keepdims=True, dtype=x.dtype),
    "reduce_sum_square": lambda x, axes: np.sum(np.square(x), axis=axes, keepdims=True, dtype=x.dtype),
    "reduce_l1_norm": lambda x, axes: np.sum(np.abs(x), axis=axes, keepdims=True, dtype=x.dtype),
    "reduce_l2_norm": lambda x, axes: np.sqrt(np.sum(np.square(x), axis=axes, keepdims=True)),
    "reduce_log_sum": lambda x, axes: np.log(np.sum(x, axis=axes, keepdims=True)),
    "reduce_log_sum_exp": lambda x, axes: special.logsumexp(x, axis=axes, keepdims=True),
}


def _register_reduction(op_type: str, reducer: Reducer) -> None:
    @register(op_type)
    def _reduce(args: OpArgs) -> np.ndarray:
        x = args.tensor("x")
        axes = tuple(sorted({normalize_axis(a, x.ndim) for a in args.ints_param("axes", range(x.ndim))}))
        result = np.asarray(reducer(x, axes)).astype(x.dtype, copy=False)
        return result if args.bool_param("keep_dims", False) else np.squeeze(result, axis=axes)


for _op_type, _reducer in _REDUCERS.items():
    _register_reduction(_op_type, _reducer)


def _register_arg_reduction(op_type: str, fn: Callable[..., np.ndarray]) -> None:
    @register(op_type)
    def _reduce_arg(args: OpArgs) -> np.ndarray:
        x = args.tensor("x")
        axis = normalize_axis(args.int_param("axis", -1), x.ndim)
        result = fn(x, axis=axis, keepdims=args.bool_param("keep_dims", False))
        return result.astype(compute_dtype(args.str_param("output_dtype", "int32")))


_register_arg_reduction("reduce_argmax", np.argmax)
_register_arg_reduction("reduce_argmin", np.argmin)
