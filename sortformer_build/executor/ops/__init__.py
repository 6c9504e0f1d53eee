"""NumPy implementations of MIL ops, registered by op type (importing this package fills the table)."""

from . import activation, constexpr, conv, elementwise, indexing, linear, normalization, reduction, tensor
from .registry import OpArgs, lookup, supported_op_types

__all__ = [
    "OpArgs",
    "activation",
    "constexpr",
    "conv",
    "elementwise",
    "indexing",
    "linear",
    "lookup",
    "normalization",
    "reduction",
    "supported_op_types",
    "tensor",
]
