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

from results import Results


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

    results = Results("report")
    imports = time.perf_counter() - started
    matrix = read_matrix(arguments.output_dir)
    path = arguments.output_dir / REPORT_FILE
    rows = [["imports", f"{imports:.2f} s", "", ""]]
    for attempt in range(1, arguments.repeat + 1):
        started = time.perf_counter()
        size = write_report(
            path, arguments.output_dir, matrix.rows, f"Release report: {arguments.output_dir}", matrix.command
        )
        seconds = time.perf_counter() - started
        images = path.read_text().count("<img ")
        rows.append([f"write {attempt}", f"{seconds:.2f} s", f"{size / 1e3:.0f} kB", str(images)])
    results.table(f"report.html of {arguments.output_dir}", ["step", "seconds", "size", "images"], rows)
    results.write()


if __name__ == "__main__":
    main()
