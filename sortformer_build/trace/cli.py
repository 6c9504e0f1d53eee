"""`sortformer-build-trace`: compare a candidate trace with a reference trace, or summarise one.

    sortformer-build-trace compare REFERENCE CANDIDATE [--tolerances FILE] [--json FILE]
    sortformer-build-trace show TRACE

The index's JSON Schema is schemas/trace-index.schema.json.

Exit status: 0 when the candidate follows the reference within tolerance, 1 when they part,
2 for input that cannot be compared (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sortformer_build.errors import BuildError

PROG = "sortformer-build-trace"
SUFFIXES = (".safetensors", ".json")
PARTED, BAD_INPUT = 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare",
        help="where a candidate trace first parts from the reference, tensor by tensor",
        description="Align the chunks (windows) of two traces of one model on one recording and report, "
        "per tensor both hold, the first chunk where it leaves its tolerance, by how much, and what that "
        "usually means. Exit 1 when they part.",
    )
    compare.add_argument("reference", type=Path, help="the reference trace (.safetensors or .json)")
    compare.add_argument("candidate", type=Path, help="the trace to check, e.g. written by a host runtime")
    compare.add_argument(
        "--tolerances", type=Path, help='JSON {"tensors": {name: {"atol": x, "rtol": y}}} over the defaults'
    )
    compare.add_argument("--json", type=Path, help="also write the figures to this file")
    show = commands.add_parser("show", help="what a trace holds", description="Summarise a trace.")
    show.add_argument("trace", type=Path, help="a trace (.safetensors or .json)")
    arguments = parser.parse_args(argv)
    paths = [arguments.trace] if arguments.command == "show" else [arguments.reference, arguments.candidate]
    try:
        # Before anything heavy is imported: a mistyped path is answered at once.
        for path in [*paths, *([arguments.tolerances] if arguments.command == "compare" else [])]:
            _check_path(path)
        if arguments.command == "show":
            _show(arguments.trace)
            return 0
        return _compare(arguments.reference, arguments.candidate, arguments.tolerances, arguments.json)
    except BuildError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return BAD_INPUT


def _check_path(path: Path | None) -> None:
    if path is not None and not path.is_file():
        raise BuildError(f"{path} does not exist")


def _compare(reference_path: Path, candidate_path: Path, tolerances: Path | None, output: Path | None) -> int:
    from sortformer_build.trace.compare import compare_traces, rows
    from sortformer_build.trace.format import read_trace
    from sortformer_build.trace.tolerances import DEFAULT_TOLERANCES, MEANINGS, read_tolerances

    reference, candidate = read_trace(reference_path), read_trace(candidate_path)
    table = DEFAULT_TOLERANCES if tolerances is None else read_tolerances(tolerances)
    comparison = compare_traces(reference, candidate, table)
    for role, trace, count in (
        ("reference", reference, comparison.reference_count),
        ("candidate", candidate, comparison.candidate_count),
    ):
        index = trace.index
        print(f"{role}: {trace.path} ({index.producer}, {index.name}, {count} {comparison.unit}s)")
    print(f"compared: {comparison.compared_count} {comparison.unit}s, {len(comparison.tensors)} tensors")
    if comparison.not_compared:
        print(f"not in the candidate: {', '.join(comparison.not_compared)}")
    header = ("tensor", "first beyond tolerance", "error there", "tolerance", "max error")
    table_rows = [header, *rows(comparison)]
    widths = [max(len(row[column]) for row in table_rows) for column in range(len(header))]
    for row in table_rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if output is not None:
        comparison.write(output)
    if not comparison.parted:
        print(f"agree: {comparison.summary()}")
        return 0
    print(f"PARTED: {comparison.summary()}")
    first = next(d for d in comparison.tensors if d.tensor == comparison.first_tensor)
    if first.note:
        print(f"  {first.note}")
    if first.tensor.startswith("state/"):
        print(f"  (the state NeMo's update leaves after {comparison.unit} {first.chunk})")
    print(f"  usually: {MEANINGS.get(first.tensor, 'no diagnosis for this tensor')}")
    later = [d.tensor for d in comparison.tensors if d.parted and d.tensor != first.tensor]
    if later:
        print(f"  also parted (at or after it): {', '.join(later)}")
    return PARTED


def _show(path: Path) -> None:
    from sortformer_build.trace.format import STATE_COMPRESSED, read_trace

    trace = read_trace(path)
    index = trace.index
    print(f"{trace.path}: {index.kind} trace of {index.name} by {index.producer}")
    print(f"geometry: {index.geometry.describe()}")
    print(f"checkpoint sha256: {index.checkpoint_sha256}")
    print(f"package content sha256: {index.package_sha256 or 'none (NeMo itself)'}")
    recording = index.recording
    seconds = recording.samples / recording.sample_rate
    print(
        f"recording: {recording.name}, {recording.samples} samples at {recording.sample_rate} Hz "
        f"({seconds:.2f} s), sha256 {recording.sha256}"
    )
    if index.features is not None:
        features = index.features
        print(
            f"features: {features.n_mels} mel, n_fft {features.n_fft}, window {features.win_length} hop "
            f"{features.hop_length} ({features.window}), {features.normalize} normalisation, dither "
            f"{features.dither:g} (training: {features.training_dither:g}), {features.frames} frames"
        )
    if index.chunks:
        compressed = [
            entry.index
            for entry in index.chunks
            if STATE_COMPRESSED in entry.tensors and bool(trace.chunk(entry.index, STATE_COMPRESSED)[0])
        ]
        print(f"chunks: {len(index.chunks)}; speaker cache compressed in {len(compressed)}: {compressed}")
    if index.windows:
        print(f"windows: {len(index.windows)} starting at mel frames {[w.mel_start for w in index.windows]}")
    if index.segments is not None:
        print(f"segments: {len(index.segments)} (NeMo's post-processing: {index.postprocessing})")
    for scope, specs in (
        ("recording", index.tensors),
        ("per chunk", index.chunk_tensors),
        ("per window", index.window_tensors),
    ):
        for name, spec in specs.items():
            shape = "x".join("*" if size is None else str(size) for size in spec.shape)
            print(f"  {scope:<10} {name:<32} {spec.dtype:<4} [{shape}]")
    stored = len(index.names()) - len(index.aliases)
    print(
        f"arrays: {index.arrays.file}, {index.arrays.bytes / 1e6:.1f} MB, {stored} tensors stored, "
        f"{len(index.aliases)} names aliased to equal content"
    )
    print(f"tools: {', '.join(f'{tool} {version}' for tool, version in index.tools.items())}")
