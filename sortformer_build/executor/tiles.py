"""Matrix products cut into tiles of a fixed size, each one single-threaded BLAS call, the tiles
shared among the executor's threads.

BLAS's own threads split a product by how many of them there are, and its kernels sum the cut
edges in another order: the last bits of a product change with BLAS's thread count, and a
streaming state carries those changes on into decisions. The tiles here depend only on the
shapes, so with a given BLAS library on a given CPU a product has the same bits on any number
of threads: a job alone or beside others, a recording alone or beside others. BLAS is held at
one thread while a program runs (`runtime.Program.run`), so einsum, which is not tiled, is
single-threaded and as independent of the thread count.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .threads import run

TILE_ROWS = 128
TILE_COLUMNS = 256
# Below this many multiply-adds a product is one call: handing tiles to threads costs more.
MIN_TILED_WORK = 1 << 22


def matmul(x: np.ndarray, y: np.ndarray, threads: int) -> np.ndarray:
    """`np.matmul(x, y)` (leading axes broadcast), its tiles run on up to `threads` threads with
    the same bits on any number of them."""
    if x.ndim < 2 or y.ndim < 2:
        return np.matmul(x, y)
    (rows, inner), columns = x.shape[-2:], y.shape[-1]
    batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    if y.shape[-2] != inner or math.prod(batch) * rows * inner * columns < MIN_TILED_WORK:
        return np.matmul(x, y)  # NumPy's own error for mismatched operands
    x = np.broadcast_to(x, (*batch, *x.shape[-2:]))
    y = np.broadcast_to(y, (*batch, *y.shape[-2:]))
    out = np.empty((*batch, rows, columns), dtype=np.result_type(x, y))
    tiles = list(
        itertools.product(np.ndindex(*batch), range(0, rows, TILE_ROWS), range(0, columns, TILE_COLUMNS))
    )

    def part(start: int, stop: int) -> None:
        for index, row, column in tiles[start:stop]:
            row_end, column_end = row + TILE_ROWS, column + TILE_COLUMNS
            np.matmul(
                x[index][row:row_end],
                y[index][:, column:column_end],
                out=out[index][row:row_end, column:column_end],
            )

    run(part, len(tiles), min(threads, len(tiles)))
    return out
