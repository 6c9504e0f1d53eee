"""Executor package reading, weight decoding, pipelines, precision modes and load/run-time checks."""

from __future__ import annotations

from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as cto
import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import get_new_symbol, types
from coremltools.proto import MIL_pb2

from sortformer_build.coreml.palettize import load_program
from sortformer_build.executor import (
    DeclaredTypeError,
    ExecutorError,
    UnsupportedOperationError,
    load_package,
    supported_op_types,
)
from sortformer_build.executor.dtypes import round_to_fp16

from .executor_support import IOS17, build, convert, read_spec, save, write_spec

RNG = np.random.default_rng(2)
WEIGHT = RNG.standard_normal((16, 24)).astype(np.float32)
BIAS = RNG.standard_normal(16).astype(np.float32)


def linear_model(
    target: ct.target = IOS17, precision: ct.precision = ct.precision.FLOAT16
) -> ct.models.MLModel:
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 24), dtype=types.fp32)], opset_version=target)
    def prog(x):
        return mb.relu(x=mb.linear(x=x, weight=WEIGHT, bias=BIAS), name="out")

    return convert(prog, target=target, precision=precision, optimize=True)


def assert_constants_match_coremltools(path: Path) -> int:
    """Every const / constexpr value decodes to coremltools' own value, bit for bit; returns the count."""
    program = load_package(path).programs[0]
    compared = 0
    for op in load_program(path).functions["main"].operations:
        name = op.outputs[0].name
        if name not in program.constant_names:
            continue
        theirs = op.materialized_val_inference() if op.op_type.startswith("constexpr_") else op.outputs[0].val
        ours = program.constant(name)
        if isinstance(theirs, str):
            assert ours == theirs, name
        else:
            assert isinstance(ours, np.ndarray), name
            theirs = np.asarray(theirs)
            assert ours.dtype == theirs.dtype, f"{name}: {ours.dtype} vs {theirs.dtype}"
            assert ours.shape == theirs.shape, name
            assert ours.tobytes() == theirs.tobytes(), f"{name}: values differ"
        compared += 1
    return compared


# --- weights ---------------------------------------------------------------------------------------


def test_const_values_decode_bit_exactly(tmp_path):
    big = RNG.standard_normal((40, 24)).astype(np.float32)
    half = RNG.standard_normal((40, 24)).astype(np.float16)
    small_int8 = np.array([-128, -3, 0, 7, 127], np.int8)
    big_uint8 = RNG.integers(0, 256, 300).astype(np.uint8)
    ids = RNG.integers(0, 40, 50).astype(np.int32)
    mask = RNG.integers(0, 2, 24).astype(bool)

    specs = [mb.TensorSpec(shape=(40, 24), dtype=types.fp32), mb.TensorSpec(shape=(1,), dtype=types.int32)]

    @mb.program(input_specs=specs, opset_version=IOS17)
    def prog(x, k):
        mixed = mb.add(x=mb.mul(x=x, y=big), y=mb.cast(x=half, dtype="fp32"))
        picked = mb.gather(x=mixed, indices=ids, axis=0, name="picked")
        flags = mb.select(cond=mask, a=picked, b=np.float32(0), name="flags")
        shifted_int8 = mb.add(x=mb.cast(x=small_int8, dtype="int32"), y=k, name="shifted_int8")
        shifted_uint8 = mb.add(x=mb.cast(x=big_uint8, dtype="int32"), y=k, name="shifted_uint8")
        return picked, flags, shifted_int8, shifted_uint8

    path = save(convert(prog), tmp_path)
    blob_backed = [
        op
        for op in read_spec(path).mlProgram.functions["main"].block_specializations["CoreML7"].operations
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"
    ]
    assert len(blob_backed) == 3  # fp32, fp16 and uint8 go to weight.bin; int8 (5 values) stays inline
    assert assert_constants_match_coremltools(path) >= 10
    outputs = load_package(path).predict(
        {"x": np.ones((40, 24), np.float32), "k": np.array([1000], np.int32)}
    )
    picked = (big + half.astype(np.float32))[ids]
    np.testing.assert_allclose(outputs["picked"], picked, rtol=1e-6)
    np.testing.assert_allclose(outputs["flags"], np.where(mask, picked, 0), rtol=1e-6)
    np.testing.assert_array_equal(outputs["shifted_int8"], small_int8.astype(np.int32) + 1000)
    np.testing.assert_array_equal(outputs["shifted_uint8"], big_uint8.astype(np.int32) + 1000)


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_lut_palettization_ios16_form(tmp_path, nbits):
    config = cto.OptimizationConfig(cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", weight_threshold=1))
    path = save(cto.palettize_weights(linear_model(), config), tmp_path)
    model = load_package(path)
    assert model.operations()["constexpr_lut_to_dense"] == 1
    assert assert_constants_match_coremltools(path) >= 2
    program = model.programs[0]
    (lut_op,) = [op for op in program.operations if op.type == "constexpr_lut_to_dense"]
    assert "shape" in lut_op.inputs  # the iOS16 form keeps its parameters as attributes
    lut = program.constant(lut_op.outputs[0].name)
    assert isinstance(lut, np.ndarray)
    weight = lut.astype(np.float32)
    x = RNG.standard_normal((2, 24)).astype(np.float32)
    bias = BIAS.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(
        model.predict({"x": x})["out"], np.maximum(x @ weight.T + bias, 0), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "palettizer",
    [
        cto.OpPalettizerConfig(nbits=3, mode="kmeans", granularity="per_grouped_channel", group_size=4),
        cto.OpPalettizerConfig(nbits=2, mode="kmeans", cluster_dim=2),
    ],
    ids=["grouped_3bit", "vector"],
)
def test_lut_palettization_ios18_forms(tmp_path, palettizer):
    palettizer.weight_threshold = 1
    compressed = cto.palettize_weights(linear_model(ct.target.iOS18), cto.OptimizationConfig(palettizer))
    path = save(compressed, tmp_path)
    assert load_package(path).operations()["constexpr_lut_to_dense"] == 1
    assert assert_constants_match_coremltools(path) >= 2


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_affine_dequantize_is_decoded_and_counted(tmp_path, dtype):
    config = cto.OptimizationConfig(
        cto.OpLinearQuantizerConfig(mode="linear", dtype=dtype, weight_threshold=1)
    )
    path = save(cto.linear_quantize_weights(linear_model(), config), tmp_path)
    model = load_package(path)
    assert model.operations()["constexpr_affine_dequantize"] == 1
    assert assert_constants_match_coremltools(path) >= 2
    assert model.predict({"x": np.ones((2, 24), np.float32)})["out"].shape == (2, 16)


def test_blockwise_int4_and_sparse_weights(tmp_path):
    int4 = cto.OpLinearQuantizerConfig(
        mode="linear", dtype="int4", granularity="per_block", block_size=8, weight_threshold=1
    )
    pruned = cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=1)
    cases = {
        "constexpr_blockwise_shift_scale": cto.linear_quantize_weights(
            linear_model(ct.target.iOS18), cto.OptimizationConfig(int4)
        ),
        "constexpr_sparse_to_dense": cto.prune_weights(linear_model(), cto.OptimizationConfig(pruned)),
    }
    for op_type, compressed in cases.items():
        path = save(compressed, tmp_path)
        assert load_package(path).operations()[op_type] == 1
        assert assert_constants_match_coremltools(path) >= 2


# --- pipelines and functions ---------------------------------------------------------------------


def test_pipeline_runs_programs_in_order(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(16, 2), dtype=types.fp32)], opset_version=IOS17)
    def head(hidden):
        return mb.sigmoid(x=mb.transpose(x=hidden, perm=[1, 0]), name="probabilities")

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 24), dtype=types.fp32)], opset_version=IOS17)
    def encoder(x):
        out = mb.relu(x=mb.linear(x=x, weight=WEIGHT, bias=BIAS))
        return mb.transpose(x=out, perm=[1, 0], name="hidden")

    pipeline = ct.utils.make_pipeline(convert(encoder), convert(head))
    model = load_package(save(pipeline, tmp_path))
    assert model.input_names == ("x",)
    assert model.output_names == ("probabilities",)
    assert [p.input_names for p in model.programs] == [("x",), ("hidden",)]
    assert model.operations()["sigmoid"] == 1 and model.operations()["transpose"] == 2
    x = RNG.standard_normal((2, 24)).astype(np.float32)
    expected = 1 / (1 + np.exp(-np.maximum(x @ WEIGHT.T + BIAS, 0)))
    np.testing.assert_allclose(model.predict({"x": x})["probabilities"], expected, rtol=1e-5)


def test_default_function_of_a_multifunction_package(tmp_path):
    def model(op: str) -> Path:
        @mb.program(input_specs=[mb.TensorSpec(shape=(2,), dtype=types.fp32)], opset_version=ct.target.iOS18)
        def prog(x):
            return getattr(mb, op)(x=x, y=np.float32(10), name="out")

        return save(convert(prog, target=ct.target.iOS18), tmp_path)

    descriptor = ct.utils.MultiFunctionDescriptor()
    descriptor.add_function(str(model("add")), src_function_name="main", target_function_name="plus")
    descriptor.add_function(str(model("mul")), src_function_name="main", target_function_name="times")
    descriptor.default_function_name = "times"
    ct.utils.save_multifunction(descriptor, str(tmp_path / "multi.mlpackage"))
    loaded = load_package(tmp_path / "multi.mlpackage")
    assert loaded.programs[0].function.name == "times"
    np.testing.assert_array_equal(loaded.predict({"x": np.array([1, 2], np.float32)})["out"], [10, 20])


def test_symbolic_dims_accept_any_size(tmp_path):
    @mb.program(
        input_specs=[mb.TensorSpec(shape=(get_new_symbol(), 4), dtype=types.fp32)], opset_version=IOS17
    )
    def prog(x):
        return mb.reduce_sum(x=mb.relu(x=x), axes=[1], name="out")

    flexible = ct.TensorType(name="x", shape=(ct.RangeDim(1, 10), 4))
    mlmodel = ct.convert(
        prog, inputs=[flexible], minimum_deployment_target=IOS17, pass_pipeline=ct.PassPipeline.EMPTY
    )
    model = load_package(save(mlmodel, tmp_path))
    assert model.programs[0].function.inputs[0].type.shape == (None, 4)
    for rows in (1, 3, 7):
        x = RNG.standard_normal((rows, 4)).astype(np.float32)
        np.testing.assert_allclose(model.predict({"x": x})["out"], np.maximum(x, 0).sum(axis=1), rtol=1e-6)


# --- precision modes ------------------------------------------------------------------------------


def test_float16_mode_rounds_fp16_typed_length_arithmetic(tmp_path):
    def body(n):
        as_fp16 = mb.cast(x=n, dtype="fp16")
        for step in (1.0, 1.0, -3.0):
            as_fp16 = mb.add(x=as_fp16, y=np.float16(step))
        in_int32 = mb.add(x=mb.add(x=mb.add(x=n, y=np.int32(1)), y=np.int32(1)), y=np.int32(-3))
        return mb.cast(x=as_fp16, dtype="int32", name="fp16_length"), mb.identity(
            x=in_int32, name="int32_length"
        )

    model = build(tmp_path, body, {"n": np.array([3048], np.int32)})
    half = model.predict({"n": np.array([3048], np.int32)}, precision="float16")
    full = model.predict({"n": np.array([3048], np.int32)}, precision="float32")
    assert half["fp16_length"].tolist() == [3044]
    assert half["int32_length"].tolist() == [3047]
    assert full["fp16_length"].tolist() == [3047]
    assert full["int32_length"].tolist() == [3047]
    assert half["int32_length"].dtype == np.int32


def test_float16_mode_rounds_every_fp16_result_of_a_converted_model(tmp_path):
    model = load_package(save(linear_model(precision=ct.precision.FLOAT16), tmp_path))
    (linear_op,) = [op for op in model.programs[0].operations if op.type == "linear"]
    assert linear_op.outputs[0].type.dtype == "fp16"
    x = RNG.standard_normal((2, 24)).astype(np.float32) * 30
    half = model.predict({"x": x}, precision="float16")["out"]
    full = model.predict({"x": x}, precision="float32")["out"]
    assert half.dtype == full.dtype == np.float32
    np.testing.assert_array_equal(half, half.astype(np.float16).astype(np.float32))
    assert not np.array_equal(half, full)
    np.testing.assert_allclose(half, full, rtol=2e-3, atol=2e-2)


def test_fp16_rounding_matches_numpy_float16_everywhere():
    bit_patterns = np.random.default_rng(3).integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    edges = [
        0.0,
        -0.0,
        2**-25,
        3 * 2**-25,
        -(2**-24),
        2**-14,
        3049.0,
        3045.0,
        65504.0,
        65519.9,
        65520.0,
        -np.inf,
        np.nan,
    ]
    values = np.concatenate([bit_patterns.view(np.float32), np.array(edges, np.float32)])
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).astype(np.float32)
    got = round_to_fp16(values)
    same_bits = want.view(np.uint32) == got.view(np.uint32)
    assert np.all(same_bits | (np.isnan(want) & np.isnan(got)))
    assert round_to_fp16(np.float32(3049.0)).shape == ()


BRIEF_OPS = (
    "const",
    "constexpr_lut_to_dense",
    "constexpr_affine_dequantize",
    "cast",
    "conv",
    "linear",
    "matmul",
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
    "logical_not",
    "logical_xor",
    "select",
    "layer_norm",
    "batch_norm",
    "instance_norm",
    "softmax",
    "sigmoid",
    "relu",
    "silu",
    "tanh",
    "erf",
    "gelu",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "inverse",
    "abs",
    "floor",
    "ceil",
    "round",
    "sign",
    "clip",
    "transpose",
    "reshape",
    "expand_dims",
    "squeeze",
    "concat",
    "split",
    "stack",
    "slice_by_index",
    "slice_by_size",
    "gather",
    "gather_along_axis",
    "gather_nd",
    "scatter",
    "scatter_along_axis",
    "scatter_nd",
    "pad",
    "tile",
    "range_1d",
    "fill",
    "fill_like",
    "shape",
    "reduce_sum",
    "reduce_mean",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_argmax",
    "cumsum",
    "topk",
    "band_part",
    "einsum",
    "identity",
    "one_hot",
)


def test_every_op_of_the_brief_is_supported():
    assert set(BRIEF_OPS) - supported_op_types() == set()


# --- load-time and run-time checks ---------------------------------------------------------------


def _main_ops(spec) -> list[MIL_pb2.Operation]:
    function = spec.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def test_unknown_op_fails_at_load_naming_it(tmp_path):
    path = save(linear_model(), tmp_path)
    spec = read_spec(path)
    (relu,) = [op for op in _main_ops(spec) if op.type == "relu"]
    relu.type = "frobnicate"
    write_spec(path, spec)
    with pytest.raises(
        UnsupportedOperationError, match=r"'frobnicate' \(1 use, first at op #\d+ \('out_cast_fp16'\)"
    ):
        load_package(path)
    try:
        load_package(path)
    except UnsupportedOperationError as error:
        assert error.op_types == ("frobnicate",)
    assert "frobnicate" not in supported_op_types()


@pytest.mark.parametrize("tamper", ["shape", "dtype"])
def test_declared_type_mismatch_is_caught(tmp_path, tamper):
    path = save(linear_model(), tmp_path)
    spec = read_spec(path)
    (relu,) = [op for op in _main_ops(spec) if op.type == "relu"]
    declared = relu.outputs[0].type.tensorType
    if tamper == "shape":
        declared.dimensions[1].constant.size = 17
        message = r"\(relu\): output 'out_cast_fp16' is float32\[2, 16\], declared fp16\[2, 17\]"
    else:
        declared.dataType = MIL_pb2.INT32
        message = r"\(relu\): output 'out_cast_fp16' is float32\[2, 16\], declared int32\[2, 16\]"
    write_spec(path, spec)
    model = load_package(path)
    with pytest.raises(DeclaredTypeError, match=message):
        model.predict({"x": np.ones((2, 24), np.float32)})


def test_input_checks(tmp_path):
    model = load_package(save(linear_model(), tmp_path))
    with pytest.raises(ExecutorError, match="missing"):
        model.predict({})
    with pytest.raises(ExecutorError, match=r"has shape \[3, 24\]"):
        model.predict({"x": np.ones((3, 24), np.float32)})
    with pytest.raises(ExecutorError, match="declares fp32"):
        model.predict({"x": np.ones((2, 24), np.complex64)})
    with pytest.raises(ExecutorError, match=r"unknown: \['y'\]"):
        model.predict({"x": np.ones((2, 24), np.float32), "y": np.ones(1)})
    with pytest.raises(ValueError, match="precision"):
        model.predict({"x": np.ones((2, 24), np.float32)}, precision="bfloat16")
    assert model.predict({"x": np.ones((2, 24), np.float64)})["out"].shape == (2, 16)


def test_op_seconds_count_every_running_op_type_and_change_no_result(tmp_path):
    model = load_package(save(linear_model(), tmp_path))
    x = RNG.standard_normal((2, 24)).astype(np.float32)
    op_seconds: dict[str, float] = {}
    timed = model.predict({"x": x}, precision="float16", op_seconds=op_seconds)
    constant = ("const", "constexpr_")
    running = {op.type for op in model.programs[0].operations if not op.type.startswith(constant)}
    assert set(op_seconds) == running and "linear" in running
    assert all(seconds > 0 for seconds in op_seconds.values())
    assert timed["out"].tobytes() == model.predict({"x": x}, precision="float16")["out"].tobytes()
