"""Compression: k-means look-up-table palettization of a program's weights.

Only FastConformer + Transformer (nearly all of the bytes) are palettized; the pre-encode
subsampling keeps fp16: in a streaming model it is a program of its own, in the offline model
its weights are left out by name. The weights become per-tensor `constexpr_lut_to_dense` ops:
the form the released models use and the Neural Engine loads (linear int8 crashed the GPU path).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sortformer_build.config import PalettizerEngine
from sortformer_build.coreml.package import make_spec_deterministic, read_package
from sortformer_build.coreml.targets import KEEP_FP16, LUT_NBITS
from sortformer_build.records.facts import PalettizeFacts
from sortformer_build.store import atomic
from sortformer_build.store.cache import ArrayStore

if TYPE_CHECKING:
    from sortformer_build.coreml.palettizer import KnownLuts

log = logging.getLogger(__name__)

# coremltools leaves smaller tensors (biases, norms) uncompressed.
WEIGHT_THRESHOLD = 2048


def palettize_program(
    package: Path,
    nbits: int | Mapping[str, int],
    engine: PalettizerEngine,
    destination: Path,
    luts: ArrayStore,
    keep_prefix: str | None = None,
) -> PalettizeFacts:
    """Save a copy of a one-program package with its weights palettized, except the weights
    whose names start with `keep_prefix`: to `nbits` bits, or with a width per weight when
    `nbits` maps every compressible const name (`compressible_weights`) to its width
    (`KEEP_FP16` leaves that weight as it is).

    The fast engine takes each tensor's LUT from `luts` (keyed by the tensor's content and
    width) or computes the missing ones together, then hands them to coremltools' supported
    `mode="custom"` hook, which packs the indices and writes the ops.
    """
    import coremltools as ct
    from coremltools.optimize.coreml import OptimizationConfig

    from sortformer_build.coreml.convert import drop_volatile_metadata

    program = load_program(package)
    weights = _weights(program)
    compressed = _compressible(weights, keep_prefix)
    kept = set(weights) - set(compressed)
    if isinstance(nbits, int):
        op_config, facts = _op_config(nbits, engine, list(compressed.values()), luts)
        config = OptimizationConfig(global_config=op_config, op_name_configs=dict.fromkeys(kept))
    else:
        widths = _checked_widths(nbits, compressed)
        by_width: dict[int, list[str]] = {}
        for name, width in widths.items():
            by_width.setdefault(width, []).append(name)
        names: dict[str, Any] = dict.fromkeys(kept | set(by_width.pop(KEEP_FP16, [])))
        parts = []
        for width, members in sorted(by_width.items()):
            op_config, part = _op_config(width, engine, [compressed[name] for name in members], luts)
            names |= dict.fromkeys(members, op_config)
            parts.append(part)
        facts = _combined(engine, parts)
        config = OptimizationConfig(op_name_configs=names)
    # coremltools' `palettize_weights` would rerun the whole default pass pipeline (most of its
    # time) on an already optimized program; a pipeline holding only the palettization pass
    # writes the same op. A const named with a None config stays as it is.
    pipeline = ct.PassPipeline(pass_names=["compression::palettize_weights"], pipeline_name="palettize")
    pipeline.set_options("compression::palettize_weights", {"config": config})
    # coremltools writes its own package first: beside the destination, not in a temporary
    # folder it would keep until the process exits.
    converted = destination.with_name(f"converted-{destination.name}")
    palettized = ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=program.functions["main"].opset_version,
        pass_pipeline=pipeline,
        compute_precision=ct.precision.FLOAT32,  # the program is already fp16; add no casts
        skip_model_load=True,
        package_dir=str(converted),
    )
    drop_volatile_metadata(palettized)
    palettized.save(str(destination))
    make_spec_deterministic(destination)
    atomic.remove(converted)
    return facts


def _op_config(
    nbits: int, engine: PalettizerEngine, weights: list[np.ndarray], luts: ArrayStore
) -> tuple[Any, PalettizeFacts]:
    from coremltools.optimize.coreml import OpPalettizerConfig

    if engine is PalettizerEngine.coremltools:
        return OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor"), PalettizeFacts(
            engine=engine.value
        )
    from sortformer_build.coreml.palettizer import lut_function

    known, hits, misses = tensor_luts(weights, nbits, luts)
    return (
        OpPalettizerConfig(mode="custom", lut_function=lut_function(nbits, known)),
        PalettizeFacts(engine=engine.value, lut_cache_hits=hits, lut_cache_misses=misses),
    )


def _combined(engine: PalettizerEngine, parts: list[PalettizeFacts]) -> PalettizeFacts:
    if engine is not PalettizerEngine.fast:
        return PalettizeFacts(engine=engine.value)
    return PalettizeFacts(
        engine=engine.value,
        lut_cache_hits=sum(part.lut_cache_hits or 0 for part in parts),
        lut_cache_misses=sum(part.lut_cache_misses or 0 for part in parts),
    )


def _checked_widths(widths: Mapping[str, int], compressed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Every compressible weight named once, at a width Core ML tables take (or KEEP_FP16)."""
    unknown = sorted(set(widths) - set(compressed))
    missing = sorted(set(compressed) - set(widths))
    if unknown or missing:
        raise ValueError(
            f"per-tensor widths must name every compressible weight: {len(unknown)} unknown "
            f"({', '.join(unknown[:3])}), {len(missing)} missing ({', '.join(missing[:3])})"
        )
    wrong = sorted({width for width in widths.values() if width not in (*LUT_NBITS, KEEP_FP16)})
    if wrong:
        raise ValueError(f"widths {wrong} are not table sizes ({LUT_NBITS}) or {KEEP_FP16} (fp16)")
    return {name: widths[name] for name in compressed}


def compressible_weights(package: Path, keep_prefix: str | None = None) -> dict[str, np.ndarray]:
    """The fp16 weights `palettize_program` compresses, by const name, in program order."""
    return _compressible(_weights(load_program(package)), keep_prefix)


def _compressible(weights: Mapping[str, np.ndarray], keep_prefix: str | None) -> dict[str, np.ndarray]:
    return {
        name: weight
        for name, weight in weights.items()
        if keep_prefix is None or not name.startswith(keep_prefix)
    }


def load_program(package: Path) -> Any:
    """The package's ML program as a coremltools MIL program (the loader `palettize_weights`
    itself uses)."""
    from coremltools.converters.mil.frontend.milproto.load import load

    saved = read_package(package)
    spec = saved.spec
    return load(
        spec, specification_version=spec.specificationVersion, file_weights_dir=str(saved.weights_dir)
    )


def _weights(program: Any) -> dict[str, np.ndarray]:
    """The fp16 weight tensors coremltools would palettize (its size threshold), by const name."""
    consts = program.functions["main"].find_ops(op_type="const")
    return {
        op.name: value
        for op in consts
        if isinstance(value := op.outputs[0].val, np.ndarray)
        and value.dtype == np.float16
        and value.size > WEIGHT_THRESHOLD
    }


def tensor_luts(weights: list[np.ndarray], nbits: int, store: ArrayStore) -> tuple[KnownLuts, int, int]:
    """LUTs of `weights` by content key: cached ones, then the rest solved in one batch
    (k-means in lockstep shares NumPy's per-call cost). The hook finds them again without hashing
    these arrays a second time."""
    from sortformer_build.coreml.palettizer import KnownLuts, fp16_luts_of, tensor_key

    by_key = {tensor_key(weight, nbits): weight for weight in weights}
    known = {key: lut for key in by_key if (lut := store.get(key)) is not None}
    missing = [key for key in by_key if key not in known]
    hits = len(known)
    log.info(
        "Palettizing %d weight tensors: %d look-up tables cached, %d to compute",
        len(by_key),
        len(known),
        len(missing),
    )
    for key, lut in fp16_luts_of({key: by_key[key] for key in missing}, nbits).items():
        store.put(key, lut)
        known[key] = lut
    return KnownLuts(known, by_key), hits, len(missing)
