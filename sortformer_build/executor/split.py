"""Element-wise ops run in chunks on the executor's threads.

An element-wise op computes each output element from the input elements at the same position
(after broadcasting), so it can run on slices of its inputs along any axis and give the same
values as on the whole arrays. softmax and layer_norm also reduce along trailing axes, and pad
pads trailing axes: they are split only along the axes ahead of those, so that every chunk holds
whole, contiguous rows as one call would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .dtypes import TensorType, compute_dtype, round_to_fp16
from .errors import DeclaredTypeError
from .ops.registry import OpArgs, OpFn, Value, normalize_axis
from .threads import chunk_count, run

_X = ("x",)

# Op type -> the parameters holding the tensors it computes on. Its other parameters are
# scalars, strings, or (layer_norm's gamma and beta) vectors over the reduced trailing axes.
DATA_PARAMETERS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "add",
            "sub",
            "mul",
            "real_div",
            "floor_div",
            "mod",
            "pow",
            "maximum",
            "minimum",
            "equal",
            "not_equal",
            "less",
            "less_equal",
            "greater",
            "greater_equal",
            "logical_and",
            "logical_or",
            "logical_xor",
        ),
        ("x", "y"),
    ),
    **dict.fromkeys(
        (
            # element-wise math
            "abs",
            "acos",
            "asin",
            "atan",
            "atanh",
            "ceil",
            "cos",
            "cosh",
            "erf",
            "exp",
            "exp2",
            "floor",
            "round",
            "sign",
            "sin",
            "sinh",
            "sqrt",
            "square",
            "tan",
            "tanh",
            "log",
            "rsqrt",
            "inverse",
            "clip",
            "threshold",
            "cast",
            "logical_not",
            # activations with scalar parameters
            "relu",
            "relu6",
            "sigmoid",
            "silu",
            "softplus",
            "softsign",
            "gelu",
            "leaky_relu",
            "elu",
            "thresholded_relu",
            "clamped_relu",
            "linear_activation",
            "scaled_tanh",
            "sigmoid_hard",
            # whole along trailing axes
            "softmax",
            "layer_norm",
            "pad",
        ),
        _X,
    ),
    "select": ("cond", "a", "b"),
}


def _whole_from(op_type: str, args: OpArgs, rank: int) -> int | None:
    """The first of the trailing axes each chunk holds whole (rank: none); None when the axes the
    op reduces are not a trailing block, and the op is not split."""
    if op_type == "softmax":
        axis = normalize_axis(args.int_param("axis", -1), rank)
        return axis if axis == rank - 1 else None
    if op_type == "layer_norm":
        axes = sorted({normalize_axis(a, rank) for a in args.ints_param("axes", range(rank))})
        return axes[0] if axes == list(range(rank - len(axes), rank)) else None
    if op_type == "pad":  # MIL pads the last len(pad) / 2 axes, some of them by nothing
        pad = args.ints_param("pad")
        first = rank - len(pad) // 2
        padded = [i for i in range(len(pad) // 2) if pad[2 * i] or pad[2 * i + 1]]
        return max(0, first + padded[0]) if padded else rank
    return rank


def _out_shape(op_type: str, args: OpArgs, shape: tuple[int, ...]) -> tuple[int, ...]:
    if op_type != "pad":
        return shape
    pad = args.ints_param("pad")
    first = len(shape) - len(pad) // 2
    return tuple(
        size if axis < first else size + pad[2 * (axis - first)] + pad[2 * (axis - first) + 1]
        for axis, size in enumerate(shape)
    )


def _along(value: np.ndarray, rank: int, axis: int) -> int | None:
    """Which axis of `value` lines up with output `axis` when broadcast to rank `rank` (None: none)."""
    own = axis - (rank - value.ndim)
    return own if own >= 0 else None


def run_split(
    op_type: str,
    fn: OpFn,
    values: Mapping[str, Sequence[Value]],
    out_types: Sequence[TensorType],
    threads: int,
    to_fp16: bool,
) -> np.ndarray | None:
    """The op's result computed in chunks on `threads` threads, rounded to float16 if `to_fp16`
    and fp16-typed; None when the op is not split (not element-wise, or too small to gain)."""
    data = DATA_PARAMETERS.get(op_type)
    if data is None or len(out_types) != 1 or threads < 2:
        return None
    found = [value for name in data for value in values.get(name, ())]
    tensors = [value for value in found if isinstance(value, np.ndarray)]
    if not tensors or len(tensors) != len(found):
        return None
    shape = np.broadcast_shapes(*(value.shape for value in tensors))
    chunks = chunk_count(math.prod(shape), threads)
    if chunks < 2:
        return None
    args = OpArgs(values, out_types)
    whole = _whole_from(op_type, args, len(shape))
    if whole is None:
        return None
    candidates = [axis for axis in range(whole) if shape[axis] > 1]
    if not candidates:
        return None
    axis = next((a for a in candidates if shape[a] >= chunks), max(candidates, key=lambda a: shape[a]))
    if not _others_whole(values, data, len(shape), axis):
        return None
    out_type = out_types[0]
    out = np.empty(_out_shape(op_type, args, shape), dtype=compute_dtype(out_type.dtype))
    round_result = to_fp16 and out_type.dtype == "fp16"

    def part(start: int, stop: int) -> None:
        sliced = {
            name: [_slice(value, len(shape), axis, start, stop) if name in data else value for value in bound]
            for name, bound in values.items()
        }
        piece = np.asarray(fn(OpArgs(sliced, out_types)))
        target = out[(slice(None),) * axis + (slice(start, stop),)]
        if piece.dtype != out.dtype or piece.shape != target.shape:
            raise DeclaredTypeError(
                f"{op_type} on a slice gave {piece.dtype}{list(piece.shape)}, "
                f"expected {out.dtype}{list(target.shape)}"
            )
        if round_result:
            inputs = (v for bound in sliced.values() for v in bound if isinstance(v, np.ndarray))
            piece = round_to_fp16(piece, reuse=not any(np.may_share_memory(piece, v) for v in inputs))
        target[...] = piece

    run(part, shape[axis], min(chunks, shape[axis]))
    return out


def _slice(value: Value, rank: int, axis: int, start: int, stop: int) -> Value:
    if not isinstance(value, np.ndarray):
        return value
    own = _along(value, rank, axis)
    if own is None or value.shape[own] == 1:  # broadcast along the split axis: every chunk reads it whole
        return value
    return value[(slice(None),) * own + (slice(start, stop),)]


def _others_whole(values: Mapping[str, Sequence[Value]], data: tuple[str, ...], rank: int, axis: int) -> bool:
    """Whether every non-data argument can be passed whole to each chunk: it does not reach the
    split axis when broadcast (scalars, trailing vectors)."""
    for name, bound in values.items():
        if name in data:
            continue
        for value in bound:
            if isinstance(value, np.ndarray) and value.size > 1:
                own = _along(value, rank, axis)
                if own is not None and value.shape[own] != 1:
                    return False
    return True
