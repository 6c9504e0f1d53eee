"""Seconds per streaming step of the NumPy executor, on saved packages, in both numeric modes.

One step is one `predict` of the package on full buffers (chunk, speaker cache and FIFO all
filled), the largest input a parity check feeds it. BLAS runs on one thread, as in the build's
parity stage, and the two modes alternate step by step, so that their ratio holds on a busy machine.

    python benchmarks/executor.py outputs/synthetic/fp16/Sortformer_v2.1.mlpackage [...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sortformer_build import contract
from sortformer_build.coreml.package import read_package
from sortformer_build.executor import PRECISIONS, load_package
from sortformer_build.geometry import StreamingGeometry


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


def time_package(package: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """(first step seconds, best of `repeat` later steps) per numeric mode.

    The modes take turns step by step, so that both see the same load on a shared machine.
    """
    model = load_package(package)
    geometry = StreamingGeometry.from_metadata(model.metadata)
    described = {f.name: f.type.multiArrayType.shape for f in read_package(package).spec.description.input}
    d_model = int(described[contract.SPKCACHE][-1])
    inputs = full_inputs(geometry, d_model)
    seconds: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(repeat + 1):
            for precision in PRECISIONS:
                start = time.perf_counter()
                model.predict(inputs, precision=precision)
                seconds[precision].append(time.perf_counter() - start)
    return {precision: (steps[0], min(steps[1:])) for precision, steps in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="timed steps after the first")
    arguments = parser.parse_args()
    print("| package | mode | first step (decodes weights) | later steps, best | float16 / float32 |")
    print("| --- | --- | --- | --- | --- |")
    for package in arguments.packages:
        name = f"{package.parent.name}/{package.stem}"
        timed = time_package(package, arguments.repeat)
        for precision, (first, best) in timed.items():
            ratio = best / timed["float32"][1]
            print(f"| {name} | {precision} | {first:.2f} s | {best:.2f} s | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
