"""`sortformer-build-bench A.mlpackage B.mlpackage`: which of two Core ML models with the same
inputs is faster on this Mac (fp16 against 6-bit, or ours against another build).

Both are compiled and checked by a first prediction in a fresh process, then loaded into this
one and called in alternation on the same inputs after a warm-up, so a change of the machine's
speed during the run touches both alike. Prints median and p95 per call and the ratio B/A.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sortformer_build.coreml.host import availability, current_facts, required_macos
from sortformer_build.coreml.inputs import InputFill
from sortformer_build.errors import BuildError
from sortformer_build.records.base import Record
from sortformer_build.records.device import ComputeUnits, HostFacts

PROG = "sortformer-build-bench"


class BenchModel(Record):
    package: str
    compile_seconds: float
    load_seconds: float
    first_predict_seconds: float
    median_ms: float
    p95_ms: float


class BenchResult(Record):
    machine: HostFacts
    compute_units: ComputeUnits
    inputs: InputFill
    warmup: int
    calls: int
    a: BenchModel
    b: BenchModel

    @property
    def median_ratio(self) -> float:
        return self.b.median_ms / self.a.median_ms

    @property
    def p95_ratio(self) -> float:
        return self.b.p95_ms / self.a.p95_ms

    def render(self) -> str:
        lines = [
            f"{self.machine.describe()}, compute units {self.compute_units.value}, {self.inputs.value} "
            f"inputs, {self.calls} alternated calls each after {self.warmup} warm-up calls",
            "| | model | compile | load | first prediction | median | p95 |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, model in (("A", self.a), ("B", self.b)):
            lines.append(
                f"| {label} | {Path(model.package).name} | {model.compile_seconds:.2f} s | "
                f"{model.load_seconds:.2f} s | {model.first_predict_seconds:.3f} s | "
                f"{model.median_ms:.3f} ms | {model.p95_ms:.3f} ms |"
            )
        lines.append(f"B/A: median {self.median_ratio:.3f}, p95 {self.p95_ratio:.3f}")
        return "\n".join(lines)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Interleaved A/B latency of two Core ML packages with the same inputs (macOS only).",
    )
    parser.add_argument("a", type=Path, metavar="A.mlpackage")
    parser.add_argument("b", type=Path, metavar="B.mlpackage")
    parser.add_argument(
        "--compute-units",
        choices=[units.value for units in ComputeUnits],
        default=ComputeUnits.all.value,
        help="what Core ML may run the models on (default: all)",
    )
    parser.add_argument("--warmup", type=_count(0), default=20, metavar="N", help="untimed calls of each")
    parser.add_argument("--calls", type=_count(1), default=200, metavar="N", help="timed calls of each")
    parser.add_argument(
        "--inputs",
        choices=[fill.value for fill in InputFill],
        default=InputFill.random.value,
        help="zeros, or seeded random values of each declared shape and type (default: random)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this file")
    return parser.parse_args(argv)


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _package_problem(path: Path) -> str | None:
    if not path.exists():
        return f"{path} does not exist"
    if path.suffix != ".mlpackage" or not path.is_dir():
        return f"{path} is not an .mlpackage folder"
    return None


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    for path in (arguments.a, arguments.b):
        problem = _package_problem(path)
        if problem:
            print(f"{PROG}: {problem}", file=sys.stderr)
            return 2
    facts = current_facts()
    if facts.system != "Darwin":
        print(
            f"{PROG} needs macOS: Core ML cannot compile, load or run models on {facts.system}",
            file=sys.stderr,
        )
        return 1
    from sortformer_build.cli.logs import quiet_third_party

    quiet_third_party()
    try:
        result = bench(
            arguments.a,
            arguments.b,
            ComputeUnits(arguments.compute_units),
            InputFill(arguments.inputs),
            arguments.seed,
            arguments.warmup,
            arguments.calls,
        )
    except BuildError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(result.render())
    if arguments.json:
        result.write(arguments.json)
    return 0


def bench(
    a: Path, b: Path, units: ComputeUnits, fill: InputFill, seed: int, warmup: int, calls: int
) -> BenchResult:
    from sortformer_build.coreml import macos
    from sortformer_build.coreml.device_report import interleaved_calls
    from sortformer_build.coreml.inputs import declared_inputs, input_arrays
    from sortformer_build.coreml.package import read_package
    from sortformer_build.records.device import LatencyFigures

    facts = current_facts()
    inputs = declared_inputs(a)
    if declared_inputs(b) != inputs:
        described = [
            f"{path.name} ({', '.join(item.describe() for item in declared_inputs(path))})" for path in (a, b)
        ]
        raise BuildError(f"A and B declare different inputs: {described[0]} against {described[1]}")
    for path in (a, b):
        ready = availability(facts, required_macos(read_package(path).spec.specificationVersion))
        if ready.skip is not None:
            raise BuildError(f"{path.name}: {ready.detail}")
    arrays = input_arrays(inputs, fill, seed)
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        loaded, figures, compile_seconds = [], [], []
        for index, path in enumerate((a, b)):
            compiled = Path(folder) / f"{'AB'[index]}-{path.stem}.mlmodelc"
            print(f"Compiling {path.name} and predicting once in a fresh process...", file=sys.stderr)
            start = time.perf_counter()
            macos.compile_package(path, compiled)
            compile_seconds.append(time.perf_counter() - start)
            figures.append(macos.first_predict_in_child(compiled, path, units))
            loaded.append(macos.load_compiled(compiled, units))
        print(f"Timing {calls} alternated calls of each after {warmup} warm-up calls...", file=sys.stderr)
        first, second = loaded
        timings = interleaved_calls(
            lambda: first.predict(arrays), lambda: second.predict(arrays), warmup, calls
        )
    models = []
    for path, seconds, child, compiling in zip((a, b), timings, figures, compile_seconds, strict=True):
        latency = LatencyFigures.from_seconds(seconds, warmup)
        models.append(
            BenchModel(
                package=str(path),
                compile_seconds=round(compiling, 4),
                load_seconds=child.load_seconds,
                first_predict_seconds=child.first_predict_seconds,
                median_ms=latency.median_ms,
                p95_ms=latency.p95_ms,
            )
        )
    return BenchResult(
        machine=facts, compute_units=units, inputs=fill, warmup=warmup, calls=calls, a=models[0], b=models[1]
    )


if __name__ == "__main__":
    sys.exit(main())
