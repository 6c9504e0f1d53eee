"""Size of NeMo's reference trace per release variant on the shipped conversation (46.8 s),
full-size synthetic checkpoint of the variant's version (the released weights have the same
shapes, so the same sizes).

    .venv/bin/python benchmarks/trace_size.py [--work DIR] [VARIANT ...]

Prints per variant: chunks (windows), seconds to record, the trace's size (arrays + index), how
many names are aliases of content stored once, and what the trace would weigh with its
float16 embeddings stored as float32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from release import release_configs
from results import Results

from sortformer_build.checkpoint.sources import load_model, resolve_checkpoint
from sortformer_build.config import PostProcessingConfig
from sortformer_build.evaluate.conversation import DATA_DIR
from sortformer_build.evaluate.segments import resolve_postprocessing
from sortformer_build.store.layout import CacheLayout
from sortformer_build.trace.format import read_trace, trace_files
from sortformer_build.trace.record import nemo_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmark-trace-size"))
    parser.add_argument("variants", nargs="*", help="variant options (default: all)")
    arguments = parser.parse_args()
    work = arguments.work.resolve()
    postprocessing = resolve_postprocessing(PostProcessingConfig())
    results = Results("trace-size")
    rows = []
    chosen = set(arguments.variants)
    for config in release_configs(work):
        variant = config.variant
        if chosen and variant.name not in chosen:
            continue
        checkpoint = resolve_checkpoint(config.checkpoint, variant.version, CacheLayout(work))
        model = load_model(checkpoint)
        started = time.perf_counter()
        index = nemo_trace(
            model,
            variant.geometry,
            DATA_DIR / "conversation.flac",
            work / "traces",
            variant.file_name,
            checkpoint.sha256,
            postprocessing,
        )
        seconds = time.perf_counter() - started
        trace = read_trace(trace_files(work / "traces", variant.file_name)[1])
        index_bytes = trace_files(work / "traces", variant.file_name)[1].stat().st_size
        half = sum(
            trace.tensor(stored).nbytes
            for stored in {trace.stored_name(n) for n in index.names()}
            if trace.tensor(stored).dtype.itemsize == 2
        )
        total = index.arrays.bytes + index_bytes
        units = len(index.chunks) or len(index.windows)
        rows.append(
            [
                variant.file_name,
                str(units),
                f"{seconds:.0f}",
                f"{total / 1e6:.1f}",
                f"{len(index.aliases)} of {len(index.names())}",
                f"{(total + half) / 1e6:.1f}",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    results.table(
        "NeMo's trace of the conversation, per variant (full-size synthetic checkpoint of its version)",
        ["variant", "chunks (windows)", "seconds", "trace MB", "aliased names", "MB with float32 embeddings"],
        rows,
    )
    results.write()


if __name__ == "__main__":
    main()
