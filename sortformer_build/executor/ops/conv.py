"""Convolution (1-D to 3-D; strides, dilations, groups, all MIL padding modes) as batched matmuls."""

from __future__ import annotations

import math
from types import EllipsisType

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ExecutorError
from ..threads import chunk_count, run
from ..tiles import matmul
from .registry import OpArgs, register


def same_padding(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    """(before, after) padding that makes the output size ceil(size / stride).

    "same" puts the odd extra element after, "same_lower" before.
    """
    effective = (kernel - 1) * dilation + 1
    total = max(0, stride * math.ceil(size / stride) - size + effective - stride)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def spatial_padding(args: OpArgs, x: np.ndarray, kernel: tuple[int, ...]) -> list[tuple[int, int]]:
    spatial = x.ndim - 2
    strides = args.ints_param("strides", [1] * spatial)
    dilations = args.ints_param("dilations", [1] * spatial)
    pad_type = args.str_param("pad_type", "valid")
    if pad_type == "valid":
        return [(0, 0)] * spatial
    if pad_type == "custom":
        pad = args.ints_param("pad", [0] * 2 * spatial)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(spatial)]
    if pad_type in ("same", "same_lower"):
        lower = pad_type == "same_lower"
        sizes = x.shape[2:]
        return [same_padding(sizes[i], kernel[i], strides[i], dilations[i], lower) for i in range(spatial)]
    raise ExecutorError(f"unknown pad_type '{pad_type}'")


def windows(x: np.ndarray, kernel: tuple[int, ...], strides: list[int], dilations: list[int]) -> np.ndarray:
    """Strided view [N, C, *out_positions, *kernel] of the sliding windows over x's spatial axes."""
    spatial = len(kernel)
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    view = sliding_window_view(x, effective, axis=tuple(range(2, 2 + spatial)))
    positions = tuple(slice(None, None, s) for s in strides)
    taps = tuple(slice(None, None, d) for d in dilations)
    return view[(slice(None), slice(None), *positions, *taps)]


@register("conv")
def _conv(args: OpArgs) -> np.ndarray:
    x, weight, bias = args.tensor("x"), args.tensor("weight"), args.optional("bias")
    spatial = x.ndim - 2
    kernel = weight.shape[2:]
    groups = args.int_param("groups", 1)
    strides, dilations = (
        args.ints_param("strides", [1] * spatial),
        args.ints_param("dilations", [1] * spatial),
    )
    padded = np.pad(x, [(0, 0), (0, 0), *spatial_padding(args, x, kernel)])
    cols = windows(padded, kernel, strides, dilations)
    n, positions = x.shape[0], cols.shape[2 : 2 + spatial]
    out_channels, group_in = weight.shape[0], x.shape[1] // groups
    if (group_in == 1 and out_channels == groups) or (groups == 1 and math.prod(kernel) == 1):
        out = _depthwise(cols, weight, args.threads) if groups > 1 else _pointwise(cols, weight, args.threads)
        if bias is not None:
            _add_channels(out, bias, args.threads)
        return np.ascontiguousarray(out, dtype=args.out_dtype())
    n_positions, n_taps = math.prod(positions), group_in * math.prod(kernel)
    # im2col per group, channels first so the product is already [C_out, positions]:
    # [G, C_out/G, C/G * kernel] @ [G, C/G * kernel, N * positions].
    cols = cols.reshape(n, groups, group_in, n_positions, math.prod(kernel))
    cols = cols.transpose(1, 2, 4, 0, 3).reshape(groups, n_taps, n * n_positions)
    kernels = weight.reshape(groups, out_channels // groups, n_taps)
    out = matmul(kernels, cols, args.threads).reshape(out_channels, n, *positions)
    out = np.moveaxis(out, 1, 0)
    if bias is not None:
        _add_channels(out, bias, args.threads)
    return np.ascontiguousarray(out, dtype=args.out_dtype())


def _add_channels(out: np.ndarray, bias: np.ndarray, threads: int) -> None:
    """out += bias per channel (axis 1), in place, channel blocks on `threads` threads."""
    per_channel = bias.reshape((1, -1) + (1,) * (out.ndim - 2))

    def part(start: int, stop: int) -> None:
        block = out[:, start:stop]
        np.add(block, per_channel[:, start:stop], out=block)

    run(part, out.shape[1], chunk_count(out.size, threads))


def _depthwise(cols: np.ndarray, weight: np.ndarray, threads: int) -> np.ndarray:
    """One filter per channel: a multiply-add per kernel tap over the window view, channel blocks
    on `threads` threads. im2col would copy every window into a matrix only to multiply it by a
    column."""
    kernel = weight.shape[2:]
    taps = weight.reshape(weight.shape[0], -1).astype(np.float32)
    channel = (1, -1) + (1,) * len(kernel)
    out = np.zeros(cols.shape[: -len(kernel)], dtype=np.float32)

    def part(start: int, stop: int) -> None:
        block, views = out[:, start:stop], cols[:, start:stop]
        for tap, offsets in enumerate(np.ndindex(*kernel)):
            window: tuple[EllipsisType | int, ...] = (Ellipsis, *offsets)
            block += views[window] * taps[start:stop, tap].reshape(channel)

    run(part, cols.shape[1], chunk_count(out.size, threads))
    return out


def _pointwise(cols: np.ndarray, weight: np.ndarray, threads: int) -> np.ndarray:
    """A 1x1 kernel: one matmul over the channels, no window matrix."""
    n, channels = cols.shape[:2]
    spatial = weight.ndim - 2
    first_tap: tuple[EllipsisType | int, ...] = (..., *(0,) * spatial)
    x = cols[first_tap]  # [N, C, *positions]
    out = matmul(weight.reshape(weight.shape[0], channels), x.reshape(n, channels, -1), threads)
    return out.reshape(n, weight.shape[0], *x.shape[2:]).astype(np.float32, copy=False)
