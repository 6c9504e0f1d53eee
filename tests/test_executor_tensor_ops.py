"""Shape, layout and indexing ops of the executor against independent NumPy computations."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import coremltools as ct
import numpy as np
import numpy.typing as npt
import pytest
from coremltools.converters.mil import Builder as mb

from .executor_support import run

RNG = np.random.default_rng(1)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def assert_equal_outputs(outputs: dict[str, np.ndarray], expected: Mapping[str, npt.ArrayLike]) -> None:
    assert set(outputs) == set(expected)
    for name, value in expected.items():
        want = np.asarray(value)
        assert outputs[name].shape == want.shape, (
            f"{name}: shape {outputs[name].shape}, expected {want.shape}"
        )
        np.testing.assert_array_equal(outputs[name], want, err_msg=name)


def test_layout_ops(tmp_path):
    x = randn(2, 3, 4)
    y = randn(2, 3, 4)
    expected = {
        "transpose": x.transpose(2, 0, 1),
        "reshape_infer": x.reshape(6, 4),
        "reshape_zero": x.reshape(3, 8),  # iOS17: a 0 copies the dim counted from the right
        "reshape_zero_rank_up": x.reshape(1, 2, 3, 4),
        "expand_dims": x[None, ..., None],
        "squeeze_all": x[:, :1, :1].reshape(2),
        "squeeze_ignores_non_unit": x[:, :1, :].reshape(2, 4),
        "concat": np.concatenate([x, y], axis=1),
        "concat_interleave": np.stack([x, y], axis=3).reshape(2, 3, 8),
        "stack": np.stack([x, y], axis=-1),
        "tile": np.tile(x, (1, 2, 3)),
        "flatten2d": x.reshape(6, 4),
        "reverse": x[::-1, :, ::-1],
        "identity": x,
    }

    def body(x, y):
        corner = mb.slice_by_size(x=x, begin=[0, 0, 0], size=[-1, 1, 1])
        row = mb.slice_by_size(x=x, begin=[0, 0, 0], size=[-1, 1, -1])
        return (
            mb.transpose(x=x, perm=[2, 0, 1], name="transpose"),
            mb.reshape(x=x, shape=[-1, 4], name="reshape_infer"),
            mb.reshape(x=x, shape=[0, -1], name="reshape_zero"),
            mb.reshape(x=x, shape=[1, 0, -1, 0], name="reshape_zero_rank_up"),
            mb.expand_dims(x=x, axes=[0, -1], name="expand_dims"),
            mb.squeeze(x=corner, name="squeeze_all"),
            mb.squeeze(x=row, axes=[1, 2], name="squeeze_ignores_non_unit"),
            mb.concat(values=(x, y), axis=1, name="concat"),
            mb.concat(values=(x, y), axis=-1, interleave=True, name="concat_interleave"),
            mb.stack(values=(x, y), axis=-1, name="stack"),
            mb.tile(x=x, reps=[1, 2, 3], name="tile"),
            mb.flatten2d(x=x, axis=-1, name="flatten2d"),
            mb.reverse(x=x, axes=[0, -1], name="reverse"),
            mb.identity(x=x, name="identity"),
        )

    assert_equal_outputs(run(tmp_path, body, {"x": x, "y": y}), expected)


def test_split_by_count_and_sizes(tmp_path):
    x = randn(2, 6, 3)

    def body(x):
        a, b, c = mb.split(x=x, num_splits=3, axis=1, name="even")
        d, e = mb.split(x=x, split_sizes=[1, 5], axis=-2, name="sized")
        return (
            mb.identity(x=a, name="a"),
            mb.identity(x=b, name="b"),
            mb.identity(x=c, name="c"),
            mb.identity(x=d, name="d"),
            mb.identity(x=e, name="e"),
        )

    expected = {"a": x[:, :2], "b": x[:, 2:4], "c": x[:, 4:], "d": x[:, :1], "e": x[:, 1:]}
    assert_equal_outputs(run(tmp_path, body, {"x": x}), expected)


def test_slice_by_index_masks_and_strides(tmp_path):
    x = randn(4, 5, 6)
    expected = {
        "basic": x[1:3, 0:5:2, 2:6],
        "negative": x[-3:-1, ::-1, -5:-1:3],
        "masks": x[:3, 2:, ::2],
        "squeeze": x[2, 1:4, -1],
        "clamped": x[0:10, 0:100, 0:3],
    }

    def body(x):
        return (
            mb.slice_by_index(x=x, begin=[1, 0, 2], end=[3, 5, 6], stride=[1, 2, 1], name="basic"),
            mb.slice_by_index(
                x=x,
                begin=[-3, 0, -5],
                end=[-1, 0, -1],
                stride=[1, -1, 3],
                begin_mask=[False, True, False],
                end_mask=[False, True, False],
                name="negative",
            ),
            mb.slice_by_index(
                x=x,
                begin=[9, 2, 9],
                end=[3, 9, 9],
                stride=[1, 1, 2],
                begin_mask=[True, False, True],
                end_mask=[False, True, True],
                name="masks",
            ),
            mb.slice_by_index(
                x=x, begin=[2, 1, -1], end=[3, 4, 0], squeeze_mask=[True, False, True], name="squeeze"
            ),
            mb.slice_by_index(x=x, begin=[0, 0, 0], end=[10, 100, 3], name="clamped"),
        )

    assert_equal_outputs(run(tmp_path, body, {"x": x}), expected)


def test_slice_with_runtime_begin(tmp_path):
    x = randn(3, 8)
    start = np.array([0, 2], np.int32)

    def body(x, start):
        end = mb.add(x=start, y=np.array([3, 4], np.int32))
        return (
            mb.slice_by_index(x=x, begin=start, end=end, name="by_index"),
            mb.slice_by_size(x=x, begin=start, size=[2, -1], name="by_size"),
        )

    outputs = run(tmp_path, body, {"x": x, "start": start})
    np.testing.assert_array_equal(outputs["by_index"], x[0:3, 2:6])
    np.testing.assert_array_equal(outputs["by_size"], x[0:2, 2:])


def test_gathers(tmp_path):
    x = randn(3, 4, 5)
    idx = np.array([[2, 0], [1, 1], [0, 3]], np.int32)
    along = RNG.integers(0, 4, (3, 2, 5)).astype(np.int32)
    nd = np.array([[[0, 1], [2, 3]], [[1, 0], [0, 0]]], np.int32)
    batch_nd = np.array([[[3], [0]], [[1], [1]], [[2], [0]]], np.int32)
    expected = {
        "axis0": x[idx[:, 0]],
        "axis1_matrix": x[:, idx],
        "axis_last": x[:, :, idx[0]],
        "batch_dims": np.stack([x[b][idx[b]] for b in range(3)]),
        "along": np.take_along_axis(x, along, axis=1),
        "nd": x[nd[..., 0], nd[..., 1]],
        "nd_batch": np.stack([x[b][batch_nd[b][:, 0]] for b in range(3)]),
    }

    def body(x, idx, along, nd, batch_nd):
        first = mb.squeeze(x=mb.slice_by_size(x=idx, begin=[0, 0], size=[-1, 1]), axes=[1])
        row = mb.squeeze(x=mb.slice_by_size(x=idx, begin=[0, 0], size=[1, -1]), axes=[0])
        return (
            mb.gather(x=x, indices=first, axis=0, name="axis0"),
            mb.gather(x=x, indices=idx, axis=1, name="axis1_matrix"),
            mb.gather(x=x, indices=row, axis=-1, validate_indices=True, name="axis_last"),
            mb.gather(x=x, indices=idx, axis=1, batch_dims=1, name="batch_dims"),
            mb.gather_along_axis(x=x, indices=along, axis=1, name="along"),
            mb.gather_nd(x=x, indices=nd, name="nd"),
            mb.gather_nd(x=x, indices=batch_nd, batch_dims=1, name="nd_batch"),
        )

    inputs = {"x": x, "idx": idx, "along": along, "nd": nd, "batch_nd": batch_nd}
    assert_equal_outputs(run(tmp_path, body, inputs), expected)


def test_gather_negative_indices_ios16(tmp_path):
    x = randn(5, 3)
    idx = np.array([-1, 0, -5, 2], np.int32)
    outputs = run(
        tmp_path,
        lambda x, idx: mb.gather(x=x, indices=idx, name="out"),
        {"x": x, "idx": idx},
        target=ct.target.iOS16,
    )
    np.testing.assert_array_equal(outputs["out"], x[[4, 0, 0, 2]])


@pytest.mark.parametrize("mode", ["update", "add", "sub", "mul", "div", "max", "min"])
def test_scatters(tmp_path, mode):
    data = RNG.uniform(1, 2, (4, 3)).astype(np.float32)
    idx = np.array([2, 0], np.int32)
    updates = RNG.uniform(1, 2, (2, 3)).astype(np.float32)
    along_idx = np.array([[3, 1, 0], [0, 2, 1]], np.int32)
    nd_idx = np.array([[1, 2], [3, 0]], np.int32)
    nd_updates = np.array([5.0, 7.0], np.float32)
    combines: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "update": lambda a, b: b,
        "add": np.add,
        "sub": np.subtract,
        "mul": np.multiply,
        "div": np.divide,
        "max": np.maximum,
        "min": np.minimum,
    }
    combine = combines[mode]
    scatter = data.copy()
    scatter[idx] = combine(data[idx], updates)
    along = data.copy()
    for i in range(2):
        for j in range(3):
            along[along_idx[i, j], j] = combine(along[along_idx[i, j], j], updates[i, j])
    nd = data.copy()
    for k, (i, j) in enumerate(nd_idx):
        nd[i, j] = combine(nd[i, j], nd_updates[k])

    def body(data, idx, updates, along_idx, nd_idx, nd_updates):
        return (
            mb.scatter(data=data, indices=idx, updates=updates, axis=0, mode=mode, name="scatter"),
            mb.scatter_along_axis(
                data=data, indices=along_idx, updates=updates, axis=0, mode=mode, name="along"
            ),
            mb.scatter_nd(data=data, indices=nd_idx, updates=nd_updates, mode=mode, name="nd"),
        )

    inputs = {
        "data": data,
        "idx": idx,
        "updates": updates,
        "along_idx": along_idx,
        "nd_idx": nd_idx,
        "nd_updates": nd_updates,
    }
    outputs = run(tmp_path, body, inputs)
    for name, want in {"scatter": scatter, "along": along, "nd": nd}.items():
        np.testing.assert_allclose(outputs[name], want, rtol=1e-6, err_msg=name)


def test_scatter_add_accumulates_repeated_indices(tmp_path):
    data = np.zeros((3, 2), np.float32)
    idx = np.array([1, 1, 2], np.int32)
    updates = np.ones((3, 2), np.float32)
    outputs = run(
        tmp_path,
        lambda data, idx, updates: mb.scatter(
            data=data, indices=idx, updates=updates, mode="add", name="out"
        ),
        {"data": data, "idx": idx, "updates": updates},
    )
    np.testing.assert_array_equal(outputs["out"], [[0, 0], [2, 2], [1, 1]])


def test_pad_modes(tmp_path):
    x = randn(2, 3, 4)

    def body(x):
        return (
            mb.pad(x=x, pad=[1, 2], mode="constant", constant_val=-3.0, name="constant_last"),
            mb.pad(x=x, pad=[0, 1, 2, 1], mode="reflect", name="reflect"),
            mb.pad(x=x, pad=[1, 0, 2, 3], mode="replicate", name="replicate"),
            mb.pad(x=x, pad=[1, 1, 0, 0, 1, 0], name="all_dims"),
        )

    expected = {
        "constant_last": np.pad(x, [(0, 0), (0, 0), (1, 2)], constant_values=-3.0),
        "reflect": np.pad(x, [(0, 0), (0, 1), (2, 1)], mode="reflect"),
        "replicate": np.pad(x, [(0, 0), (1, 0), (2, 3)], mode="edge"),
        "all_dims": np.pad(x, [(1, 1), (0, 0), (1, 0)]),
    }
    assert_equal_outputs(run(tmp_path, body, {"x": x}), expected)


def test_generators_and_shape(tmp_path):
    x = randn(2, 5)
    n = np.array([7], np.int32)

    def body(x, n):
        shape = mb.shape(x=x, name="shape")
        length = mb.squeeze(x=n)
        return (
            shape,
            mb.fill(shape=shape, value=2.5, name="fill"),
            mb.fill_like(ref_tensor=x, value=np.int32(4), name="fill_like"),
            mb.range_1d(start=np.int32(1), end=length, step=np.int32(2), name="range_int"),
            mb.range_1d(start=np.float32(0.5), end=np.float32(2.0), step=np.float32(0.5), name="range_float"),
            mb.band_part(x=mb.fill(shape=[4, 5], value=1.0), lower=1, upper=2, name="band"),
            mb.band_part(x=x, lower=0, upper=-1, name="upper_triangle"),
            mb.one_hot(
                indices=mb.cast(x=mb.range_1d(start=0, end=3, step=1), dtype="int32"),
                one_hot_vector_size=4,
                axis=0,
                on_value=5.0,
                off_value=-1.0,
                name="one_hot",
            ),
        )

    rows, cols = np.arange(4)[:, None], np.arange(5)[None, :]
    expected = {
        "shape": np.array([2, 5]),
        "fill": np.full((2, 5), 2.5),
        "fill_like": np.full((2, 5), 4),
        "range_int": np.array([1, 3, 5]),
        "range_float": np.array([0.5, 1.0, 1.5]),
        "band": ((rows - cols <= 1) & (cols - rows <= 2)).astype(np.float32),
        "upper_triangle": np.triu(x),
        "one_hot": np.where(np.arange(4)[:, None] == np.arange(3)[None, :], 5.0, -1.0),
    }
    outputs = run(tmp_path, body, {"x": x, "n": n})
    assert_equal_outputs(outputs, expected)
    assert outputs["shape"].dtype == outputs["fill_like"].dtype == outputs["range_int"].dtype == np.int32


def test_cumsum_sort_and_topk(tmp_path):
    x = np.array([[3.0, 1.0, 4.0, 1.0, 5.0], [9.0, 2.0, 6.0, 5.0, 3.0]], np.float32)

    def body(x):
        top_values, top_indices = mb.topk(x=x, k=3, axis=-1, name="topk")
        low_values, low_indices = mb.topk(x=x, k=2, axis=0, ascending=True, name="bottom")
        return (
            mb.cumsum(x=x, axis=1, name="cumsum"),
            mb.cumsum(x=x, axis=1, exclusive=True, name="exclusive"),
            mb.cumsum(x=x, axis=-1, reverse=True, name="reverse"),
            mb.cumsum(x=x, axis=1, exclusive=True, reverse=True, name="exclusive_reverse"),
            mb.identity(x=top_values, name="top_values"),
            mb.identity(x=top_indices, name="top_indices"),
            mb.identity(x=low_values, name="low_values"),
            mb.identity(x=low_indices, name="low_indices"),
            mb.argsort(x=x, axis=-1, name="argsort_descending"),
            mb.argsort(x=x, axis=-1, ascending=True, name="argsort_ascending"),
        )

    inclusive = np.cumsum(x, axis=1)
    from_right = np.cumsum(x[:, ::-1], axis=1)[:, ::-1]
    expected: dict[str, npt.ArrayLike] = {
        "cumsum": inclusive,
        "exclusive": inclusive - x,
        "reverse": from_right,
        "exclusive_reverse": from_right - x,
        "top_values": [[5.0, 4.0, 3.0], [9.0, 6.0, 5.0]],
        "top_indices": [[4, 2, 0], [0, 2, 3]],
        "low_values": [[3.0, 1.0, 4.0, 1.0, 3.0], [9.0, 2.0, 6.0, 5.0, 5.0]],
        "low_indices": [[0, 0, 0, 0, 1], [1, 1, 1, 1, 0]],
        "argsort_descending": [[4, 2, 0, 1, 3], [0, 2, 3, 4, 1]],
        "argsort_ascending": [[1, 3, 0, 2, 4], [1, 4, 3, 2, 0]],
    }
    assert_equal_outputs(run(tmp_path, body, {"x": x}), expected)


def test_sliding_windows(tmp_path):
    x = randn(2, 7, 3)
    outputs = run(tmp_path, lambda x: mb.sliding_windows(x=x, axis=1, size=3, stride=2, name="out"), {"x": x})
    expected = np.stack([x[:, i : i + 3] for i in range(0, 5, 2)], axis=1)
    np.testing.assert_array_equal(outputs["out"], expected)
