"""Static checks of a saved package (a streaming pipeline or an offline model): what the Swift
runtime and Core ML will demand.

Every check reads the package on disk (never the torch graph: the converter folds identities
away) and yields one line per finding; an empty list means the package passed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build import contract
from sortformer_build.coreml.package import (
    PackageError,
    SavedPackage,
    SavedProgram,
    operation_name,
    package_size,
    read_package,
)
from sortformer_build.coreml.targets import DEFAULT_TARGET, KEEP_FP16, TARGET_FACTS, DeploymentTarget
from sortformer_build.geometry import Geometry, GeometryError
from sortformer_build.kinds import kind_for_metadata, kind_of
from sortformer_build.kinds.base import ModelKind

PALETTE_OP = "constexpr_lut_to_dense"
# Linear weight quantization crashed the GPU path of the Sortformer head.
LINEAR_QUANT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "dequantize")
_DTYPES = {65568: "FLOAT32", 65552: "FLOAT16", 131104: "INT32"}


@dataclass(frozen=True)
class Expectation:
    """What the build intended; None leaves a property to be read from the package itself."""

    geometry: Geometry | None = None
    d_model: int | None = None
    nbits: int | None = None  # None: fp16, no palettized weights (unless `tensor_bits` says)
    # A mixed build's width per const of the compressed program (KEEP_FP16: left fp16).
    tensor_bits: Mapping[str, int] | None = None
    max_bytes: int | None = None  # the size budget a mixed build's recipe was chosen for
    deployment_target: DeploymentTarget = DEFAULT_TARGET


def lint_package(package: Path, expected: Expectation, check_compression: bool = True) -> list[str]:
    """Findings, one line each; `check_compression=False` when nobody said what the
    compression should be (linear weight quantization is still flagged)."""
    try:
        saved = read_package(package)
    except PackageError as error:
        return [str(error)]
    findings = list(_lint(saved, expected, check_compression))
    if expected.max_bytes is not None and (size := package_size(package)) > expected.max_bytes:
        findings.append(f"size: the package is {size} bytes, over its {expected.max_bytes}-byte budget")
    return findings


def _lint(saved: SavedPackage, expected: Expectation, check_compression: bool) -> Iterator[str]:
    spec = saved.spec
    geometry = yield from _check_metadata(spec, expected.geometry)
    if geometry is not None:
        yield from _check_contract(spec, geometry, expected.d_model)
    programs = list(saved.programs)
    if not programs:
        yield "the package holds no ML program"
    yield from _check_aliasing(spec, programs)
    yield from _check_target(spec, programs, expected.deployment_target)
    yield from _check_linear_quantization(programs)
    if check_compression and geometry is not None:
        yield from _check_compression(programs, expected, kind_of(geometry))


def _check_metadata(spec: Any, expected: Geometry | None) -> Generator[str, None, Geometry | None]:
    metadata = dict(spec.description.metadata.userDefined)
    kind = kind_for_metadata(metadata)
    try:
        geometry = kind.geometry_from_metadata(metadata)
        geometry.validate()
    except GeometryError as error:
        yield f"metadata: {error}"
        return expected
    if expected is not None and geometry != expected:
        yield f"metadata: geometry {geometry.metadata()} differs from the expected {expected.metadata()}"
        return expected
    yield from kind.metadata_findings(metadata)
    return geometry


def _check_contract(spec: Any, geometry: Geometry, d_model: int | None) -> Iterator[str]:
    if d_model is None:
        d_model = _declared_width(spec)
    inputs, outputs = kind_of(geometry).contract(geometry, d_model)
    for kind, declared, wanted in (
        ("input", spec.description.input, inputs),
        ("output", spec.description.output, outputs),
    ):
        by_name = {feature.name: feature for feature in declared}
        extra = sorted(set(by_name) - {tensor.name for tensor in wanted})
        if extra:
            yield f"contract: unexpected {kind}s {', '.join(extra)}"
        for tensor in wanted:
            feature = by_name.get(tensor.name)
            if feature is None:
                yield f"contract: missing {kind} {tensor.name}"
                continue
            yield from _check_feature(kind, feature, tensor)


def _declared_width(spec: Any) -> int:
    shapes = {feature.name: tuple(feature.type.multiArrayType.shape) for feature in spec.description.input}
    return int(shapes.get(contract.SPKCACHE, (0, 0, 0))[-1])


def _check_feature(kind: str, feature: Any, tensor: contract.TensorContract) -> Iterator[str]:
    if feature.type.WhichOneof("Type") != "multiArrayType":
        yield f"contract: {kind} {tensor.name} is not a multi-array"
        return
    array = feature.type.multiArrayType
    dtype = _DTYPES.get(array.dataType, str(array.dataType))
    if dtype not in tensor.dtypes:
        yield f"contract: {kind} {tensor.name} is {dtype}, expected {' or '.join(tensor.dtypes)}"
    shape = tuple(array.shape)
    if shape != tensor.shape:
        yield f"contract: {kind} {tensor.name} has shape {list(shape)}, expected {list(tensor.shape)}"


def _check_aliasing(spec: Any, programs: list[SavedProgram]) -> Iterator[str]:
    """BNNS (macOS/iOS 26) rejects a function whose output tensor is also one of its inputs."""
    pipeline_inputs = {feature.name for feature in spec.description.input}
    for feature in spec.description.output:
        if feature.name in pipeline_inputs:
            yield f"aliasing: pipeline output {feature.name} is also a pipeline input"
    for program in programs:
        for name in sorted(set(program.output_names) & set(program.input_names)):
            yield f"aliasing: {program.describe()} returns its input {name} unchanged (needs its own op)"


def _check_target(spec: Any, programs: list[SavedProgram], target: DeploymentTarget) -> Iterator[str]:
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    name = target.value
    facts = TARGET_FACTS[target]
    if spec.specificationVersion > facts.max_specification_version:
        yield f"target: specification version {spec.specificationVersion} needs newer OSes than {name}"
    available = getattr(ct.target, name)
    for program in programs:
        if program.opset != facts.opset:
            yield f"target: {program.describe()} uses opset {program.opset}, {name} runs {facts.opset}"
        for op_type in sorted({op.type for op in program.operations}):
            if available not in SSAOpRegistry.core_ops.get(op_type, {}):
                yield f"target: {program.describe()} uses {op_type}, which {name} does not have"


def _check_linear_quantization(programs: list[SavedProgram]) -> Iterator[str]:
    for program in programs:
        for op_type in sorted({op.type for op in program.operations} & set(LINEAR_QUANT_OPS)):
            yield f"compression: {program.describe()} has linear weight quantization ({op_type})"


def _check_compression(programs: list[SavedProgram], expected: Expectation, kind: ModelKind) -> Iterator[str]:
    """Palettized weights exactly where the kind says: its compressed program as the build said
    (one width, or each const's own), and nothing in what it keeps fp16 (a whole program, or the
    weights named with a prefix)."""
    if len(programs) != kind.package_programs:
        yield (
            f"compression: a {kind.name} package holds {kind.package_programs} program(s), "
            f"this one {len(programs)}"
        )
        return
    compressed = programs[kind.compressed_program]
    if kind.kept_program is not None:
        kept = programs[kind.kept_program]
        if PALETTE_OP in {op.type for op in kept.operations}:
            yield f"compression: {kind.kept_part} is palettized; it must keep full-precision weights"
    if kind.kept_prefix is not None:
        yield from _check_prefix_kept(compressed, kind.kept_prefix, kind.kept_part)
    if expected.tensor_bits is not None:
        yield from check_tensor_bits([compressed], expected.tensor_bits)
        return
    nbits = expected.nbits
    palettes = [op for op in compressed.operations if op.type == PALETTE_OP]
    if nbits is None and palettes:
        yield f"compression: an fp16 build has {len(palettes)} palettized weights"
    if nbits is not None:
        if not palettes:
            where = compressed.describe()
            yield f"compression: a {nbits}-bit palettized build has no {PALETTE_OP} weights in {where}"
        sizes = sorted({_lut_entries(op) for op in palettes} - {1 << nbits})
        if sizes:
            yield f"compression: look-up tables of {sizes} entries in a {nbits}-bit build"


def check_tensor_bits(programs: Sequence[SavedProgram], widths: Mapping[str, int]) -> Iterator[str]:
    """Each weight palettized as a per-tensor choice says (`widths`: const name -> bits,
    KEEP_FP16 for a weight left fp16), and no other weight palettized. coremltools names a
    palettized const's op after it (`<const>_palettized`, `palettize_weights.transform_op`)."""
    suffix = "_palettized"
    tables, plain = {}, set()
    for program in programs:
        for op in program.operations:
            if op.type == PALETTE_OP and (name := operation_name(op)).endswith(suffix):
                tables[name.removesuffix(suffix)] = _lut_entries(op)
            elif op.type == "const":
                plain.add(operation_name(op))
    for name, bits in widths.items():
        entries = tables.get(name)
        if bits == KEEP_FP16:
            if entries is not None:
                yield f"compression: {name} has a {entries}-entry table; its recipe keeps it fp16"
            elif name not in plain:
                yield f"compression: {name}, kept fp16 by its recipe, is not in the package"
        elif entries is None:
            found = "left fp16" if name in plain else "not in the package"
            yield f"compression: {name} is {found}; its recipe says {bits} bits"
        elif entries != 1 << bits:
            yield f"compression: {name} has a {entries}-entry table; its recipe says {bits} bits"
    for name in sorted(set(tables) - set(widths)):
        yield f"compression: {name} is palettized ({tables[name]} entries) but its recipe does not name it"


def _check_prefix_kept(program: SavedProgram, prefix: str, part: str) -> Iterator[str]:
    """Weights kept fp16 inside a compressed program are told apart by their names (the traced
    module path); finding none of them at all would make this check vacuous, so that fails too."""
    kept = palettized = 0
    for op in program.operations:
        if op.outputs and op.outputs[0].name.startswith(prefix):
            kept += op.type == "const"
            palettized += op.type == PALETTE_OP
    if palettized:
        yield f"compression: {palettized} {part} weights are palettized; they must stay fp16"
    elif not kept:
        yield f"compression: {program.describe()} has no {part} weights ({prefix}*)"


def _lut_entries(op: Any) -> int:
    """Entries of a constexpr_lut_to_dense table (the last dimension of its `lut`)."""
    return int(op.attributes["lut"].type.tensorType.dimensions[-1].constant.size)
