"""Element-wise ops: arithmetic, comparisons, logic, select, unary math and cast."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from ..dtypes import compute_dtype
from .registry import OpArgs, register

Binary = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _true_divide(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer):
        # Integer real_div truncates toward zero like a C division.
        return np.trunc(np.true_divide(x, y)).astype(np.result_type(x, y))
    return np.true_divide(x, y)


_ARITHMETIC: dict[str, Binary] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": _true_divide,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
}

_COMPARISON: dict[str, Binary] = {
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _register_binary(op_type: str, fn: Binary) -> None:
    @register(op_type)
    def _binary(args: OpArgs) -> np.ndarray:
        result = fn(args.tensor("x"), args.tensor("y"))
        return np.asarray(result).astype(args.out_dtype(), copy=False)


for _op_type, _fn in {**_ARITHMETIC, **_COMPARISON}.items():
    _register_binary(_op_type, _fn)


@register("logical_not")
def _logical_not(args: OpArgs) -> np.ndarray:
    return np.logical_not(args.tensor("x"))


@register("select")
def _select(args: OpArgs) -> np.ndarray:
    return np.where(args.tensor("cond"), args.tensor("a"), args.tensor("b"))


Unary = Callable[[np.ndarray], np.ndarray]

_UNARY: dict[str, Unary] = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": special.erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
}


def _register_unary(op_type: str, fn: Unary) -> None:
    @register(op_type)
    def _unary(args: OpArgs) -> np.ndarray:
        x = args.tensor("x")
        return np.asarray(fn(x)).astype(x.dtype, copy=False)


for _op_type, _unary_fn in _UNARY.items():
    _register_unary(_op_type, _unary_fn)


@register("log")
def _log(args: OpArgs) -> np.ndarray:
    return np.log(args.tensor("x") + args.float_param("epsilon", 1e-45))


@register("rsqrt")
def _rsqrt(args: OpArgs) -> np.ndarray:
    return 1.0 / np.sqrt(args.tensor("x") + args.float_param("epsilon", 1e-12))


@register("inverse")
def _inverse(args: OpArgs) -> np.ndarray:
    return 1.0 / (args.tensor("x") + args.float_param("epsilon", 1e-4))


@register("clip")
def _clip(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return np.minimum(np.maximum(x, args.tensor("alpha")), args.tensor("beta")).astype(x.dtype, copy=False)


@register("threshold")
def _threshold(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    return np.maximum(x, args.tensor("alpha")).astype(x.dtype, copy=False)


@register("cast")
def _cast(args: OpArgs) -> np.ndarray:
    x = args.tensor("x")
    target = compute_dtype(args.str_param("dtype"))
    if target == np.bool_:
        return x != 0
    return x.astype(target)
