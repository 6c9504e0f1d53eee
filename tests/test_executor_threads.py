"""The executor's own threads change nothing: every op kind it splits, matrix products, and whole
packages give the same bits on several threads as on one, in float32 and in float16 mode, whatever
BLAS's own thread setting."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from threadpoolctl import threadpool_info, threadpool_limits

from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    GateConfig,
    VariantConfig,
    VerifyConfig,
)
from sortformer_build.executor import Model, load_package, tiles
from sortformer_build.executor import threads as executor_threads
from sortformer_build.executor.dtypes import TensorType, round_to_fp16
from sortformer_build.executor.ops import OpArgs, lookup
from sortformer_build.executor.ops.registry import Value
from sortformer_build.executor.split import DATA_PARAMETERS, run_split
from sortformer_build.executor.threads import one_blas_thread
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.job.build import build

from . import executor_support
from .test_executor_float16 import Arguments, full_buffers, reference_float16, same_bits

NVIDIA_HIGH = StreamingGeometry(340, 1, 40, 40, 188, 300)
# The chunk size here: arrays of test size split as the full-size model's do, and a tiny
# package's ops split too.
CHUNK = 1 << 15
SHAPE = (3, 50, 700)  # 105,000 elements: three chunks of at least CHUNK
RNG = np.random.default_rng(0)

# Inputs inside each op's domain, and its parameters; x has SHAPE, y broadcasts against it.
_UNIT = {"acos", "asin", "atanh"}
_POSITIVE = {"log", "sqrt", "rsqrt", "pow"}
_LOGICAL = {"logical_and", "logical_or", "logical_xor", "logical_not"}
PARAMETERS: dict[str, dict[str, np.generic | np.ndarray | str]] = {
    "clip": {"alpha": np.float32(-0.5), "beta": np.float32(0.7)},
    "threshold": {"alpha": np.float32(0.1)},
    "cast": {"dtype": "int32"},
    "gelu": {"mode": "TANH_APPROXIMATION"},
    "leaky_relu": {"alpha": np.float32(0.1)},
    "elu": {"alpha": np.float32(1.5)},
    "thresholded_relu": {"alpha": np.float32(0.3)},
    "clamped_relu": {"alpha": np.float32(0.2), "beta": np.float32(1.0)},
    "linear_activation": {"alpha": np.float32(1.3), "beta": np.float32(-0.2)},
    "scaled_tanh": {"alpha": np.float32(2.0), "beta": np.float32(0.5)},
    "sigmoid_hard": {"alpha": np.float32(0.2), "beta": np.float32(0.5)},
    "softmax": {"axis": np.int32(-1)},
    "pad": {"pad": np.array([0, 0, 1, 2, 2, 3], dtype=np.int32), "mode": "reflect"},
    "layer_norm": {
        "axes": np.array([-1], dtype=np.int32),
        "gamma": RNG.standard_normal(SHAPE[-1:]).astype(np.float32),
        "beta": RNG.standard_normal(SHAPE[-1:]).astype(np.float32),
        "epsilon": np.float32(1e-5),
    },
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_threads, "MIN_CHUNK_ELEMENTS", CHUNK)


def data(op_type: str, shape: tuple[int, ...]) -> np.ndarray:
    if op_type in _LOGICAL:
        return RNG.random(shape) < 0.5
    if op_type in _UNIT:
        return RNG.uniform(-0.99, 0.99, shape).astype(np.float32)
    if op_type in _POSITIVE:
        return RNG.uniform(0.01, 3.0, shape).astype(np.float32)
    # Spread over many binades, with values a float16 rounds to subnormals and to infinity.
    return (RNG.standard_normal(shape) * np.exp2(RNG.integers(-20, 18, shape))).astype(np.float32)


def op_values(op_type: str) -> dict[str, Sequence[Value]]:
    names = DATA_PARAMETERS[op_type]
    # The second and third tensors broadcast: per row of axis 1, and across axis 0.
    shapes = [SHAPE, (1, SHAPE[1], 1), SHAPE[1:]]
    values: dict[str, Sequence[Value]] = {}
    for name, shape in zip(names, shapes, strict=False):
        values[name] = [RNG.random(shape) < 0.5 if name == "cond" else data(op_type, shape)]
    for name, value in PARAMETERS.get(op_type, {}).items():
        # Held as the executor holds a constant: a 0-d array, or a string.
        values[name] = [value if isinstance(value, str) else np.asarray(value)]
    return values


def out_type(op_type: str, fp16: bool) -> TensorType:
    if op_type == "cast":
        return TensorType("int32", SHAPE)
    if op_type == "pad":  # the last two axes padded
        return TensorType("fp16" if fp16 else "fp32", (SHAPE[0], SHAPE[1] + 3, SHAPE[2] + 5))
    if op_type.startswith(("equal", "not_equal", "less", "greater", "logical")):
        return TensorType("bool", SHAPE)
    return TensorType("fp16" if fp16 else "fp32", SHAPE)


@pytest.mark.parametrize("op_type", sorted(DATA_PARAMETERS))
def test_every_split_op_kind_gives_the_bits_of_one_thread(op_type: str) -> None:
    fn = lookup(op_type)
    assert fn is not None
    values = op_values(op_type)
    for fp16 in (False, True):
        types = [out_type(op_type, fp16)]
        to_fp16 = types[0].dtype == "fp16"
        with np.errstate(all="ignore"):
            whole = np.asarray(fn(OpArgs(values, types)))
        want = round_to_fp16(whole) if to_fp16 else whole
        for threads in (2, 3, 8):
            got = run_split(op_type, fn, values, types, threads, to_fp16)
            assert got is not None, f"{op_type} was not split"
            assert same_bits(got, want), (op_type, fp16, threads)


def test_reductions_split_only_ahead_of_their_trailing_axes() -> None:
    x = data("softmax", SHAPE)
    types = [TensorType("fp32", SHAPE)]
    softmax, layer_norm, linear = lookup("softmax"), lookup("layer_norm"), lookup("linear")
    assert softmax is not None and layer_norm is not None and linear is not None
    across_rows: dict[str, Sequence[Value]] = {"x": [x], "axis": [np.asarray(np.int32(1))]}
    assert run_split("softmax", softmax, across_rows, types, 4, False) is None
    norm: dict[str, Sequence[Value]] = {
        "x": [x],
        "axes": [np.array([1], dtype=np.int32)],
        "epsilon": [np.asarray(np.float32(1e-5))],
    }
    assert run_split("layer_norm", layer_norm, norm, types, 4, False) is None
    small: dict[str, Sequence[Value]] = {
        "x": [x[:, :, : CHUNK // 200]],
        "axis": [np.asarray(np.int32(-1))],
    }
    assert run_split("softmax", softmax, small, types, 4, False) is None  # too small to gain
    assert run_split("linear", linear, {"x": [x]}, types, 4, False) is None  # a product: in tiles


def test_matrix_products_give_the_bits_of_one_thread() -> None:
    """Batched, broadcast and transposed operands, with edge tiles smaller than the rest."""
    x = RNG.standard_normal((2, 1, 300, 96)).astype(np.float32)
    y = RNG.standard_normal((3, 600, 96)).astype(np.float32).swapaxes(-1, -2)
    assert tiles.MIN_TILED_WORK <= 2 * 3 * 300 * 96 * 600
    with threadpool_limits(limits=1, user_api="blas"):
        one = tiles.matmul(x, y, 1)
        for threads in (2, 3, 8):
            assert same_bits(tiles.matmul(x, y, threads), one), threads
    assert one.shape == (2, 3, 300, 600)
    np.testing.assert_allclose(one, np.matmul(x, y), rtol=1e-4, atol=1e-4)


def test_a_program_gives_the_same_bits_whatever_blas_is_set_to(tmp_path: Path) -> None:
    """BLAS's own threads would change the last bits of this product; the executor holds BLAS to
    one thread and cuts the product into tiles of its own."""
    x = RNG.standard_normal((188, 512)).astype(np.float32)
    weight = RNG.standard_normal((512, 512)).astype(np.float32)
    model = executor_support.build(tmp_path, lambda x: mb.linear(x=x, weight=weight), {"x": x})
    with threadpool_limits(limits=1, user_api="blas"):
        one = model.predict({"x": x})
    for blas in (2, 4):
        with threadpool_limits(limits=blas, user_api="blas"):
            for threads in (1, 2):
                got = model.predict({"x": x}, threads=threads)
                assert same_bits(got[model.output_names[0]], one[model.output_names[0]]), (blas, threads)


def test_matrix_products_keep_numpys_shapes_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiles, "MIN_TILED_WORK", 0)
    x = RNG.standard_normal((4, 300, 200)).astype(np.float32)
    with pytest.raises(ValueError):
        tiles.matmul(x, RNG.standard_normal((4, 1, 300)).astype(np.float32), 2)
    for left, right in [
        ((0, 5), (5, 3)),
        ((2, 0), (0, 3)),
        ((0, 2, 5), (5, 3)),
        ((3,), (3, 4)),
        ((2, 3), (3,)),
    ]:
        a, b = np.ones(left, np.float32), np.ones(right, np.float32)
        assert same_bits(tiles.matmul(a, b, 2), np.matmul(a, b)), (left, right)


def test_holds_on_blas_overlap_and_the_last_one_gives_it_back() -> None:
    def blas_threads() -> set[int]:
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):
        first, second = one_blas_thread(), one_blas_thread()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # as when another thread's run ends first
        assert blas_threads() == {1}
        second.__exit__(None, None, None)
        assert blas_threads() == {2}


@pytest.fixture(scope="module")
def nvidia_high_package(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A tiny NvidiaHigh palettized6 package: its 3048-frame chunk makes tensors large enough to
    split even at toy width, and its head decodes LUT weights."""
    config = BuildConfig(
        variant=VariantConfig(
            name="test", version="v2.1", file_name="SortformerNvidiaHigh_test", **NVIDIA_HIGH.__dict__
        ),
        compression=CompressionConfig(
            name="palettized6",
            folder="palettized",
            nbits=6,
            gates=GateConfig(min_twin_decision_agreement=0.97),
        ),
        checkpoint=CheckpointConfig(source="tiny"),
        output_dir=str(tmp_path_factory.mktemp("threads")),
        cache_dir=str(shared_cache),
        verify=VerifyConfig(parity=False),
    )
    return build(config).package


def split_kinds(model: Model, inputs: dict[str, np.ndarray]) -> set[str]:
    """The op kinds the threaded path splits in a run of `model` on `inputs`, asked op by op on the
    values each op gets."""
    kinds: set[str] = set()

    def observe(op_type: str, arguments: Arguments, types: list[TensorType]) -> None:
        fn = lookup(op_type)
        assert fn is not None
        if run_split(op_type, fn, arguments, types, 4, False) is not None:
            kinds.add(op_type)

    with np.errstate(all="ignore"):
        reference_float16(model, inputs, observe)
    return kinds


def test_a_whole_package_gives_the_bits_of_one_thread(
    nvidia_high_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its products cut into small tiles (the tiny model's are below the size that is cut), BLAS
    set to one thread and to several outside."""
    monkeypatch.setattr(tiles, "MIN_TILED_WORK", 0)
    monkeypatch.setattr(tiles, "TILE_ROWS", 16)
    monkeypatch.setattr(tiles, "TILE_COLUMNS", 24)
    model = load_package(nvidia_high_package)
    inputs = full_buffers(model, NVIDIA_HIGH)
    assert {"softmax", "silu", "add", "mul", "relu", "pad"} <= split_kinds(model, inputs)
    for precision in ("float32", "float16"):
        with threadpool_limits(limits=1, user_api="blas"):
            one = model.predict(inputs, precision=precision)
        for threads in (2, 5):
            with threadpool_limits(limits=threads, user_api="blas"):
                many = model.predict(inputs, precision=precision, threads=threads)
            for name, value in one.items():
                assert same_bits(many[name], value), (precision, threads, name)


def test_a_split_op_feeds_a_product_the_bits_of_one_thread(tmp_path: Path) -> None:
    """An element-wise op on a transposed tensor, split on several threads or not, then products
    of one row and one column, which BLAS computes with kernels that follow the operands' layout."""
    x = RNG.standard_normal((600, 300)).astype(np.float32)
    column = RNG.standard_normal((600, 1)).astype(np.float32)
    row = RNG.standard_normal((1, 300)).astype(np.float32)

    def body(x):
        doubled = mb.mul(x=mb.transpose(x=x, perm=[1, 0]), y=np.float32(2.0))
        return mb.matmul(x=doubled, y=column, name="by_column"), mb.matmul(x=row, y=doubled, name="by_row")

    model = executor_support.build(tmp_path, body, {"x": x})
    one = model.predict({"x": x})
    for threads in (2, 3):
        many = model.predict({"x": x}, threads=threads)
        for name, value in one.items():
            assert same_bits(many[name], value), (name, threads)
