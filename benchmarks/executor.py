"""Seconds per streaming step: NeMo's `forward_for_export` and the NumPy executor (float32 and
float16 modes) on the same packages and inputs, on one thread and on every core.

One step is one call on full buffers (chunk, speaker cache and FIFO all filled), the largest input
a parity check or a diarization feeds it. The executor runs as the build runs it
(`executor.step.package_step`: its matrix products in tiles on its own threads); NeMo runs with
torch's intra-op threads set to the same count. The three take turns step by step, so that all see
the same load on a shared machine; each figure is the best of `--repeat` steps after a first one
(which, for the executor, decodes the weights).

Then, at every core, where one step's time goes: the matrix products, the convolutions and
everything else, for NeMo (torch's profiler, each op's own time) and for the executor in float16
mode (its own per-op timing, each op's float16 rounding included). The executor cuts every product
into fixed tiles, each a single-threaded BLAS call, so that its bits do not depend on the thread
count; the last row of each package divides the executor's products by NeMo's whole step.

    python benchmarks/executor.py CHECKPOINT.nemo PACKAGE.mlpackage [...] [--repeat 3]

CHECKPOINT is the checkpoint the packages were built from (NeMo's side of the comparison).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from results import Results

from sortformer_build import contract
from sortformer_build.config import ExecutorPrecision
from sortformer_build.contract import StepFunction
from sortformer_build.coreml.package import read_package
from sortformer_build.cores import usable_cores
from sortformer_build.executor import Model, load_package
from sortformer_build.geometry import StreamingGeometry

KINDS = ("NeMo", "float32", "float16")
# Op kinds of the time breakdown, by the executor's MIL op types and torch's aten ops (every aten
# op named for a convolution, whichever kernel torch picks); any other op is "everything else".
PARTS = ("matrix products", "convolutions")
EXECUTOR_OPS = {"matrix products": {"linear", "matmul", "einsum"}, "convolutions": {"conv", "conv_transpose"}}
TORCH_PRODUCTS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"}


def full_inputs(geometry: StreamingGeometry, d_model: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed inputs with every buffer full."""
    generator = np.random.default_rng(seed)
    inputs, _ = contract.pipeline_contract(geometry, d_model)
    lengths = {
        contract.CHUNK_LENGTHS: geometry.chunk_mel_frames,
        contract.SPKCACHE_LENGTHS: geometry.spkcache_len,
        contract.FIFO_LENGTHS: geometry.fifo_len,
    }
    return {
        tensor.name: (
            np.array([lengths[tensor.name]], dtype=np.int32)
            if tensor.name in lengths
            else generator.standard_normal(tensor.shape).astype(np.float32)
        )
        for tensor in inputs
    }


def loaded(package: Path) -> tuple[Model, dict[str, np.ndarray]]:
    """The package loaded by the executor, and full-buffer inputs for its geometry and width."""
    executor = load_package(package)
    geometry = StreamingGeometry.from_metadata(executor.metadata)
    described = {f.name: f.type.multiArrayType.shape for f in read_package(package).spec.description.input}
    return executor, full_inputs(geometry, int(described[contract.SPKCACHE][-1]))


def time_package(model: object, package: Path, threads: int, repeat: int) -> dict[str, list[float]]:
    """Seconds of each step, per kind, on `threads` threads; the kinds take turns step by step."""
    import torch

    from sortformer_build.executor.step import package_step
    from sortformer_build.verify.reference import nemo_step

    _, inputs = loaded(package)
    steps: dict[str, StepFunction] = {
        "NeMo": nemo_step(model),
        **{
            precision.value: package_step(package, precision, threads=lambda: threads)
            for precision in (ExecutorPrecision.float32, ExecutorPrecision.float16)
        },
    }
    torch.set_num_threads(threads)
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(repeat + 1):
        for kind in KINDS:
            start = time.perf_counter()
            steps[kind](inputs)
            seconds[kind].append(time.perf_counter() - start)
    return seconds


def time_breakdown(model: object, package: Path, threads: int) -> dict[str, dict[str, float]]:
    """Seconds of one step on `threads` threads by op kind (`PARTS` and "everything else"), for
    NeMo and the executor in float16 mode, each after a step that warms it."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sortformer_build.verify.reference import nemo_step

    executor, inputs = loaded(package)
    torch.set_num_threads(threads)
    nemo = nemo_step(model)
    nemo(inputs)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        nemo(inputs)
    torch_seconds = {event.key: event.self_cpu_time_total / 1e6 for event in profiler.key_averages()}
    torch_ops = {
        "matrix products": TORCH_PRODUCTS,
        "convolutions": {op for op in torch_seconds if op.startswith("aten::") and "conv" in op},
    }
    executor.predict(inputs, ExecutorPrecision.float16.value, threads)
    executor_seconds: dict[str, float] = {}
    executor.predict(inputs, ExecutorPrecision.float16.value, threads, op_seconds=executor_seconds)
    return {
        "NeMo": _by_part(torch_seconds, torch_ops),
        "executor float16": _by_part(executor_seconds, EXECUTOR_OPS),
    }


def _by_part(seconds: dict[str, float], parts: dict[str, set[str]]) -> dict[str, float]:
    by_part = {part: sum(seconds.get(op, 0.0) for op in parts[part]) for part in PARTS}
    whole = sum(seconds.values())
    return {**by_part, "everything else": whole - sum(by_part.values()), "whole step": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the .nemo checkpoint the packages were built from")
    parser.add_argument("packages", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="timed steps after the first")
    arguments = parser.parse_args()

    from sortformer_build.checkpoint.sources import Checkpoint, load_model

    results = Results("executor")
    model = load_model(Checkpoint(arguments.checkpoint, "", "local", str(arguments.checkpoint)))
    cores = usable_cores()
    counts = (1, cores) if cores > 1 else (1,)
    header = ["package", "threads", "NeMo", "executor float32", "executor float16", "float16 / NeMo"]
    header.append("first step")
    rows = []
    best: dict[tuple[str, int], dict[str, float]] = {}
    for package in arguments.packages:
        name = f"{package.parent.name}/{package.stem}"
        for threads in counts:
            seconds = time_package(model, package, threads, arguments.repeat)
            figures = best[name, threads] = {kind: min(steps[1:]) for kind, steps in seconds.items()}
            cells = [f"{figures[kind]:.3f} s" for kind in KINDS]
            cells += [f"{figures['float16'] / figures['NeMo']:.2f}", f"{seconds['float16'][0]:.2f} s"]
            rows.append([name, str(threads), *cells])
            print(" | ".join(rows[-1]), flush=True)
    title = f"Seconds per step on full buffers, best of {arguments.repeat} after the first; {cores} cores"
    results.table(title, header, rows)
    if len(counts) > 1:
        results.table(
            f"Speed-up from 1 thread to {cores}",
            ["package", "NeMo", "executor float32", "executor float16"],
            [
                [name, *(f"{best[name, 1][kind] / best[name, cores][kind]:.2f}x" for kind in KINDS)]
                for name in dict.fromkeys(name for name, _ in best)
            ],
        )
    rows = []
    for package in arguments.packages:
        name = f"{package.parent.name}/{package.stem}"
        breakdown = time_breakdown(model, package, cores)
        for side, parts in breakdown.items():
            rows.append([name, side, *(f"{seconds:.3f} s" for seconds in parts.values())])
        products = breakdown["executor float16"]["matrix products"] / breakdown["NeMo"]["whole step"]
        rows.append([name, "executor's products / NeMo's whole step", f"{products:.2f}", "", "", ""])
    results.table(
        f"Where one step's time goes at {cores} threads (one profiled step)",
        ["package", "run", *PARTS, "everything else", "whole step"],
        rows,
    )
    results.write()


if __name__ == "__main__":
    main()
