"""Each executor op against an independent NumPy or torch computation, on small saved packages."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from .executor_support import run

RNG = np.random.default_rng(0)


def randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def uniform(low: float, high: float, *shape: int) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def randint(low: int, high: int, *shape: int) -> np.ndarray:
    return RNG.integers(low, high, shape).astype(np.int32)


def t(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(value))


def assert_outputs(
    outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray], tol: float = 1e-5
) -> None:
    assert set(outputs) == set(expected)
    for name, want in expected.items():
        want = np.asarray(want)
        got = outputs[name]
        assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


# --- element-wise -------------------------------------------------------------------------------


def test_binary_float_ops_broadcast(tmp_path):
    x = uniform(-3, 3, 2, 3, 4)
    y = np.array([[1.5], [-0.75], [2.0]], dtype=np.float32)
    p = uniform(0.5, 2, 2, 3, 4)
    expected = {
        "add": x + y,
        "sub": x - y,
        "mul": x * y,
        "real_div": x / y,
        "floor_div": np.floor(x / y),
        "mod": x - np.floor(x / y) * y,
        "pow": np.exp(y * np.log(p)),
        "maximum": np.where(x > y, x, y),
        "minimum": np.where(x < y, x, y),
    }

    def body(x, y, p):
        outs = [getattr(mb, op)(x=x, y=y, name=op) for op in expected if op != "pow"]
        return (*outs, mb.pow(x=p, y=y, name="pow"))

    assert_outputs(run(tmp_path, body, {"x": x, "y": y, "p": p}), expected)


def test_binary_int_ops_keep_int32(tmp_path):
    x = randint(-20, 20, 2, 3)
    y = np.array([3, -4, 7], dtype=np.int32)
    xb, yb = np.broadcast_arrays(x, y)
    python: dict[str, Callable[[int, int], int]] = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "floor_div": lambda a, b: a // b,
        "mod": lambda a, b: a % b,
        "maximum": max,
        "minimum": min,
    }
    expected = {
        op: np.array([fn(int(a), int(b)) for a, b in zip(xb.ravel(), yb.ravel(), strict=True)]).reshape(
            xb.shape
        )
        for op, fn in python.items()
    }

    def body(x, y):
        return tuple(getattr(mb, op)(x=x, y=y, name=op) for op in expected)

    outputs = run(tmp_path, body, {"x": x, "y": y})
    for name, want in expected.items():
        assert outputs[name].dtype == np.int32, name
        np.testing.assert_array_equal(outputs[name], want, err_msg=name)


def test_comparison_logical_and_select(tmp_path):
    x = randint(-2, 3, 2, 3).astype(np.float32)
    y = randint(-2, 3, 3).astype(np.float32)
    a, b = x > 0, y < 0
    expected = {
        "equal": x == y,
        "not_equal": x != y,
        "less": x < y,
        "less_equal": x <= y,
        "greater": x > y,
        "greater_equal": x >= y,
        "logical_and": a & b,
        "logical_or": a | b,
        "logical_xor": a ^ b,
        "logical_not": ~a,
        "select": np.where(a, x, y),
    }

    def body(x, y):
        outs = [getattr(mb, op)(x=x, y=y, name=op) for op in list(expected)[:6]]
        a = mb.greater(x=x, y=np.float32(0))
        b = mb.less(x=y, y=np.float32(0))
        outs += [getattr(mb, op)(x=a, y=b, name=op) for op in ("logical_and", "logical_or", "logical_xor")]
        outs.append(mb.logical_not(x=a, name="logical_not"))
        outs.append(mb.select(cond=a, a=x, b=y, name="select"))
        return tuple(outs)

    assert_outputs(
        run(tmp_path, body, {"x": x, "y": y}), {k: v.astype(np.float32) for k, v in expected.items()}
    )


def test_unary_math(tmp_path):
    x = uniform(-0.9, 0.9, 3, 5)
    p = uniform(0.1, 4, 3, 5)
    r = np.array(
        [[-2.5, -1.5, -0.5, 0.5, 1.5], [2.5, 0.4, -0.6, 0.0, 3.7], [-3.2, 1.0, -1.0, 2.49, -2.51]], np.float32
    )
    erf = np.vectorize(math.erf)
    banker = np.vectorize(round)
    on_x = {
        "abs": np.abs(x),
        "exp": np.exp(x),
        "exp2": 2.0**x,
        "sin": np.sin(x),
        "cos": np.cos(x),
        "tan": np.tan(x),
        "tanh": np.tanh(x),
        "sinh": np.sinh(x),
        "cosh": np.cosh(x),
        "asin": np.arcsin(x),
        "acos": np.arccos(x),
        "atan": np.arctan(x),
        "atanh": np.arctanh(x),
        "erf": erf(x),
        "square": x * x,
    }
    on_r = {"floor": np.floor(r), "ceil": np.ceil(r), "round": banker(r), "sign": np.sign(r)}
    expected = {
        **on_x,
        **on_r,
        "sqrt": np.sqrt(p),
        "log": np.log(p),
        "log_eps": np.log(p + 0.5),
        "rsqrt": 1 / np.sqrt(p),
        "rsqrt_eps": 1 / np.sqrt(p + 2.0),
        "inverse": 1 / p,
        "inverse_eps": 1 / (p + 0.25),
        "clip": np.minimum(np.maximum(r, -1.0), 2.0),
        "threshold": np.maximum(r, 0.3),
    }

    def body(x, p, r):
        outs = [getattr(mb, op)(x=x, name=op) for op in on_x]
        outs += [getattr(mb, op)(x=r, name=op) for op in on_r]
        outs += [
            mb.sqrt(x=p, name="sqrt"),
            mb.log(x=p, name="log"),
            mb.log(x=p, epsilon=0.5, name="log_eps"),
            mb.rsqrt(x=p, name="rsqrt"),
            mb.rsqrt(x=p, epsilon=2.0, name="rsqrt_eps"),
            mb.inverse(x=p, name="inverse"),
            mb.inverse(x=p, epsilon=0.25, name="inverse_eps"),
            mb.clip(x=r, alpha=-1.0, beta=2.0, name="clip"),
            mb.threshold(x=r, alpha=0.3, name="threshold"),
        ]
        return tuple(outs)

    outputs = run(tmp_path, body, {"x": x, "p": p, "r": r})
    # inverse and rsqrt have default epsilons (1e-4, 1e-12) that shift values slightly.
    assert_outputs(outputs, expected, tol=2e-4)
    np.testing.assert_array_equal(outputs["round"], banker(r))


def test_int_unary_ops(tmp_path):
    x = np.array([[-3, 0, 5], [7, -1, 2]], np.int32)

    def body(x):
        return mb.abs(x=x, name="abs"), mb.sign(x=x, name="sign"), mb.square(x=x, name="square")

    outputs = run(tmp_path, body, {"x": x})
    np.testing.assert_array_equal(outputs["abs"], np.array([[3, 0, 5], [7, 1, 2]]))
    np.testing.assert_array_equal(outputs["sign"], np.array([[-1, 0, 1], [1, -1, 1]]))
    np.testing.assert_array_equal(outputs["square"], np.array([[9, 0, 25], [49, 1, 4]]))
    assert all(v.dtype == np.int32 for v in outputs.values())


def test_cast(tmp_path):
    x = np.array([[-2.7, -0.5, 0.0, 0.4, 3.9, 70000.5]], np.float32)
    n = np.array([3, 0, -5], np.int32)

    def body(x, n):
        to_int = mb.cast(x=x, dtype="int32", name="to_int")
        to_bool = mb.cast(x=x, dtype="bool")
        bool_to_int = mb.cast(x=to_bool, dtype="int32", name="bool_to_int")
        to_float = mb.cast(x=n, dtype="fp32", name="to_float")
        return to_int, bool_to_int, to_float

    outputs = run(tmp_path, body, {"x": x, "n": n})
    np.testing.assert_array_equal(outputs["to_int"], [[-2, 0, 0, 0, 3, 70000]])
    np.testing.assert_array_equal(outputs["bool_to_int"], [[1, 1, 0, 1, 1, 1]])
    np.testing.assert_array_equal(outputs["to_float"], [3.0, 0.0, -5.0])
    assert outputs["to_float"].dtype == np.float32


# --- activations ----------------------------------------------------------------------------------


def test_activations(tmp_path):
    x = randn(2, 3, 4, scale=3)
    x4 = randn(1, 3, 2, 2, scale=3)
    channel_alpha = np.array([0.1, 0.2, 0.3], np.float32)
    channel_beta = np.array([1.0, 0.5, 2.0], np.float32)
    tx, tx4 = t(x), t(x4)
    expected = {
        "relu": F.relu(tx),
        "relu6": F.relu6(tx),
        "sigmoid": torch.sigmoid(tx),
        "silu": F.silu(tx),
        "softplus": F.softplus(tx),
        "softsign": F.softsign(tx),
        "gelu_exact": F.gelu(tx),
        "gelu_tanh": F.gelu(tx, approximate="tanh"),
        "gelu_sigmoid": tx * torch.sigmoid(1.702 * tx),
        "leaky_relu": F.leaky_relu(tx, 0.1),
        "elu": F.elu(tx, 0.7),
        "thresholded_relu": torch.where(tx >= 0.5, tx, 0.0),
        "clamped_relu": torch.clamp(torch.where(tx >= 0, tx, 0.2 * tx), max=2.0),
        "linear_activation": 1.5 * tx - 0.5,
        "scaled_tanh": 2.0 * torch.tanh(0.5 * tx),
        "sigmoid_hard": F.hardsigmoid(tx),
        "prelu": F.prelu(tx4, t(channel_alpha)),
        "softplus_parametric": t(channel_alpha)[None, :, None, None]
        * F.softplus(tx4 * t(channel_beta)[None, :, None, None]),
    }

    def body(x, x4):
        return (
            mb.relu(x=x, name="relu"),
            mb.relu6(x=x, name="relu6"),
            mb.sigmoid(x=x, name="sigmoid"),
            mb.silu(x=x, name="silu"),
            mb.softplus(x=x, name="softplus"),
            mb.softsign(x=x, name="softsign"),
            mb.gelu(x=x, mode="EXACT", name="gelu_exact"),
            mb.gelu(x=x, mode="TANH_APPROXIMATION", name="gelu_tanh"),
            mb.gelu(x=x, mode="SIGMOID_APPROXIMATION", name="gelu_sigmoid"),
            mb.leaky_relu(x=x, alpha=0.1, name="leaky_relu"),
            mb.elu(x=x, alpha=0.7, name="elu"),
            mb.thresholded_relu(x=x, alpha=0.5, name="thresholded_relu"),
            mb.clamped_relu(x=x, alpha=0.2, beta=2.0, name="clamped_relu"),
            mb.linear_activation(x=x, alpha=1.5, beta=-0.5, name="linear_activation"),
            mb.scaled_tanh(x=x, alpha=2.0, beta=0.5, name="scaled_tanh"),
            mb.sigmoid_hard(x=x, alpha=1 / 6, beta=0.5, name="sigmoid_hard"),
            mb.prelu(x=x4, alpha=channel_alpha, name="prelu"),
            mb.softplus_parametric(x=x4, alpha=channel_alpha, beta=channel_beta, name="softplus_parametric"),
        )

    outputs = run(tmp_path, body, {"x": x, "x4": x4})
    assert_outputs(outputs, {k: v.numpy() for k, v in expected.items()})


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_axes(tmp_path, axis):
    x = randn(2, 3, 4, scale=4)
    outputs = run(tmp_path, lambda x: mb.softmax(x=x, axis=axis, name="out"), {"x": x})
    assert_outputs(outputs, {"out": torch.softmax(t(x), dim=axis).numpy()})


# --- matrix products and convolution ------------------------------------------------------------


def test_linear_ranks_and_bias(tmp_path):
    weight, bias = randn(4, 5), randn(4)
    inputs = {"a": randn(5), "b": randn(2, 5), "c": randn(2, 3, 5)}

    def body(a, b, c):
        return (
            mb.linear(x=a, weight=weight, bias=bias, name="rank1"),
            mb.linear(x=b, weight=weight, name="rank2_no_bias"),
            mb.linear(x=c, weight=weight, bias=bias, name="rank3"),
        )

    tw, tb = t(weight), t(bias)
    expected = {
        "rank1": F.linear(t(inputs["a"]), tw, tb),
        "rank2_no_bias": F.linear(t(inputs["b"]), tw),
        "rank3": F.linear(t(inputs["c"]), tw, tb),
    }
    assert_outputs(run(tmp_path, body, inputs), {k: v.numpy() for k, v in expected.items()})


MATMUL_CASES = {
    "plain": ((3, 4), (4, 5), False, False),
    "transpose_x": ((4, 3), (4, 5), True, False),
    "transpose_y": ((3, 4), (5, 4), False, True),
    "both": ((2, 4, 3), (2, 5, 4), True, True),
    "broadcast": ((2, 1, 3, 4), (5, 4, 6), False, False),
    "vector_x": ((4,), (4, 3), False, False),
}


@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_matmul(tmp_path, case):
    x_shape, y_shape, transpose_x, transpose_y = MATMUL_CASES[case]
    x, y = randn(*x_shape), randn(*y_shape)

    def body(x, y):
        return mb.matmul(x=x, y=y, transpose_x=transpose_x, transpose_y=transpose_y, name="out")

    a, b = t(x), t(y)
    a = a.transpose(-1, -2) if transpose_x else a
    b = b.transpose(-1, -2) if transpose_y else b
    assert_outputs(run(tmp_path, body, {"x": x, "y": y}), {"out": torch.matmul(a, b).numpy()}, tol=1e-4)


def test_einsum_broadcasting(tmp_path):
    inputs = {"a": randn(2, 3, 4, 5), "b": randn(1, 5, 4, 6), "c": randn(3, 1, 5), "d": randn(5, 4, 6)}

    def body(a, b, c, d):
        return (
            mb.einsum(values=(a, b), equation="nchw,nwhu->nchu", name="rank4"),
            mb.einsum(values=(c, d), equation="chw,whr->chr", name="rank3"),
        )

    expected = {
        "rank4": torch.einsum("nchw,nwhu->nchu", t(inputs["a"]), t(inputs["b"]).expand(2, 5, 4, 6)),
        "rank3": torch.einsum("chw,whr->chr", t(inputs["c"]).expand(3, 4, 5), t(inputs["d"])),
    }
    assert_outputs(run(tmp_path, body, inputs), {k: v.numpy() for k, v in expected.items()}, tol=1e-4)


def _same_pads(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    before = (total + 1) // 2 if lower else total // 2
    return before, total - before


CONV_CASES = {
    "1d_valid": ((2, 4, 11), (6, 4, 3), "valid", None, (1,), (1,), 1, False),
    "1d_same_stride2": ((2, 4, 11), (6, 4, 4), "same", None, (2,), (1,), 1, True),
    "1d_same_lower_dilated": ((1, 4, 10), (6, 4, 4), "same_lower", None, (2,), (2,), 1, False),
    "1d_custom": ((1, 4, 10), (5, 4, 3), "custom", (2, 1), (3,), (1,), 1, True),
    "1d_groups": ((2, 4, 9), (6, 2, 3), "valid", None, (1,), (1,), 2, True),
    "1d_depthwise": ((1, 4, 12), (8, 1, 5), "same", None, (1,), (1,), 4, True),
    "2d_same": ((1, 3, 9, 8), (4, 3, 3, 2), "same", None, (2, 1), (1, 2), 1, True),
    "2d_same_lower": ((2, 3, 7, 6), (4, 3, 2, 2), "same_lower", None, (2, 2), (1, 1), 1, False),
    "2d_custom_depthwise": ((1, 3, 6, 7), (3, 1, 3, 3), "custom", (1, 0, 2, 1), (1, 2), (2, 1), 3, True),
    "3d_valid": ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), "valid", None, (1, 2, 1), (1, 1, 1), 1, True),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(tmp_path, case):
    x_shape, w_shape, pad_type, pad, strides, dilations, groups, with_bias = CONV_CASES[case]
    x, weight = randn(*x_shape), randn(*w_shape)
    bias = randn(w_shape[0]) if with_bias else None

    def body(x):
        kwargs: dict[str, object] = {"bias": bias} if with_bias else {}
        if pad is not None:
            kwargs["pad"] = list(pad)
        return mb.conv(
            x=x,
            weight=weight,
            pad_type=pad_type,
            strides=list(strides),
            dilations=list(dilations),
            groups=groups,
            name="out",
            **kwargs,
        )

    spatial = len(x_shape) - 2
    if pad_type == "custom":
        assert pad is not None
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(spatial)]
    elif pad_type == "valid":
        pads = [(0, 0)] * spatial
    else:
        pads = [
            _same_pads(x_shape[2 + i], w_shape[2 + i], strides[i], dilations[i], pad_type == "same_lower")
            for i in range(spatial)
        ]
    padded = F.pad(t(x), [p for before_after in reversed(pads) for p in before_after])
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    tb = t(bias) if bias is not None else None
    want = conv(padded, t(weight), tb, stride=strides, dilation=dilations, groups=groups)
    assert_outputs(run(tmp_path, body, {"x": x}), {"out": want.numpy()}, tol=1e-4)


def test_conv_with_runtime_weight(tmp_path):
    x, weight = randn(1, 4, 10), randn(3, 4, 3)
    outputs = run(tmp_path, lambda x, w: mb.conv(x=x, weight=w, name="out"), {"x": x, "w": weight})
    assert_outputs(outputs, {"out": F.conv1d(t(x), t(weight)).numpy()}, tol=1e-4)


# --- normalisation and reductions -----------------------------------------------------------------


def test_normalizations(tmp_path):
    x = randn(2, 3, 4, 5, scale=2)
    gamma45, beta45 = randn(4, 5), randn(4, 5)
    gamma3 = randn(3)
    mean, variance, gamma_c, beta_c = randn(3), uniform(0.5, 2, 3), randn(3), randn(3)

    def body(x):
        return (
            mb.layer_norm(x=x, axes=[-1], epsilon=1e-3, name="ln_last"),
            mb.layer_norm(x=x, axes=[2, 3], gamma=gamma45, beta=beta45, name="ln_two"),
            mb.layer_norm(x=x, axes=[1], gamma=gamma3, name="ln_middle"),
            mb.batch_norm(
                x=x, mean=mean, variance=variance, gamma=gamma_c, beta=beta_c, epsilon=1e-3, name="bn"
            ),
            mb.batch_norm(x=x, mean=mean, variance=variance, name="bn_plain"),
            mb.instance_norm(x=x, gamma=gamma_c, beta=beta_c, epsilon=1e-4, name="inorm"),
            mb.l2_norm(x=x, epsilon=1e-6, name="l2"),
        )

    tx = t(x)
    centered = x - x.mean(axis=1, keepdims=True)
    ln_middle = (
        centered / np.sqrt((centered**2).mean(axis=1, keepdims=True) + 1e-5) * gamma3[None, :, None, None]
    )
    l2 = x / np.sqrt((x.reshape(2, -1) ** 2).sum(axis=1) + 1e-6)[:, None, None, None]
    expected = {
        "ln_last": F.layer_norm(tx, (5,), eps=1e-3).numpy(),
        "ln_two": F.layer_norm(tx, (4, 5), t(gamma45), t(beta45)).numpy(),
        "ln_middle": ln_middle,
        "bn": F.batch_norm(tx, t(mean), t(variance), t(gamma_c), t(beta_c), eps=1e-3).numpy(),
        "bn_plain": F.batch_norm(tx, t(mean), t(variance)).numpy(),
        "inorm": F.instance_norm(tx, weight=t(gamma_c), bias=t(beta_c), eps=1e-4).numpy(),
        "l2": l2,
    }
    assert_outputs(run(tmp_path, body, {"x": x}), expected, tol=1e-4)


REDUCTIONS: dict[str, Callable[..., Any]] = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_sum_square": lambda v, axis, keepdims: np.sum(v * v, axis=axis, keepdims=keepdims),
    "reduce_l1_norm": lambda v, axis, keepdims: np.sum(np.abs(v), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda v, axis, keepdims: np.sqrt(np.sum(v * v, axis=axis, keepdims=keepdims)),
    "reduce_log_sum": lambda v, axis, keepdims: np.log(np.sum(np.abs(v), axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda v, axis, keepdims: np.log(np.sum(np.exp(v), axis=axis, keepdims=keepdims)),
}


@pytest.mark.parametrize(("axes", "keep_dims"), [([1], False), ([0, 2], True), ([-1], True), (None, False)])
def test_reductions(tmp_path, axes, keep_dims):
    x = uniform(0.5, 1.5, 2, 3, 4)
    axis = None if axes is None else tuple(axes)

    def body(x):
        kwargs = {} if axes is None else {"axes": axes}
        return tuple(getattr(mb, op)(x=x, keep_dims=keep_dims, name=op, **kwargs) for op in REDUCTIONS)

    expected = {op: np.asarray(fn(x, axis=axis, keepdims=keep_dims)) for op, fn in REDUCTIONS.items()}
    if axes is None:
        expected = {op: v.reshape(1) for op, v in expected.items()}  # a scalar output is declared [1]
    outputs = run(tmp_path, body, {"x": x})
    if axes is None:
        outputs = {op: v.reshape(1) for op, v in outputs.items()}
    assert_outputs(outputs, expected, tol=1e-5)


def test_arg_reductions_and_int_sum(tmp_path):
    x = np.array([[[3, 1, 3], [0, 5, 5]], [[-1, -1, 2], [7, 7, 7]]], np.float32)
    n = np.array([[5, -2, 9], [1, 1, 1]], np.int32)

    def body(x, n):
        return (
            mb.reduce_argmax(x=x, axis=-1, name="argmax"),
            mb.reduce_argmin(x=x, axis=1, keep_dims=True, name="argmin"),
            mb.reduce_sum(x=n, axes=[1], name="int_sum"),
            mb.reduce_max(x=n, axes=[0], name="int_max"),
        )

    outputs = run(tmp_path, body, {"x": x, "n": n})
    np.testing.assert_array_equal(outputs["argmax"], [[0, 1], [2, 0]])
    np.testing.assert_array_equal(outputs["argmin"], [[[1, 0, 0]], [[0, 0, 0]]])
    np.testing.assert_array_equal(outputs["int_sum"], [12, 3])
    np.testing.assert_array_equal(outputs["int_max"], [5, 1, 9])
    assert outputs["argmax"].dtype == outputs["int_sum"].dtype == np.int32
