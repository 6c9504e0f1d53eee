"""Palettization engines on the full-size Sortformer head: coremltools' k-means vs ours.

The head's weights come from NeMo's ConformerEncoder and TransformerEncoder built with the released
architecture and ``torch.manual_seed(0)``: every floating-point tensor of more than 2,048 elements,
cast to fp16, except the pre-encoder (``pre_encode.*``), which the release keeps at full precision.

    python benchmarks/palettize.py                      # all of it; the coremltools baseline takes minutes
    python benchmarks/palettize.py --skip-coremltools   # our engine only
    python benchmarks/palettize.py --weights /tmp/head.npz   # reuse (or create) the weights file
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from results import Results

from sortformer_build.coreml import palettizer
from sortformer_build.coreml.palettize import WEIGHT_THRESHOLD
from sortformer_build.coreml.targets import LUT_NBITS
from sortformer_build.job.scratch import job_scratch
from sortformer_build.store.layout import CacheLayout

# One FastConformer layer's linear weights, chained: the "few big layers" of the end-to-end run.
END_TO_END_LAYERS = (
    "encoder.layers.0.feed_forward1.linear1.weight",
    "encoder.layers.0.feed_forward1.linear2.weight",
    "encoder.layers.0.self_attn.linear_q.weight",
    "encoder.layers.0.self_attn.linear_k.weight",
    "encoder.layers.0.self_attn.linear_v.weight",
    "encoder.layers.0.self_attn.linear_out.weight",
    "encoder.layers.0.self_attn.linear_pos.weight",
    "encoder.layers.0.feed_forward2.linear1.weight",
    "encoder.layers.0.feed_forward2.linear2.weight",
)
# coremltools functions whose cumulative time explains its cost around the custom hook.
COREMLTOOLS_STAGES = {
    "pack_elements_into_bits": "pack indices into n-bit fields",
    "_convert_model_spec_to_pymil_prog": "load the model back into a MIL program",
    "mil_convert_to_proto": "pass pipelines + serialise the new model",
}


@dataclass
class EngineRun:
    seconds: float
    palettes: dict[str, tuple[np.ndarray, np.ndarray]]


def build_head_weights() -> dict[str, np.ndarray]:
    import torch
    from nemo.collections.asr.modules import ConformerEncoder
    from nemo.collections.asr.modules.transformer.transformer_encoders import TransformerEncoder

    torch.manual_seed(0)
    encoder = ConformerEncoder(
        feat_in=128,
        n_layers=17,
        d_model=512,
        subsampling="dw_striding",
        subsampling_factor=8,
        subsampling_conv_channels=256,
        ff_expansion_factor=4,
        self_attention_model="rel_pos",
        n_heads=8,
        xscaling=True,
        untie_biases=True,
        conv_kernel_size=9,
        conv_norm_type="batch_norm",
    )
    transformer = TransformerEncoder(
        num_layers=18,
        hidden_size=192,
        inner_size=768,
        num_attention_heads=8,
        hidden_act="relu",
        pre_ln=False,
        pre_ln_final_layer_norm=True,
    )
    weights = {}
    for prefix, module in (("encoder", encoder), ("transformer_encoder", transformer)):
        for name, tensor in module.state_dict().items():
            if (
                tensor.is_floating_point()
                and tensor.numel() > WEIGHT_THRESHOLD
                and not name.startswith("pre_encode.")
            ):
                weights[f"{prefix}.{name}"] = tensor.detach().numpy().astype(np.float16)
    return weights


def head_weights(path: Path | None) -> dict[str, np.ndarray]:
    if path is not None and path.exists():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    weights = build_head_weights()
    if path is not None:
        np.savez(path, allow_pickle=False, **weights)
    return weights


def run_ours(weights: Mapping[str, np.ndarray], nbits: int, workers: int) -> EngineRun:
    start = time.perf_counter()
    palettes = palettizer.palettize_tensors(weights, nbits, workers=workers)
    return EngineRun(time.perf_counter() - start, {name: (p.lut, p.indices) for name, p in palettes.items()})


def coremltools_kmeans(weight: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``OpPalettizerConfig(mode="kmeans")`` computes for one per-tensor weight."""
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    return palettize_weights._get_lut_and_indices(weight, "KMEANS", nbits, None)


def run_coremltools(weights: Mapping[str, np.ndarray], nbits: int) -> EngineRun:
    start = time.perf_counter()
    palettes = {name: coremltools_kmeans(weight, nbits) for name, weight in weights.items()}
    return EngineRun(time.perf_counter() - start, palettes)


def traced_peak_mb(work: Callable[..., object], *args: object) -> float:
    """Peak memory NumPy and Python allocate while ``work(*args)`` runs (tracemalloc)."""
    tracemalloc.start()
    try:
        work(*args)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def decoded_mse(weight: np.ndarray, palette: tuple[np.ndarray, np.ndarray]) -> float:
    lut, indices = palette
    # coremltools' LUT is (2**nbits, 1) on its scikit-learn path (tensors under 10,000 elements).
    decoded = lut.astype(np.float64).reshape(-1)[indices.reshape(-1)]
    return float(np.mean((weight.astype(np.float64).reshape(-1) - decoded) ** 2))


def compare_engines(
    weights: dict[str, np.ndarray], bits: list[int], workers: int, baseline: bool, results: Results
) -> None:
    largest = max(weights.values(), key=np.size)
    start = time.perf_counter()
    palettizer.palettize_tensors({"warm-up": largest[:8]}, bits[0], workers=workers)
    compile_seconds = time.perf_counter() - start
    header = ["bits", "ours", "ours peak MB"]
    if baseline:
        header += [
            "coremltools",
            "coremltools peak MB",
            "speed-up",
            "MSE ratio ours/coremltools, max",
            "mean",
            "tensors > 1",
        ]
    rows = []
    for nbits in bits:
        ours = run_ours(weights, nbits, workers)
        row = [
            str(nbits),
            f"{ours.seconds:.2f} s",
            f"{traced_peak_mb(palettizer.palettize_tensor, largest, nbits):.1f}",
        ]
        if baseline:
            row += baseline_columns(weights, nbits, ours, largest)
        rows.append(row)
        print(" | ".join(row), flush=True)
    size = sum(w.size for w in weights.values()) / 1e6
    results.table(
        f"The head's {len(weights)} tensors ({size:.1f} M fp16 weights); ours on {workers} threads; peak MB:"
        f" tracemalloc while palettizing the largest tensor {largest.shape}",
        header,
        rows,
    )
    results.note(f"Compiling our kernels, once per process and not counted above: {compile_seconds:.2f} s.")


def baseline_columns(
    weights: dict[str, np.ndarray], nbits: int, ours: EngineRun, largest: np.ndarray
) -> list[str]:
    theirs = run_coremltools(weights, nbits)
    ratios = np.array(
        [
            decoded_mse(w, ours.palettes[name]) / decoded_mse(w, theirs.palettes[name])
            for name, w in weights.items()
        ]
    )
    return [
        f"{theirs.seconds:.2f} s",
        f"{traced_peak_mb(coremltools_kmeans, largest, nbits):.1f}",
        f"{theirs.seconds / ours.seconds:.1f}x",
        f"{ratios.max():.10f}",
        f"{ratios.mean():.7f}",
        str(int(np.sum(ratios > 1))),
    ]


def chained_linear_model(weights: Mapping[str, np.ndarray]) -> Any:
    """A converted iOS17 fp16 ML program whose linear layers use ``weights`` in order."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    matrices = [w.astype(np.float32) for w in weights.values()]

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(1, matrices[0].shape[1]), dtype=types.fp32)],
        opset_version=ct.target.iOS17,
    )
    def program(x: Any) -> Any:
        for matrix in matrices:
            x = mb.linear(x=x, weight=matrix)
        return x

    return ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )


def lut_ops(model: Any) -> dict[str, tuple[Any, ...]]:
    """Signature of every palettized weight: op type and the shapes and dtypes of its inputs."""
    return {
        op.name: (op.op_type, *((name, var.shape, var.dtype) for name, var in sorted(op.inputs.items())))
        for op in model._mil_program.functions["main"].operations
        if op.op_type.startswith("constexpr_")
    }


def profiled(work: Callable[[], object]) -> tuple[object, float, pstats.Stats]:
    profile = cProfile.Profile()
    start = time.perf_counter()
    result = profile.runcall(work)
    return result, time.perf_counter() - start, pstats.Stats(profile)


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    seconds = dict.fromkeys(COREMLTOOLS_STAGES, 0.0)
    # `Stats.stats` is the table behind every report, left out of typeshed's stubs.
    for (_, _, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if function in seconds:
            seconds[function] = max(seconds[function], cumulative)
    return seconds


class HookTimer:
    """Wraps a ``lut_function`` hook and adds up the time spent inside it."""

    def __init__(self, hook: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.hook, self.seconds = hook, 0.0

    def __call__(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        try:
            return self.hook(weight)
        finally:
            self.seconds += time.perf_counter() - start


def palettize_model(model: Any, **palettizer_options: Any) -> Any:
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(**palettizer_options))
    return cto.palettize_weights(model, config)


def end_to_end(weights: Mapping[str, np.ndarray], nbits: int, workers: int, results: Results) -> None:
    layers = {name: weights[name] for name in END_TO_END_LAYERS}
    model = chained_linear_model(layers)
    size = sum(map(np.size, layers.values())) / 1e6

    start = time.perf_counter()
    kmeans_model = palettize_model(model, mode="kmeans", nbits=nbits)
    rows = [["mode=kmeans (coremltools)", f"{time.perf_counter() - start:.2f} s", ""]]

    hook = HookTimer(palettizer.lut_function(nbits))
    custom_model, seconds, stats = profiled(lambda: palettize_model(model, mode="custom", lut_function=hook))
    rows.append(
        ["mode=custom, our lut_function (profiled)", f"{seconds:.2f} s", f"in the hook {hook.seconds:.2f} s"]
    )

    start = time.perf_counter()
    palettes = palettizer.palettize_tensors(layers, nbits, workers=workers)
    luts = palettizer.KnownLuts(
        {palettizer.tensor_key(w, nbits): palettes[name].lut for name, w in layers.items()}
    )
    ahead = time.perf_counter() - start
    hook = HookTimer(palettizer.lut_function(nbits, luts))
    start = time.perf_counter()
    palettize_model(model, mode="custom", lut_function=hook)
    rows.append(
        [
            "mode=custom, tables computed ahead",
            f"{time.perf_counter() - start:.2f} s",
            f"+{ahead:.2f} s ahead; in the hook {hook.seconds:.2f} s",
        ]
    )
    rows += [
        [
            f"coremltools: {COREMLTOOLS_STAGES[function]} ({function})",
            f"{spent:.2f} s",
            "cumulative, profiled run",
        ]
        for function, spent in stage_seconds(stats).items()
    ]
    results.table(
        f"End to end: palettize_weights on {len(layers)} linear layers ({size:.1f} M weights), {nbits} bits",
        ["run", "seconds", "detail"],
        rows,
    )
    kinds = sorted({signature[0] for signature in lut_ops(custom_model).values()})
    same = lut_ops(kmeans_model) == lut_ops(custom_model)
    results.note(f"Same ops, input shapes and dtypes as mode=kmeans: {same}; ops: {', '.join(kinds)}.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights", type=Path, help="npz of the head's fp16 weights; built and saved if missing"
    )
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8], choices=LUT_NBITS)
    parser.add_argument("--workers", type=int, default=2, help="threads for our engine")
    parser.add_argument("--skip-coremltools", action="store_true", help="skip coremltools' k-means baseline")
    parser.add_argument(
        "--skip-end-to-end", action="store_true", help="skip the palettize_weights comparison"
    )
    args = parser.parse_args()

    results = Results("palettize")
    # coremltools keeps each converted model in a temporary package until the interpreter exits:
    # the cache's scratch folder holds them, and the next job sweeps them if this run is killed.
    with job_scratch(CacheLayout.at(None).scratch):
        weights = head_weights(args.weights)
        compare_engines(weights, args.bits, args.workers, baseline=not args.skip_coremltools, results=results)
        if not args.skip_end_to_end:
            end_to_end(weights, 6, args.workers, results)
    results.write()


if __name__ == "__main__":
    main()
