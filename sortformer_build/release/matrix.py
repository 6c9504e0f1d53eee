"""The summary of a sweep: one row per job, written beside the artifacts as matrix.md and
matrix.json, and printed.

Jobs may run in worker processes or on other machines (joblib, submitit), where Hydra also runs
`on_job_end`, so nothing is handed over in memory: each job leaves its `JobStatus` in its job
folder, and `on_multirun_end`, which Hydra calls in the launching process once every job has
returned, reads them back with each artifact's manifest. Jobs record their failures instead of
raising (Hydra would then skip this callback), so the summary lists them and exits non-zero.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sortformer_build import text
from sortformer_build.errors import BuildError
from sortformer_build.records.base import RecordError
from sortformer_build.records.evaluation import DatasetEvaluation
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import SUMMARY_STEM, MatrixRow, ReleaseMatrix
from sortformer_build.records.status import JobStatus, read_statuses
from sortformer_build.records.steps import StepStatus
from sortformer_build.text import markdown_table


class ReleaseSummary(Callback):
    """Registered under `hydra.callbacks` in sortformer_build/conf/build.yaml."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        statuses = sorted(read_statuses(Path(config.hydra.sweep.dir)), key=_order)
        planned = [status for status in statuses if status.dry_run]
        if planned:
            print(_plan_title(planned))
            print(markdown_table(PLAN_COLUMNS, map(plan_cells, planned)))
        rows = matrix_rows([status for status in statuses if not status.dry_run])
        for output_dir, group in _by_output_dir(rows).items():
            try:
                title, table, report = write_summary(output_dir, group)
            except (BuildError, OSError) as error:
                print(f"sortformer-build: error: {error}", file=sys.stderr)
                sys.exit(1)
            print(f"{title}:\n{table}\n{report}")
        failed = [status for status in statuses if not status.ok]
        if failed:
            print(f"sortformer-build: {len(failed)} of {len(statuses)} jobs failed", file=sys.stderr)
            sys.exit(1)


def _order(status: JobStatus) -> tuple[str, str, bool, str]:
    """Twins (same file name) next to each other, fp16 first."""
    return str(status.output_dir), status.file_name or "", not status.fp16, status.compression or ""


def matrix_rows(statuses: Iterable[JobStatus]) -> list[MatrixRow]:
    """One row per job with the manifest it delivered; sizes relative to fp16 twins."""
    pairs = [(status, _manifest(status)) for status in statuses]
    fp16 = {
        (status.output_dir, manifest.variant.file_name): manifest.artifact.bytes
        for status, manifest in pairs
        if manifest is not None and manifest.compression.is_fp16
    }
    rows = []
    for status, manifest in pairs:
        twin = None if manifest is None else fp16.get((status.output_dir, manifest.variant.file_name))
        ratio = None if manifest is None or not twin else round(manifest.artifact.bytes / twin, 3)
        rows.append(MatrixRow(status=status, manifest=manifest, ratio_to_fp16=ratio))
    return rows


def _manifest(status: JobStatus) -> Manifest | None:
    if not status.ok or status.manifest is None:
        return None
    try:
        return Manifest.read(Path(status.manifest))
    except RecordError:
        return None


RELEASE_COLUMNS = (
    "artifact",
    "precision",
    "geometry",
    "latency",
    "size",
    "vs fp16",
    "verification",
    "figures",
    "wall",
    "cache",
    "error",
)
# Added when a row was evaluated: DER against the ground truth, NeMo and the fp16 twin.
DER_COLUMNS = ("DER", "DER vs NeMo", "DER vs fp16")
_DER_AT = RELEASE_COLUMNS.index("wall")


def _columns(rows: list[MatrixRow]) -> tuple[str, ...]:
    if not any(row.manifest is not None and row.manifest.evaluations for row in rows):
        return RELEASE_COLUMNS
    return (*RELEASE_COLUMNS[:_DER_AT], *DER_COLUMNS, *RELEASE_COLUMNS[_DER_AT:])


def release_cells(row: MatrixRow, columns: tuple[str, ...]) -> list[str]:
    manifest = row.manifest
    if manifest is None:
        error = row.status.error or ("its manifest is missing or unreadable" if row.status.ok else "")
        return _failure(row.status, error, columns)
    cells = {
        "artifact": row.package or "",
        "precision": manifest.compression.name,
        "geometry": manifest.geometry.describe(),
        "latency": manifest.geometry.latency,
        "size": text.megabytes(manifest.artifact.bytes),
        "vs fp16": text.ratio(row.ratio_to_fp16),
        "verification": verification_summary(manifest),
        "figures": "; ".join(step.detail for step in manifest.steps_with(StepStatus.verified) if step.detail),
        "wall": f"{row.status.seconds:.1f} s",
        "cache": cache_state(row.status, manifest),
        "error": "",
        **dict(zip(DER_COLUMNS, der_cells(manifest), strict=True)),
    }
    return [cells[column] for column in columns]


def der_cells(manifest: Manifest) -> tuple[str, str, str]:
    """DER against the ground truth, NeMo and the fp16 twin, one entry per dataset."""
    evaluations = manifest.evaluations
    if not evaluations:
        return ("", "", "")
    return (
        "; ".join(_truth(evaluation, manifest.checkpoint.random_weights) for evaluation in evaluations),
        "; ".join(f"{evaluation.der_vs_nemo.der:.2%} ({evaluation.dataset})" for evaluation in evaluations),
        "; ".join(
            f"{text.points(evaluation.der_change_vs_fp16_pp)} ({evaluation.dataset})"
            for evaluation in evaluations
        ),
    )


def _truth(evaluation: DatasetEvaluation, random_weights: bool) -> str:
    rates = evaluation.der_vs_truth
    if rates is None:
        return f"no ground truth ({evaluation.dataset})"
    note = "; random weights: not meaningful" if random_weights else ""
    return f"{rates.der:.2%} ({evaluation.dataset}, collar {evaluation.scoring.collar:g}{note})"


def verification_summary(manifest: Manifest) -> str:
    """e.g. `verified: lint, parity; skipped: on-device`."""
    groups = {
        status: [step.name for step in manifest.steps_with(status)]
        for status in (StepStatus.verified, StepStatus.failed, StepStatus.skipped)
    }
    return "; ".join(f"{status.value}: {', '.join(names)}" for status, names in groups.items() if names)


def cache_state(status: JobStatus, manifest: Manifest) -> str:
    """`up to date`, the stages the build cache served, or `miss` when it served none."""
    if status.up_to_date:
        return "up to date"
    # Weights found on disk come from the checkpoint cache, not the build cache.
    hits = [step.name for step in manifest.steps_with(StepStatus.cached) if step.name != "checkpoint"]
    return f"hit: {', '.join(hits)}" if hits else "miss"


PLAN_COLUMNS = ("artifact", "precision", "geometry", "latency", "plan", "checkpoint", "cache", "error")


def _plan_title(planned: list[JobStatus]) -> str:
    fresh = sum(status.plan is not None and status.plan.up_to_date for status in planned)
    failed = sum(not status.ok for status in planned)
    to_build = len(planned) - fresh - failed
    return f"Dry run of {len(planned)} jobs: {to_build} to build, {fresh} up to date, {failed} failed"


def plan_cells(status: JobStatus) -> list[str]:
    plan = status.plan
    if not status.ok or plan is None:
        return _failure(status, status.error or "", PLAN_COLUMNS)
    return [
        plan.package,
        plan.compression,
        plan.geometry,
        plan.latency,
        "up to date" if plan.up_to_date else "build",
        plan.checkpoint,
        ", ".join(f"{stage.name} {stage.prediction.value}" for stage in plan.stages),
        "",
    ]


def _failure(status: JobStatus, error: str, columns: Iterable[str]) -> list[str]:
    """A failed job's cells: which job it was, its wall time and its error."""
    known = {
        "artifact": status.file_name or "?",
        "precision": status.compression or "?",
        "wall": f"{status.seconds:.1f} s",
        "error": error,
    }
    return [known.get(column, "") for column in columns]


def sweep_command() -> str:
    """The command line as typed, for the record (the model card quotes it)."""
    return shlex.join(["sortformer-build", *sys.argv[1:]])


def _by_output_dir(rows: list[MatrixRow]) -> dict[Path, list[MatrixRow]]:
    groups: dict[Path, list[MatrixRow]] = {}
    for row in rows:
        groups.setdefault(Path(row.status.output_dir or "."), []).append(row)
    return groups


def matrix_path(output_dir: Path) -> Path:
    return output_dir / f"{SUMMARY_STEM}.json"


def read_matrix(output_dir: Path) -> ReleaseMatrix:
    return ReleaseMatrix.read(matrix_path(output_dir))


def write_summary(output_dir: Path, rows: list[MatrixRow]) -> tuple[str, str, str]:
    """Write matrix.md and matrix.json, each replaced in one rename, under a lock (two sweeps into
    one folder leave one sweep's pair, never one file of each), then report.html; return a title
    naming the matrix, the table, and a line naming the report."""
    from sortformer_build import faults
    from sortformer_build.release.report.page import REPORT_FILE, write_report
    from sortformer_build.store import atomic, space

    matrix = ReleaseMatrix(rows=rows, command=sweep_command())
    summary = output_dir / f"{SUMMARY_STEM}.md"
    title = f"Release matrix {summary}: {len(rows)} jobs, {matrix.failed} failed"
    columns = _columns(rows)
    table = markdown_table(columns, (release_cells(row, columns) for row in rows))
    texts = {summary: f"# {title}\n\n{table}\n", matrix_path(output_dir): matrix.to_json()}
    needed = sum(len(text.encode()) for text in texts.values())
    with (
        space.reported(output_dir, "the release matrix", lambda: needed, exact=True),
        atomic.lock(matrix_path(output_dir)),
    ):
        for index, (path, text) in enumerate(texts.items()):
            if index:
                faults.point("matrix.write", output_dir)
            atomic.write_text(path, text)
    report = output_dir / REPORT_FILE
    started = time.perf_counter()
    size = write_report(report, output_dir, rows, f"Release report: {output_dir}", matrix.command)
    return title, table, report_line(report, size, time.perf_counter() - started)


def report_line(path: Path, size: int, seconds: float) -> str:
    return f"Report {path} ({size / 1e3:.0f} kB, written in {seconds:.1f} s)"
