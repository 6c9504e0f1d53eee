"""The summary of a sweep: one row per job, written beside the artifacts as matrix.md and
matrix.json, and printed.

Jobs may run in worker processes or on other machines (joblib, submitit), where Hydra also runs
`on_job_end`, so nothing is handed over in memory: each job leaves its `JobStatus` in its job
folder, and `on_multirun_end`, which Hydra calls in the launching process once every job has
returned, reads them back with each artifact's manifest. Jobs record their failures instead of
raising (Hydra would then skip this callback), so the summary lists them and exits non-zero.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sortformer_build.geometry import Geometry, geometry_from_dict
from sortformer_build.job.status import JobStatus, read_statuses
from sortformer_build.stages.manifest import EvaluationRecord, Manifest, ManifestError
from sortformer_build.stages.steps import CACHED, FAILED, SKIPPED, VERIFIED, Step
from sortformer_build.store import atomic

SUMMARY_STEM = "matrix"
MB = 1e6


class ReleaseSummary(Callback):
    """Registered under `hydra.callbacks` in conf/build.yaml."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        statuses = sorted(read_statuses(Path(config.hydra.sweep.dir)), key=_order)
        planned = [status for status in statuses if status.dry_run]
        if planned:
            print(_plan_title(planned))
            print(markdown(PLAN_COLUMNS, map(plan_row, planned)))
        rows = release_rows([status for status in statuses if not status.dry_run])
        for output_dir, group in _by_output_dir(rows).items():
            title, table = write_summary(output_dir, group)
            print(f"{title}:\n{table}")
        failed = [status for status in statuses if not status.ok]
        if failed:
            print(f"sortformer-build: {len(failed)} of {len(statuses)} jobs failed", file=sys.stderr)
            sys.exit(1)


def _order(status: JobStatus) -> tuple[str, str, bool, str]:
    """Twins (same file name) next to each other, fp16 first."""
    return str(status.output_dir), status.file_name or "", not status.fp16, status.compression or ""


@dataclass
class ReleaseRow:
    """One job of the release, as matrix.json lists it."""

    file_name: str | None
    variant: str | None
    compression: str | None
    output_dir: str | None
    ok: bool
    error: str | None
    seconds: float
    up_to_date: bool
    package: str | None = None  # <release folder>/<file name>.mlpackage
    manifest: str | None = None
    nbits: int | None = None
    bytes: int | None = None
    geometry: Geometry | None = None
    latency_seconds: float | None = None
    steps: list[Step] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    ratio_to_fp16: float | None = None
    evaluation: EvaluationRecord | None = None


def release_rows(statuses: Iterable[JobStatus]) -> list[ReleaseRow]:
    """One row per job, with what its manifest says; sizes relative to fp16 twins."""
    rows = [_row(status) for status in statuses]
    fp16 = {(row.output_dir, row.file_name): row.bytes for row in rows if row.ok and row.nbits is None}
    for row in rows:
        twin = fp16.get((row.output_dir, row.file_name))
        row.ratio_to_fp16 = round(row.bytes / twin, 3) if row.ok and row.bytes and twin else None
    return rows


def _row(status: JobStatus) -> ReleaseRow:
    row = ReleaseRow(
        file_name=status.file_name,
        variant=status.variant,
        compression=status.compression,
        output_dir=status.output_dir,
        ok=status.ok,
        error=status.error,
        seconds=status.seconds,
        up_to_date=status.up_to_date,
    )
    if not status.ok or status.manifest is None:
        return row
    try:
        manifest = Manifest.read(Path(status.manifest))
    except ManifestError as error:
        row.ok, row.error = False, str(error)
        return row
    row.package = f"{manifest.compression.folder}/{manifest.artifact.file}"
    row.manifest = status.manifest
    row.nbits = manifest.compression.nbits
    row.bytes = manifest.artifact.bytes
    row.geometry = manifest.geometry
    row.latency_seconds = manifest.shapes.latency_seconds
    row.steps = manifest.steps
    row.stage_seconds = manifest.seconds
    row.verification = manifest.verification
    row.evaluation = manifest.evaluation if manifest.evaluation.done else None
    return row


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


def _columns(rows: list[ReleaseRow]) -> tuple[str, ...]:
    if not any(row.evaluation is not None for row in rows):
        return RELEASE_COLUMNS
    return (*RELEASE_COLUMNS[:_DER_AT], *DER_COLUMNS, *RELEASE_COLUMNS[_DER_AT:])


def _cells(row: ReleaseRow, columns: tuple[str, ...]) -> list[str]:
    if not row.ok or row.geometry is None or row.bytes is None:
        return _failure(row.file_name, row.compression, row.seconds, row.error or "", columns)
    cells = _release_cells(row)
    if columns == RELEASE_COLUMNS:
        return cells
    return [*cells[:_DER_AT], *_der_cells(row.evaluation), *cells[_DER_AT:]]


def _der_cells(record: EvaluationRecord | None) -> list[str]:
    if record is None:
        return ["", "", ""]
    if record.skipped:
        return [f"skipped: {record.skipped}", "", ""]
    truth = "; ".join(f"{row.der:.2%} ({row.dataset}, collar {row.collar:g})" for row in record.der)
    nemo = f"{record.vs_nemo.der:.2%}" if record.vs_nemo is not None else ""
    change = f"{record.change_vs_fp16_pp:+.2f} pp" if record.change_vs_fp16_pp is not None else ""
    return [truth or "no ground truth", nemo, change]


def _release_cells(row: ReleaseRow) -> list[str]:
    assert row.geometry is not None and row.bytes is not None
    ratio = row.ratio_to_fp16
    return [
        row.package or "",
        row.compression or "",
        row.geometry.describe(),
        row.geometry.latency,
        f"{row.bytes / MB:.1f} MB",
        f"{ratio:.2f}" if ratio else "",
        _verification(row.steps),
        "; ".join(step.detail for step in row.steps if step.status == VERIFIED and step.detail),
        f"{row.seconds:.1f} s",
        _cache(row),
        "",
    ]


def _verification(steps: list[Step]) -> str:
    """e.g. `verified: lint, parity; skipped: on-device`."""
    groups = {
        status: [step.name for step in steps if step.status == status]
        for status in (VERIFIED, FAILED, SKIPPED)
    }
    return "; ".join(f"{status}: {', '.join(names)}" for status, names in groups.items() if names)


def _cache(row: ReleaseRow) -> str:
    """`up to date`, the stages the build cache served, or `miss` when it served none."""
    if row.up_to_date:
        return "up to date"
    # Weights found on disk come from the checkpoint cache, not the build cache.
    hits = [step.name for step in row.steps if step.status == CACHED and step.name != "checkpoint"]
    return f"hit: {', '.join(hits)}" if hits else "miss"


PLAN_COLUMNS = ("artifact", "precision", "geometry", "latency", "plan", "checkpoint", "cache", "error")


def _plan_title(planned: list[JobStatus]) -> str:
    fresh = sum(status.plan is not None and status.plan.up_to_date for status in planned)
    failed = sum(not status.ok for status in planned)
    to_build = len(planned) - fresh - failed
    return f"Dry run of {len(planned)} jobs: {to_build} to build, {fresh} up to date, {failed} failed"


def plan_row(status: JobStatus) -> list[str]:
    plan = status.plan
    if not status.ok or plan is None:
        return _failure(
            status.file_name, status.compression, status.seconds, status.error or "", PLAN_COLUMNS
        )
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


def _failure(
    file_name: str | None, compression: str | None, seconds: float, error: str, columns: Iterable[str]
) -> list[str]:
    """A failed job's cells: which job it was, its wall time and its error."""
    known = {
        "artifact": file_name or "?",
        "precision": compression or "?",
        "wall": f"{seconds:.1f} s",
        "error": error,
    }
    return [known.get(column, "") for column in columns]


def markdown(columns: Iterable[str], rows: Iterable[list[str]]) -> str:
    header = list(columns)
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def sweep_command() -> str:
    """The command line as typed, for the record (the model card quotes it)."""
    return shlex.join(["sortformer-build", *sys.argv[1:]])


def _by_output_dir(rows: list[ReleaseRow]) -> dict[Path, list[ReleaseRow]]:
    groups: dict[Path, list[ReleaseRow]] = {}
    for row in rows:
        groups.setdefault(Path(row.output_dir or "."), []).append(row)
    return groups


@dataclass
class ReleaseMatrix:
    """matrix.json: the rows of the last sweep that wrote to an output folder."""

    jobs: int
    failed: int
    artifacts: list[ReleaseRow]
    command: str | None = None  # the sweep as typed


def read_matrix(output_dir: Path) -> ReleaseMatrix:
    data = json.loads((output_dir / f"{SUMMARY_STEM}.json").read_text())
    rows = []
    for row in data["artifacts"]:
        geometry, steps, evaluation = row.pop("geometry"), row.pop("steps"), row.pop("evaluation", None)
        rows.append(
            ReleaseRow(
                **row,
                geometry=None if geometry is None else geometry_from_dict(geometry),
                steps=[Step(**step) for step in steps],
                evaluation=None if evaluation is None else EvaluationRecord.from_dict(evaluation),
            )
        )
    return ReleaseMatrix(
        jobs=data["jobs"], failed=data["failed"], artifacts=rows, command=data.get("command")
    )


def write_summary(output_dir: Path, rows: list[ReleaseRow]) -> tuple[str, str]:
    """Write matrix.md and matrix.json, each replaced in one rename; return a title naming them
    and the table."""
    failed = sum(not row.ok for row in rows)
    summary = output_dir / f"{SUMMARY_STEM}.md"
    title = f"Release matrix {summary}: {len(rows)} jobs, {failed} failed"
    columns = _columns(rows)
    table = markdown(columns, (_cells(row, columns) for row in rows))
    atomic.write_text(summary, f"# {title}\n\n{table}\n")
    document = ReleaseMatrix(jobs=len(rows), failed=failed, artifacts=rows, command=sweep_command())
    atomic.write_text(summary.with_suffix(".json"), json.dumps(asdict(document), indent=1) + "\n")
    return title, table
