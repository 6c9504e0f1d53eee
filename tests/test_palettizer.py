"""Tests for sortformer_build.coreml.palettizer: histogram, k-means optimality, coremltools parity, hook."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sortformer_build.coreml import palettizer

ct = pytest.importorskip("coremltools")


def _xavier_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    bound = np.sqrt(6.0 / (shape[0] + int(np.prod(shape[1:]))))
    return rng.uniform(-bound, bound, shape).astype(np.float16)


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(0.0, 0.02, shape).astype(np.float16)


def _student_t(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_t(3, shape) * 0.02).astype(np.float16)


def _sse(values: np.ndarray, counts: np.ndarray, boundaries: tuple[int, ...]) -> float:
    total = 0.0
    for start, stop in itertools.pairwise(boundaries):
        cluster, weight = values[start:stop], counts[start:stop]
        mean = np.dot(weight, cluster) / weight.sum()
        total += float(np.dot(weight, (cluster - mean) ** 2))
    return total


def _centroid_sse(values: np.ndarray, counts: np.ndarray, centroids: np.ndarray) -> float:
    return palettizer.weighted_mse(values, counts, centroids) * float(counts.sum())


def _reference_dp(values: np.ndarray, counts: np.ndarray, k: int) -> float:
    """Textbook O(k n^2) dynamic program, independent of the module's implementation."""
    n = values.size
    cost = np.full((n + 1, n + 1), np.inf)
    for start in range(n):
        for stop in range(start + 1, n + 1):
            cost[start, stop] = _sse(values, counts, (start, stop))
    best = cost[0].copy()
    for _ in range(k - 1):
        best = np.min(best[:, None] + cost, axis=0)
    return float(best[n])


def _histogram_case(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.unique(rng.normal(size=n * 2))[:n]
    return values, rng.integers(1, 20, size=values.size).astype(np.float64)


def test_histogram_matches_unique() -> None:
    rng = np.random.default_rng(1)
    weight = _normal(rng, (300, 70))
    weight[0, :5] = -0.0
    weight[1, :3] = 0.0
    values, counts = palettizer.fp16_histogram(weight)
    expected_values, expected_counts = np.unique(weight, return_counts=True)
    np.testing.assert_array_equal(values, expected_values.astype(np.float64))
    np.testing.assert_array_equal(counts, expected_counts)
    assert not np.any(np.signbit(values) & (values == 0)), "-0 must be counted as +0"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.0e6])
def test_histogram_rejects_non_finite(bad: float) -> None:
    weight = np.ones((8, 8), dtype=np.float32)
    weight[3, 3] = bad
    with pytest.raises(ValueError, match=r"NaN and .* infinite"):
        palettizer.fp16_histogram(weight)


@pytest.mark.parametrize("seed", range(6))
def test_kmeans_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values, counts = _histogram_case(rng, 9)
    for k in (1, 2, 3, 4):
        brute = min(
            _sse(values, counts, (0, *cuts, values.size))
            for cuts in itertools.combinations(range(1, values.size), k - 1)
        )
        for exact in (True, False):
            centroids = palettizer.kmeans_1d(values, counts, k, exact=exact)
            assert _centroid_sse(values, counts, centroids) == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_kmeans_matches_reference_dp(seed: int) -> None:
    rng = np.random.default_rng(10 + seed)
    values, counts = _histogram_case(rng, 120)
    for k in (5, 16):
        reference = _reference_dp(values, counts, k)
        for exact in (True, False):
            centroids = palettizer.kmeans_1d(values, counts, k, exact=exact)
            assert _centroid_sse(values, counts, centroids) == pytest.approx(reference, rel=1e-10)


def test_kmeans_in_lockstep_matches_reference_dp_per_histogram() -> None:
    """Histograms of different sizes solved in one call (as fp16_luts_of batches them): each one's
    windows differ in size from layer to layer and from its neighbours'."""
    rng = np.random.default_rng(20)
    histograms = [_histogram_case(rng, n) for n in (40, 150, 90, 151, 66)]
    for k in (4, 16, 32):
        for exact in (True, False):
            solved = palettizer.kmeans_1d_many(histograms, k, exact=exact)
            for (values, counts), centroids in zip(histograms, solved, strict=True):
                reference = _reference_dp(values, counts, k)
                assert _centroid_sse(values, counts, centroids) == pytest.approx(reference, rel=1e-10)


def _lloyd(values: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    centroids = np.quantile(np.repeat(values, counts.astype(int)), (np.arange(k) + 0.5) / k)
    for _ in range(1000):
        edges = np.concatenate(
            [[0], np.searchsorted(values, (centroids[1:] + centroids[:-1]) / 2), [values.size]]
        )
        means = np.add.reduceat(counts * values, edges[:-1]) / np.add.reduceat(counts, edges[:-1])
        if np.array_equal(means, centroids):
            break
        centroids = means
    return centroids


def test_kmeans_escapes_lloyd_local_optimum() -> None:
    """On a noisy uniform sample Lloyd converges to a partition several per cent from optimal."""
    values, counts = palettizer.fp16_histogram(np.random.default_rng(3).uniform(-1, 1, 400))
    counts = counts.astype(np.float64)
    optimum = _reference_dp(values, counts, 16)
    assert _centroid_sse(values, counts, _lloyd(values, counts, 16)) > 1.05 * optimum
    assert _centroid_sse(values, counts, palettizer.kmeans_1d(values, counts, 16)) == pytest.approx(
        optimum, rel=1e-10
    )


def test_kmeans_reaches_optimum_on_heavy_tails() -> None:
    """Regression: starting Lloyd from uniform-bin density quantiles left this case 1.7 % off."""
    values, counts = palettizer.fp16_histogram(_student_t(np.random.default_rng(25), (30_000,)))
    exact = _centroid_sse(values, counts, palettizer.kmeans_1d(values, counts, 64, exact=True))
    assert _centroid_sse(values, counts, palettizer.kmeans_1d(values, counts, 64)) == pytest.approx(
        exact, rel=1e-10
    )


def test_kmeans_rejects_unsorted_histogram() -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        palettizer.kmeans_1d(np.array([1.0, 0.0]), np.array([1.0, 1.0]), 2)


@pytest.mark.parametrize("nbits", [4, 6])
def test_few_distinct_values_are_kept_exactly(nbits: int) -> None:
    rng = np.random.default_rng(3)
    levels = np.float16(rng.normal(size=(1 << nbits) - 3))
    weight = rng.choice(levels, size=(64, 80))
    lut, indices = palettizer.palettize_tensor(weight, nbits)
    assert lut.shape == (1 << nbits,) and lut.dtype == np.float16
    assert set(np.unique(weight)) <= set(lut)
    np.testing.assert_array_equal(lut[indices], weight)


def test_indices_are_nearest_entries() -> None:
    rng = np.random.default_rng(4)
    weight = _xavier_uniform(rng, (128, 96))
    lut, indices = palettizer.palettize_tensor(weight, 4)
    assert indices.shape == weight.shape and indices.dtype == np.uint8
    distance = np.abs(weight.astype(np.float64)[..., None] - lut.astype(np.float64))
    chosen = np.take_along_axis(distance, indices[..., None].astype(np.intp), axis=-1)[..., 0]
    np.testing.assert_array_equal(chosen, distance.min(axis=-1))
    values, counts = palettizer.fp16_histogram(weight)
    decoded_mse = float(np.mean((weight.astype(np.float64) - lut.astype(np.float64)[indices]) ** 2))
    assert decoded_mse == pytest.approx(palettizer.weighted_mse(values, counts, lut), rel=1e-12)


def _coremltools_mse(weight: np.ndarray, nbits: int) -> float:
    """Error of coremltools' own per-tensor k-means (what ``mode="kmeans"`` runs on each weight)."""
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    lut, indices = palettize_weights._get_lut_and_indices(weight, "KMEANS", nbits, None)
    decoded = lut.astype(np.float64).reshape(-1)[indices.reshape(-1)]  # (2**nbits, 1) below 10,000 elements
    return float(np.mean((weight.astype(np.float64).reshape(-1) - decoded) ** 2))


@pytest.mark.parametrize("nbits", [4, 6, 8])
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (_xavier_uniform, (256, 96)),
        (_normal, (192, 160)),
        (_student_t, (200, 150)),
        (_xavier_uniform, (64, 1, 9)),
    ],
)
def test_error_not_above_coremltools(make, shape: tuple[int, ...], nbits: int) -> None:
    weight = make(np.random.default_rng(nbits), shape)
    lut, indices = palettizer.palettize_tensor(weight, nbits)
    ours = float(np.mean((weight.astype(np.float64) - lut.astype(np.float64)[indices]) ** 2))
    assert ours <= _coremltools_mse(weight, nbits)


def test_tensor_key_is_content_based() -> None:
    rng = np.random.default_rng(5)
    weight = _normal(rng, (32, 80))
    key = palettizer.tensor_key(weight, 6)
    assert key == palettizer.tensor_key(weight.copy(), 6)
    assert key == palettizer.tensor_key(weight.astype(np.float32), 6)
    assert key != palettizer.tensor_key(weight, 4)
    assert key != palettizer.tensor_key(weight.reshape(80, 32), 6)
    changed = weight.copy()
    changed[0, 0] += np.float16(0.01)
    assert key != palettizer.tensor_key(changed, 6)


def test_palettize_tensors_matches_single_tensor() -> None:
    rng = np.random.default_rng(6)
    weights = {f"w{i}": _normal(rng, (40 + 8 * i, 64)) for i in range(4)}
    palettes = palettizer.palettize_tensors(weights, 6, workers=2)
    assert list(palettes) == list(weights)
    for name, weight in weights.items():
        single = palettizer.palettize_tensor(weight, 6)
        np.testing.assert_array_equal(palettes[name].lut, single.lut)
        np.testing.assert_array_equal(palettes[name].indices, single.indices)


def test_lut_function_uses_precomputed_luts() -> None:
    weight = _normal(np.random.default_rng(7), (50, 50))
    given = np.linspace(-0.1, 0.1, 16).astype(np.float16)
    lut, indices = palettizer.lut_function(
        4, palettizer.KnownLuts({palettizer.tensor_key(weight, 4): given})
    )(weight)
    np.testing.assert_array_equal(lut, given)
    np.testing.assert_array_equal(indices.reshape(weight.shape), palettizer.assign_indices(weight, given))


def test_known_luts_find_the_very_array_by_memory_and_others_by_content() -> None:
    weight = _normal(np.random.default_rng(8), (50, 50))
    ahead = np.linspace(-0.1, 0.1, 16).astype(np.float16)
    known = palettizer.KnownLuts({"computed ahead": ahead}, {"computed ahead": weight})
    # coremltools' per-tensor path hands the hook np.split(weight, 1)[0]: a view of the same memory
    assert known.find(np.split(weight, 1, axis=0)[0], 4) is ahead
    assert known.find(weight.copy(), 4) is None  # a copy is looked up by content: no such key here
    by_content = palettizer.KnownLuts({palettizer.tensor_key(weight, 4): ahead})
    assert by_content.find(weight.copy(), 4) is ahead


def test_lut_function_returns_lut_in_weight_dtype() -> None:
    weight = _normal(np.random.default_rng(9), (60, 60)).astype(np.float32)
    lut, indices = palettizer.lut_function(4)(weight)
    assert lut.dtype == np.float32 and lut.shape == (16,) and indices.dtype == np.uint8
    np.testing.assert_array_equal(lut, palettizer.palettize_tensor(weight, 4).lut.astype(np.float32))


def _small_program_model():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(8)
    fc1 = rng.uniform(-0.1, 0.1, (96, 64)).astype(np.float32)
    fc2 = rng.normal(0.0, 0.05, (80, 96)).astype(np.float32)
    conv = rng.uniform(-0.2, 0.2, (32, 16, 3, 3)).astype(np.float32)

    @mb.program(
        input_specs=[
            mb.TensorSpec(shape=(1, 64), dtype=types.fp32),
            mb.TensorSpec(shape=(1, 16, 12, 12), dtype=types.fp32),
        ],
        opset_version=ct.target.iOS17,
    )
    def program(x, image):
        hidden = mb.relu(x=mb.linear(x=x, weight=fc1, name="fc1"))
        return mb.linear(x=hidden, weight=fc2, name="fc2"), mb.conv(x=image, weight=conv, name="conv")

    return ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )


def _weight_consts(model) -> dict[str, np.ndarray]:
    return {
        op.name: op.outputs[0].val
        for op in model._mil_program.functions["main"].operations
        if op.op_type == "const" and op.outputs[0].val is not None and np.size(op.outputs[0].val) > 2048
    }


def test_lut_function_end_to_end_emits_per_tensor_lut_ops() -> None:
    import coremltools.optimize.coreml as cto

    model = _small_program_model()
    weights = _weight_consts(model)
    assert len(weights) == 3 and all(w.dtype == np.float16 for w in weights.values())
    config = cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(mode="custom", lut_function=palettizer.lut_function(6))
    )
    palettized = cto.palettize_weights(model, config)
    operations = palettized._mil_program.functions["main"].operations
    lut_ops = {op.name: op for op in operations if op.op_type == "constexpr_lut_to_dense"}
    assert not [op for op in operations if op.op_type.startswith("constexpr_") and op not in lut_ops.values()]
    assert sorted(lut_ops) == sorted(f"{name}_palettized" for name in weights)
    for name, weight in weights.items():
        op = lut_ops[f"{name}_palettized"]
        assert set(op.inputs) == {"indices", "lut", "shape"}  # the pre-iOS18 per-tensor form
        assert op.lut.val.dtype == np.float16 and op.lut.val.shape == (64,)
        expected = palettizer.palettize_tensor(weight, 6)
        np.testing.assert_array_equal(op.lut.val, expected.lut)
        np.testing.assert_array_equal(op.materialized_val_inference(), expected.lut[expected.indices])
