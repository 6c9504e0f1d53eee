"""float16 mode is exactly "every fp16-typed value rounded by NumPy's own float16 conversion".

The executor rounds with its own compiled kernel, in place where it may, and skips ops that only move
values; these tests spell the semantics out independently and compare bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sortformer_build import contract
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    GateConfig,
    VariantConfig,
    VerifyConfig,
)
from sortformer_build.executor import Model, load_package
from sortformer_build.executor.dtypes import TensorType, compute_dtype, round_to_fp16
from sortformer_build.executor.ops import OpArgs, lookup
from sortformer_build.executor.spec import Literal
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.job.build import build

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)


def numpy_fp16(values: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(values, dtype=np.float32).astype(np.float16).astype(np.float32)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- the rounding itself ------------------------------------------------------------------------------


def rounding_cases() -> np.ndarray:
    """float32 patterns around every float16 value (exact, one above, ties, one below the next tie),
    every pattern whose magnitude is below the float16 normal range at a coarse stride, and NaNs."""
    kept = np.arange(1 << 19, dtype=np.uint32) << np.uint32(13)  # sign, exponent, top 10 mantissa bits
    low = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF], dtype=np.uint32)
    around = (kept[:, None] | low[None, :]).ravel()
    tiny = np.arange(0, 0x38800000, 97, dtype=np.uint32)
    nans = np.array([0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0xFF800001, 0xFFC01234], dtype=np.uint32)
    return np.concatenate([around, tiny, tiny | np.uint32(0x80000000), nans]).view(np.float32)


def test_rounding_matches_numpy_bit_for_bit_in_every_range():
    values = rounding_cases()
    want = numpy_fp16(values)
    assert same_bits(round_to_fp16(values), want)
    in_place = values.copy()
    assert round_to_fp16(in_place, reuse=True) is in_place
    assert same_bits(in_place, want)


@pytest.mark.exhaustive
def test_rounding_matches_numpy_on_every_float32_pattern():
    block = 1 << 26
    for start in range(0, 1 << 32, block):
        values = np.arange(start, start + block, dtype=np.uint64).astype(np.uint32).view(np.float32)
        assert same_bits(round_to_fp16(values), numpy_fp16(values)), f"a pattern from {start:#010x} on"


def test_rounding_keeps_the_layout_and_leaves_shared_inputs_alone():
    values = rounding_cases()[: 3 * 4 * 5000].reshape(3, 4, 5000).transpose(2, 0, 1)
    before = values.copy()
    rounded = round_to_fp16(values)
    assert rounded.strides == np.array(values, order="K").strides
    assert same_bits(rounded, numpy_fp16(values))
    assert same_bits(values, before)
    strided = values[::2]  # not one block of memory: rounded into a copy even when reuse is allowed
    assert same_bits(round_to_fp16(strided, reuse=True), numpy_fp16(strided))
    assert same_bits(values, before)
    assert round_to_fp16(np.float32(3049.0)).shape == ()


# --- a whole package, op by op -------------------------------------------------------------------------


def _held(value: np.ndarray | str, dtype: str) -> np.ndarray | str:
    if isinstance(value, str):
        return value
    held = np.asarray(value).astype(compute_dtype(dtype))
    return numpy_fp16(held) if dtype == "fp16" else held


Arguments = dict[str, list[np.ndarray | str]]


def reference_float16(
    model: Model,
    inputs: Mapping[str, np.ndarray],
    observe: Callable[[str, Arguments, list[TensorType]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run every op in float32 on its arguments as held, and round every fp16-typed value: program
    inputs, constants and each op result (selecting ops included), with NumPy's conversion.
    `observe` sees each computed op's type, arguments and output types before it runs."""
    env: dict[str, np.ndarray | str] = dict(inputs)
    with threadpool_limits(limits=1, user_api="blas"):  # as the executor holds it
        for program in model.programs:
            values = {var.name: _held(env[var.name], var.type.dtype) for var in program.function.inputs}
            constants = set(program.constant_names)
            for op in program.operations:
                if op.outputs[0].name in constants:
                    for var in op.outputs:
                        values[var.name] = _held(program.constant(var.name), var.type.dtype)
                    continue
                assert not any(isinstance(b, Literal) for bs in op.inputs.values() for b in bs)
                arguments = {
                    param: [values[b] for b in bindings if isinstance(b, str)]
                    for param, bindings in op.inputs.items()
                }
                types = [var.type for var in op.outputs]
                if observe is not None:
                    observe(op.type, arguments, types)
                fn = lookup(op.type)
                assert fn is not None, f"no executor op for {op.type}"
                result = fn(OpArgs(arguments, types))
                results = result if isinstance(result, tuple) else (result,)
                for var, value in zip(op.outputs, results, strict=True):
                    values[var.name] = _held(value, var.type.dtype)
            env.update({name: values[name] for name in program.output_names})
    return {name: np.asarray(env[name]) for name in model.output_names}


def full_buffers(model: Model, geometry: StreamingGeometry, seed: int = 0) -> dict[str, np.ndarray]:
    spkcache = next(program for program in model.programs if contract.SPKCACHE in program.input_names)
    declared = next(var for var in spkcache.function.inputs if var.name == contract.SPKCACHE)
    shape = declared.type.shape
    assert shape is not None and shape[-1] is not None, declared.type.describe()
    pipeline_inputs, _ = contract.pipeline_contract(geometry, shape[-1])
    lengths = {
        contract.CHUNK_LENGTHS: geometry.chunk_mel_frames,
        contract.SPKCACHE_LENGTHS: geometry.spkcache_len,
        contract.FIFO_LENGTHS: geometry.fifo_len,
    }
    generator = np.random.default_rng(seed)
    return {
        tensor.name: np.array([lengths[tensor.name]], dtype=np.int32)
        if tensor.name in lengths
        else generator.standard_normal(tensor.shape).astype(np.float32)
        for tensor in pipeline_inputs
    }


@pytest.fixture(scope="module")
def palettized_package(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A tiny Default palettized6 package: every op kind of the real model, LUT weights included."""
    output = tmp_path_factory.mktemp("float16")
    config = BuildConfig(
        variant=VariantConfig(name="test", version="v2.1", file_name="Sortformer_test", **DEFAULT.__dict__),
        compression=CompressionConfig(
            name="palettized6",
            folder="palettized",
            nbits=6,
            gates=GateConfig(min_twin_decision_agreement=0.97),
        ),
        checkpoint=CheckpointConfig(source="tiny"),
        output_dir=str(output),
        cache_dir=str(shared_cache),
        verify=VerifyConfig(parity=False),
    )
    return build(config).package


def test_float16_mode_of_a_package_equals_rounding_every_op_result(palettized_package: Path):
    model = load_package(palettized_package)
    kinds = set(model.operations())
    assert {"constexpr_lut_to_dense", "linear", "matmul", "conv", "softmax", "layer_norm"} <= kinds
    for seed in (0, 1):
        inputs = full_buffers(model, DEFAULT, seed)
        got = model.predict(inputs, precision="float16")
        want = reference_float16(model, inputs)
        assert sorted(got) == sorted(want)
        for name in want:
            assert same_bits(got[name].astype(want[name].dtype), want[name]), name
    full = model.predict(inputs, precision="float32")
    assert not np.array_equal(full[contract.SPEAKER_PREDS], got[contract.SPEAKER_PREDS])
