"""The op table (MIL op type -> NumPy implementation) and the argument view the implementations read."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..dtypes import TensorType, compute_dtype
from ..errors import ExecutorError

Value = np.ndarray | str
OpResult = Value | tuple[np.ndarray, ...]
OpFn = Callable[["OpArgs"], OpResult]

_TABLE: dict[str, OpFn] = {}


def register(*op_types: str) -> Callable[[OpFn], OpFn]:
    """Register `fn` as the implementation of the given MIL op types."""

    def decorate(fn: OpFn) -> OpFn:
        for op_type in op_types:
            if op_type in _TABLE:
                raise ValueError(f"op type '{op_type}' is registered twice")
            _TABLE[op_type] = fn
        return fn

    return decorate


def lookup(op_type: str) -> OpFn | None:
    return _TABLE.get(op_type)


def supported_op_types() -> frozenset[str]:
    return frozenset(_TABLE)


class OpArgs:
    """An op's argument values by parameter name, the types its outputs are declared with, and how
    many threads it may split its own work over (with the result of one thread, bit for bit)."""

    __slots__ = ("_values", "out_types", "threads")

    def __init__(
        self, values: Mapping[str, Sequence[Value]], out_types: Sequence[TensorType], threads: int = 1
    ) -> None:
        self._values = values
        self.out_types = out_types
        self.threads = threads

    def has(self, name: str) -> bool:
        return name in self._values

    def value(self, name: str) -> Value:
        """The one value bound to `name`: a tensor or, for string-typed inputs, a `str`."""
        bound = self._values.get(name)
        if bound is None:
            raise ExecutorError(f"missing required input '{name}'")
        if len(bound) != 1:
            raise ExecutorError(f"input '{name}' takes one value, got {len(bound)}")
        return bound[0]

    def tensor(self, name: str) -> np.ndarray:
        value = self.value(name)
        if isinstance(value, str):
            raise ExecutorError(f"input '{name}' is a string, expected a tensor")
        return value

    def optional(self, name: str) -> np.ndarray | None:
        return self.tensor(name) if name in self._values else None

    def tensors(self, name: str) -> list[np.ndarray]:
        if name not in self._values:
            raise ExecutorError(f"missing required input '{name}'")
        return [np.asarray(v) for v in self._values[name]]

    def _unbound(self, name: str) -> bool:
        """True when `name` is unbound: its default applies, or, without one, an error follows later."""
        return name not in self._values

    def _scalar(self, name: str) -> np.generic:
        values = np.ravel(self.tensor(name))
        if values.size != 1:
            raise ExecutorError(f"input '{name}' should hold one value, got {values.size}")
        return values[0]

    def int_param(self, name: str, default: int | None = None) -> int:
        return default if default is not None and self._unbound(name) else int(self._scalar(name))

    def ints_param(self, name: str, default: Sequence[int] | None = None) -> list[int]:
        if default is not None and self._unbound(name):
            return list(default)
        return [int(v) for v in np.ravel(self.tensor(name))]

    def float_param(self, name: str, default: float | None = None) -> float:
        return default if default is not None and self._unbound(name) else float(self._scalar(name))

    def bool_param(self, name: str, default: bool | None = None) -> bool:
        return default if default is not None and self._unbound(name) else bool(self._scalar(name))

    def str_param(self, name: str, default: str | None = None) -> str:
        if default is not None and self._unbound(name):
            return default
        value = self.value(name)
        if not isinstance(value, str):
            raise ExecutorError(f"input '{name}' should be a string, got {type(value).__name__}")
        return value

    def out_dtype(self, index: int = 0) -> np.dtype:
        """The dtype the executor holds output `index` in, from the program's declaration."""
        return compute_dtype(self.out_types[index].dtype)


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ExecutorError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank
