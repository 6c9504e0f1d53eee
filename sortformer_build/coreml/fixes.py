"""Fixes for two gaps of coremltools 9.0's torch frontend, through its op registry.

Each fix handles only the case coremltools gets wrong and hands every other case back to
coremltools' own converter. They are installed only around a conversion
(`torch_frontend_fixes()`), so importing this package never changes coremltools for anyone else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
from coremltools.converters.mil.mil import types


def _int_of_one_element_constant(original: Callable, context: Any, node: Any) -> None:
    """`int(x)` of a constant one-element array: torch >= 2.8 traces such constants as arrays,
    and coremltools 9.0 calls `int()` on the array ("only 0-dimensional arrays can be
    converted to Python scalars")."""
    x = context[node.inputs[0]]
    if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
        context.add(mb.const(val=np.int32(int(np.asarray(x.val).item())), name=node.name))
    else:
        original(context, node)


def _integer_floor_divide(original: Callable, context: Any, node: Any) -> None:
    """`a // b` of integer tensors stays int32, as in torch: coremltools 9.0 casts the result to
    fp32, which fp16 compute then rounds (large frame counts come out one off)."""
    x, y = (context[name] for name in node.inputs[:2])
    if types.is_int(x.dtype) and types.is_int(y.dtype):
        context.add(mb.floor_div(x=_as_int32(x), y=_as_int32(y), name=node.name))
    else:
        original(context, node)


def _as_int32(value: Any) -> Any:
    return value if value.dtype == types.int32 else mb.cast(x=value, dtype="int32")


# Torch op names -> the fix that wraps coremltools' converter for them.
_FIXES = {
    ("int",): _int_of_one_element_constant,
    ("floor_divide", "floordiv"): _integer_floor_divide,
}


@contextmanager
def torch_frontend_fixes() -> Iterator[None]:
    """Register the fixes with coremltools' torch op registry for the block, then put back
    exactly what was there."""
    saved = {name: _TORCH_OPS_REGISTRY.get_func(name) for names in _FIXES for name in names}
    try:
        for names, fix in _FIXES.items():
            original = _TORCH_OPS_REGISTRY.get_func(names[0])
            for name in names:
                _TORCH_OPS_REGISTRY.set_func_by_name(_bound(fix, original), name)
        yield
    finally:
        for name, function in saved.items():
            if function is None:
                _TORCH_OPS_REGISTRY.name_to_func_mapping.pop(name, None)
            else:
                _TORCH_OPS_REGISTRY.set_func_by_name(function, name)


def _bound(fix: Callable, original: Callable) -> Callable[[Any, Any], None]:
    def convert(context: Any, node: Any) -> None:
        fix(original, context, node)

    return convert
