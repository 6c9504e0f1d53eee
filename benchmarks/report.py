"""How long report.html takes to write, and how big it is, for a finished sweep's output folder.

    .venv/bin/python benchmarks/report.py OUTPUT_DIR [--repeat N]

Writes `OUTPUT_DIR/report.html` from its matrix.json (as the sweep's summary does) and prints
the seconds spent importing the plotting and scoring libraries (once per process, as in the
sweep's launching process), the seconds of each write, the page's size and its image count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()

    started = time.perf_counter()
    import matplotlib.figure  # noqa: F401
    import pyannote.metrics.diarization  # noqa: F401

    from sortformer_build.release.matrix import read_matrix
    from sortformer_build.release.report.page import REPORT_FILE, write_report

    print(f"imports: {time.perf_counter() - started:.2f} s")
    matrix = read_matrix(arguments.output_dir)
    path = arguments.output_dir / REPORT_FILE
    for attempt in range(1, arguments.repeat + 1):
        started = time.perf_counter()
        size = write_report(
            path, arguments.output_dir, matrix.rows, f"Release report: {arguments.output_dir}", matrix.command
        )
        seconds = time.perf_counter() - started
        print(
            f"write {attempt}: {seconds:.2f} s, {size / 1e3:.0f} kB, {path.read_text().count('<img ')} images"
        )


if __name__ == "__main__":
    main()
