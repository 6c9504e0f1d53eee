"""A NumPy executor for saved Core ML ML Program packages (and pipelines of them), for Linux.

Core ML cannot run off macOS; this runs a package's programs op by op with MIL semantics, in float32 or
with float16 rounding of fp16-typed values, checking every op result against its declared type.
"""

from .errors import DeclaredTypeError, ExecutorError, OpExecutionError, UnsupportedOperationError
from .ops import supported_op_types
from .runtime import PRECISIONS, Model, Program, load_package

__all__ = [
    "PRECISIONS",
    "DeclaredTypeError",
    "ExecutorError",
    "Model",
    "OpExecutionError",
    "Program",
    "UnsupportedOperationError",
    "load_package",
    "supported_op_types",
]
