"""Compression: k-means look-up-table palettization of the head's weights.

Only the head (FastConformer + Transformer, about 98 % of the bytes) is palettized; the
pre-encoder keeps fp16. The weights become per-tensor `constexpr_lut_to_dense` ops: the form
the released models use and the Neural Engine loads (linear int8 crashed the GPU path).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import CompressionConfig, PalettizerEngine

log = logging.getLogger(__name__)


def palettize_head(head: Path, compression: CompressionConfig, destination: Path) -> None:
    """Save a copy of the head package with its weights palettized to `compression.nbits` bits."""
    import coremltools as ct
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

    nbits = compression.nbits
    if nbits is None:
        raise ValueError(f"compression {compression.name} has no bit width to palettize to")
    engine = PalettizerEngine(compression.engine)
    if engine is PalettizerEngine.coremltools:
        op_config = OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor")
    else:
        from .palettizer import lut_function

        op_config = OpPalettizerConfig(mode="custom", lut_function=lut_function(nbits))
    log.info("Palettizing the head's weights to %d bits (%s k-means)", nbits, engine.value)
    model = ct.models.MLModel(str(head), skip_model_load=True)
    palettized = palettize_weights(model, OptimizationConfig(global_config=op_config))
    palettized.save(str(destination))
