"""Fixes for two gaps of coremltools 9.0's torch frontend, through its op registry.

Each fix handles only the case coremltools gets wrong and hands every other case back to
coremltools' own converter. Importing this module installs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op
from coremltools.converters.mil.mil import types

_original_int = _TORCH_OPS_REGISTRY.get_func("int")
_original_floor_divide = _TORCH_OPS_REGISTRY.get_func("floor_divide")


@register_torch_op(torch_alias=["int"], override=True)
def int_of_one_element_constant(context: Any, node: Any) -> None:
    """`int(x)` of a constant one-element array: torch >= 2.8 traces such constants as arrays,
    and coremltools 9.0 calls `int()` on the array ("only 0-dimensional arrays can be
    converted to Python scalars")."""
    x = context[node.inputs[0]]
    if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
        context.add(mb.const(val=np.int32(int(np.asarray(x.val).item())), name=node.name))
    else:
        _original_int(context, node)


@register_torch_op(torch_alias=["floor_divide", "floordiv"], override=True)
def integer_floor_divide(context: Any, node: Any) -> None:
    """`a // b` of integer tensors stays int32, as in torch: coremltools 9.0 casts the result to
    fp32, which fp16 compute then rounds (3047 frames becomes 3048)."""
    x, y = (context[name] for name in node.inputs[:2])
    if types.is_int(x.dtype) and types.is_int(y.dtype):
        context.add(mb.floor_div(x=_as_int32(x), y=_as_int32(y), name=node.name))
    else:
        _original_floor_divide(context, node)


def _as_int32(value: Any) -> Any:
    return value if value.dtype == types.int32 else mb.cast(x=value, dtype="int32")
