"""Compression: k-means look-up-table palettization of the head's weights.

Only the head (FastConformer + Transformer, about 98 % of the bytes) is palettized; the
pre-encoder keeps fp16. The weights become per-tensor `constexpr_lut_to_dense` ops: the form
the released models use and the Neural Engine loads (linear int8 crashed the GPU path).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .cache import ArrayStore
from .config import CompressionConfig, PalettizerEngine

log = logging.getLogger(__name__)

# coremltools leaves smaller tensors (biases, norms) uncompressed.
WEIGHT_THRESHOLD = 2048


def palettize_head(
    head: Path, compression: CompressionConfig, destination: Path, luts: ArrayStore
) -> dict[str, Any]:
    """Save a copy of the head package with its weights palettized to `compression.nbits` bits.

    The fast engine takes each tensor's LUT from `luts` (keyed by the tensor's content) or
    computes the missing ones together, then hands them to coremltools' supported
    `mode="custom"` hook, which packs the indices and writes the ops.
    """
    import coremltools as ct
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

    nbits = compression.nbits
    if nbits is None:
        raise ValueError(f"compression {compression.name} has no bit width to palettize to")
    facts: dict[str, Any] = {"engine": PalettizerEngine(compression.engine).value}
    if PalettizerEngine(compression.engine) is PalettizerEngine.coremltools:
        op_config = OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor")
    else:
        from .palettizer import lut_function

        known, facts["lut_cache_hits"], facts["lut_cache_misses"] = tensor_luts(head, nbits, luts)
        op_config = OpPalettizerConfig(mode="custom", lut_function=lut_function(nbits, known))
    model = ct.models.MLModel(str(head), skip_model_load=True)
    palettized = palettize_weights(model, OptimizationConfig(global_config=op_config))
    palettized.save(str(destination))
    return facts


def tensor_luts(head: Path, nbits: int, store: ArrayStore) -> tuple[dict[str, np.ndarray], int, int]:
    """LUTs of every weight tensor coremltools will palettize: cached ones, then the rest
    solved in one batch (k-means in lockstep shares NumPy's per-call cost)."""
    from .executor import load_package
    from .palettizer import fp16_luts_of, tensor_key

    (program,) = load_package(head).programs
    weights = {}
    for name in program.constant_names:
        value = program.constant(name)
        if isinstance(value, np.ndarray) and value.dtype == np.float16 and value.size > WEIGHT_THRESHOLD:
            weights[tensor_key(value, nbits)] = value
    known = {key: lut for key in weights if (lut := store.get(key)) is not None}
    missing = [key for key in weights if key not in known]
    log.info(
        "Palettizing %d weight tensors: %d look-up tables cached, %d to compute",
        len(weights),
        len(known),
        len(missing),
    )
    for key, lut in fp16_luts_of({key: weights[key] for key in missing}, nbits).items():
        store.put(key, lut)
        known[key] = lut
    return known, len(weights) - len(missing), len(missing)
