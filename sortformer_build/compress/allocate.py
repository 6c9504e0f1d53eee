"""Bytes of a package at given bit widths, the size budget, and the choice of bits per group.

Sizes are predicted exactly enough to honour a budget: coremltools stores every const of ten
elements or more as a blob of the weight file (64-byte header, data padded to 64 bytes;
`converters/mil/backend/mil/load.py: should_use_weight_file`), smaller ones inline in the
specification. A palettized weight is its packed indices and its table; everything that is not a
compressible weight keeps the size it has in the fp16 programs.

The choice is a multiple-choice knapsack: one width per group, the sum of the groups' predicted
effects as small as possible, the sum of their bytes within the budget. The effect of a group at
a width is what palettizing that group alone did to the speaker probabilities (mean |dp|);
effects of several groups are taken to add up, a first-order estimate that holds while each is
small. Dynamic programming over a grid of at most `GRID_CELLS` byte cells: each choice costs the
bytes it takes beyond its group's smallest choice, rounded up to whole cells, so every answer fits
in bytes, and the smallest package fits whenever the budget holds it. The optimum is exact but
for that rounding: less than one cell per group of the budget may go unused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sortformer_build.config import CompressionConfig
from sortformer_build.coreml.targets import KEEP_FP16
from sortformer_build.errors import BuildError
from sortformer_build.records.mixed import PackageSizes
from sortformer_build.text import MB

GRID_CELLS = 20_000
_BLOB_HEADER = 64
_BLOB_ALIGNMENT = 64
_INLINE_BELOW = 10  # elements: smaller consts live in the specification, not the weight file
# A palettized weight's op in the specification (names, types, shape) in place of its const's.
_OP_SPEC_BYTES = 160
# Assembly adds the pipeline's specification and the metadata to the programs; held in reserve
# so that the assembled package fits the budget, which lint checks.
ASSEMBLY_BYTES = 2048


class BudgetError(BuildError):
    """A size budget no choice of bits can meet."""


def _blob(data_bytes: int) -> int:
    return _BLOB_HEADER + math.ceil(data_bytes / _BLOB_ALIGNMENT) * _BLOB_ALIGNMENT


def tensor_bytes(elements: int, nbits: int) -> int:
    """Bytes one compressible fp16 weight takes in a package at `nbits` (KEEP_FP16: as it is)."""
    if nbits == KEEP_FP16:
        return _blob(2 * elements)
    entries = 1 << nbits
    table = _blob(2 * entries) if entries >= _INLINE_BELOW else 2 * entries
    return _blob(math.ceil(nbits * elements / 8)) + table + _OP_SPEC_BYTES


def package_bytes(sizes: PackageSizes, nbits: Mapping[str, int]) -> int:
    """The package's size with each weight at its width."""
    return sizes.fixed_bytes + sum(tensor_bytes(sizes.tensors[name], bits) for name, bits in nbits.items())


def floor_bytes(sizes: PackageSizes, nbits: Sequence[int]) -> int:
    """The smallest package the widths allow: every weight at the lowest."""
    return package_bytes(sizes, dict.fromkeys(sizes.tensors, min(nbits)))


def package_sizes(programs: Sequence[Path], compressible: Path, keep_prefix: str | None) -> PackageSizes:
    """Sizes from the converted fp16 programs (the package assembles them as they are); reads
    only the specification of `compressible`, not its weights."""
    from sortformer_build.coreml.package import package_size

    tensors = compressible_elements(compressible, keep_prefix)
    fp16 = sum(package_size(program) for program in programs)
    weights = sum(tensor_bytes(elements, KEEP_FP16) for elements in tensors.values())
    return PackageSizes(fp16_bytes=fp16, fixed_bytes=fp16 - weights + ASSEMBLY_BYTES, tensors=tensors)


def compressible_elements(package: Path, keep_prefix: str | None) -> dict[str, int]:
    """Elements of each weight `palettize_program` compresses, read from the specification."""
    from coremltools.proto import MIL_pb2

    from sortformer_build.coreml.package import operation_name, read_package
    from sortformer_build.coreml.palettize import WEIGHT_THRESHOLD

    (program,) = read_package(package).programs
    found = {}
    for op in program.operations:
        tensor = op.outputs[0].type.tensorType if op.type == "const" else None
        if tensor is None or tensor.dataType != MIL_pb2.DataType.FLOAT16:
            continue
        name = operation_name(op)
        elements = math.prod(dimension.constant.size for dimension in tensor.dimensions)
        if elements > WEIGHT_THRESHOLD and not (keep_prefix is not None and name.startswith(keep_prefix)):
            found[name] = elements
    return found


def budget_bytes(compression: CompressionConfig, fp16_bytes: int) -> int:
    """The budget in bytes: `budget_mb` (1 MB = 10^6 bytes), or `budget_ratio` times the fp16
    package (`config.validate_config` has checked that exactly one is given, in range)."""
    if compression.budget_mb is not None:
        return int(compression.budget_mb * MB)
    assert compression.budget_ratio is not None, "a measured mixed build has a budget"
    return int(compression.budget_ratio * fp16_bytes)


def check_budget(budget: int, sizes: PackageSizes, nbits: Sequence[int]) -> None:
    """Refuse a budget below the smallest package the widths allow, before any measurement."""
    floor = floor_bytes(sizes, nbits)
    if budget < floor:
        raise BudgetError(
            f"a {budget / MB:.2f} MB budget is below the smallest package ({floor / MB:.2f} MB: every "
            f"weight at {min(nbits)} bits, fp16 {sizes.fp16_bytes / MB:.2f} MB); raise the budget"
        )


def allocate(options: Mapping[str, Mapping[int, tuple[int, float]]], capacity: int) -> dict[str, int]:
    """One width per group (`options`: group -> width -> (bytes, effect)) with the least total
    effect whose bytes add up to at most `capacity`. Ties go to the fewer bytes."""
    smallest = {group: min(size for size, _ in widths.values()) for group, widths in options.items()}
    spare = capacity - sum(smallest.values())
    if spare < 0:
        raise BudgetError(
            f"{capacity / MB:.2f} MB of weights is below every group at its smallest "
            f"({sum(smallest.values()) / MB:.2f} MB); raise the budget"
        )
    cell = max(1, math.ceil(spare / GRID_CELLS))
    extra = {
        group: {
            bits: (math.ceil((size - smallest[group]) / cell), effect)
            for bits, (size, effect) in widths.items()
        }
        for group, widths in options.items()
    }
    return _knapsack(extra, spare // cell)


def _knapsack(options: Mapping[str, Mapping[int, tuple[int, float]]], cells: int) -> dict[str, int]:
    """`options` in cells; the smallest choice of every group costs none, so one always fits."""
    best = np.zeros(cells + 1)  # least effect of the groups so far within c cells
    choices = []
    for group, widths in options.items():
        ordered = sorted(widths.items(), key=lambda item: (item[1][0], item[1][1]))
        new = np.full(best.size, np.inf)
        chosen = np.full(best.size, -1)
        for index, (_, (size, effect)) in enumerate(ordered):
            if size >= best.size:
                continue
            candidate = np.full(best.size, np.inf)
            candidate[size:] = best[: best.size - size] + effect
            better = candidate < new
            new[better], chosen[better] = candidate[better], index
        best = new
        choices.append((group, ordered, chosen))
    picked = {}
    remaining = cells
    for group, ordered, chosen in reversed(choices):
        width, (size, _) = ordered[int(chosen[remaining])]
        picked[group] = width
        remaining -= size
    return {group: picked[group] for group in options}
