"""The summary of a sweep: one row per job, written beside the artifacts as matrix.md and
matrix.json, and printed.

Jobs may run in worker processes or on other machines (joblib, submitit), where Hydra also runs
`on_job_end`, so nothing is handed over in memory: each job leaves `job_status.json` in its
output folder (`cli.run_job`), and `on_multirun_end`, which Hydra calls in the launching process
once every job has returned, reads them back from the sweep folder with each artifact's
manifest. Jobs record their failures instead of raising (Hydra would then skip this callback),
so the summary lists them and exits non-zero.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sortformer_build.cli.app import JOB_STATUS_FILE
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.job.steps import CACHED, FAILED, SKIPPED, VERIFIED
from sortformer_build.store import atomic

SUMMARY_STEM = "matrix"
MB = 1e6


class ReleaseSummary(Callback):
    """Registered under `hydra.callbacks` in conf/build.yaml."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        statuses = read_statuses(Path(config.hydra.sweep.dir))
        planned = [status for status in statuses if status.get("dry_run")]
        if planned:
            print(_plan_title(planned))
            print(markdown(PLAN_COLUMNS, map(plan_row, planned)))
        rows = release_rows([status for status in statuses if not status.get("dry_run")])
        for output_dir, group in _by_output_dir(rows).items():
            title, table = write_summary(output_dir, group)
            print(f"{title}:\n{table}")
        failed = [status for status in statuses if not status.get("ok")]
        if failed:
            print(f"sortformer-build: {len(failed)} of {len(statuses)} jobs failed", file=sys.stderr)
            sys.exit(1)


def read_statuses(sweep_dir: Path) -> list[dict[str, Any]]:
    """The status every job of the sweep left, twins (same file name) next to each other."""
    statuses = [json.loads(path.read_text()) for path in sweep_dir.rglob(JOB_STATUS_FILE)]
    return sorted(statuses, key=_order)


def _order(status: dict[str, Any]) -> tuple[str, str, bool, str]:
    name, compression = status.get("file_name") or "", status.get("compression") or ""
    return str(status.get("output_dir")), name, compression != "fp16", compression


def release_rows(statuses: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One JSON-ready row per job, with what its manifest says; sizes relative to fp16 twins."""
    rows = [_row(status) for status in statuses]
    fp16 = {
        (row["output_dir"], row["file_name"]): row["bytes"]
        for row in rows
        if row["ok"] and row["nbits"] is None
    }
    for row in rows:
        twin = fp16.get((row["output_dir"], row["file_name"]))
        row["ratio_to_fp16"] = round(row["bytes"] / twin, 3) if row["ok"] and twin else None
    return rows


def _row(status: dict[str, Any]) -> dict[str, Any]:
    row = {
        key: status.get(key)
        for key in ("file_name", "variant", "compression", "output_dir", "ok", "error", "seconds")
    }
    row.update(
        package=None,
        manifest=None,
        nbits=None,
        bytes=None,
        geometry=None,
        latency_seconds=None,
        steps=[],
        stage_seconds={},
        verification=None,
        up_to_date=status.get("up_to_date", False),
    )
    if not status.get("ok"):
        return row
    record = json.loads(Path(status["manifest"]).read_text())
    compression = record["config"]["compression"]
    geometry = StreamingGeometry.from_metadata(record["geometry"])
    row.update(
        package=f"{compression['folder']}/{record['artifact']['file']}",
        manifest=status["manifest"],
        nbits=compression["nbits"],
        bytes=record["artifact"]["bytes"],
        geometry=asdict(geometry),
        latency_seconds=geometry.latency_seconds,
        steps=record["steps"],
        stage_seconds=record.get("seconds", {}),
        verification=record.get("verification"),
    )
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


def _cells(row: dict[str, Any]) -> list[str]:
    if not row["ok"]:
        return _failure(row, RELEASE_COLUMNS)
    ratio = row["ratio_to_fp16"]
    return [
        row["package"],
        row["compression"],
        StreamingGeometry(**row["geometry"]).describe(),
        f"{row['latency_seconds']:.2f} s",
        f"{row['bytes'] / MB:.1f} MB",
        f"{ratio:.2f}" if ratio else "",
        _verification(row["steps"]),
        "; ".join(step["detail"] for step in row["steps"] if step["status"] == VERIFIED and step["detail"]),
        _seconds(row),
        _cache(row),
        "",
    ]


def _verification(steps: list[dict[str, Any]]) -> str:
    """e.g. `verified: lint, parity; skipped: compile, load`."""
    groups = {
        status: [step["name"] for step in steps if step["status"] == status]
        for status in (VERIFIED, FAILED, SKIPPED)
    }
    return "; ".join(f"{status}: {', '.join(names)}" for status, names in groups.items() if names)


def _cache(row: dict[str, Any]) -> str:
    """`up to date`, the steps the build cache served, or `miss` when it served none."""
    if row["up_to_date"]:
        return "up to date"
    # Weights found on disk come from the checkpoint cache, not the build cache.
    steps = [step for step in row["steps"] if step["name"] != "checkpoint"]
    hits = [step["name"] for step in steps if step["status"] == CACHED]
    return f"hit: {', '.join(hits)}" if hits else "miss"


def _seconds(row: dict[str, Any]) -> str:
    return f"{row['seconds']:.1f} s" if row.get("seconds") is not None else ""


PLAN_COLUMNS = ("artifact", "precision", "geometry", "latency", "plan", "checkpoint", "cache", "error")


def _plan_title(planned: list[dict[str, Any]]) -> str:
    fresh = sum(status.get("plan", {}).get("up_to_date", False) for status in planned)
    failed = sum(not status.get("ok") for status in planned)
    to_build = len(planned) - fresh - failed
    return f"Dry run of {len(planned)} jobs: {to_build} to build, {fresh} up to date, {failed} failed"


def plan_row(status: dict[str, Any]) -> list[str]:
    if not status.get("ok"):
        return _failure(status, PLAN_COLUMNS)
    plan = status["plan"]
    return [
        plan["package"],
        plan["compression"],
        plan["geometry"],
        f"{plan['latency_seconds']:.2f} s",
        "up to date" if plan["up_to_date"] else "build",
        plan["checkpoint"],
        ", ".join(f"{stage} {state}" for stage, state in plan["stages"].items()),
        "",
    ]


def _failure(job: dict[str, Any], columns: Iterable[str]) -> list[str]:
    """A failed job's cells: which job it was, its wall time and its error."""
    known = {
        "artifact": job.get("file_name") or "?",
        "precision": job.get("compression") or "?",
        "wall": _seconds(job),
        "error": job["error"],
    }
    return [known.get(column, "") for column in columns]


def markdown(columns: Iterable[str], rows: Iterable[list[str]]) -> str:
    header = list(columns)
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def _by_output_dir(rows: list[dict[str, Any]]) -> dict[Path, list[dict[str, Any]]]:
    groups: dict[Path, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(Path(row["output_dir"] or "."), []).append(row)
    return groups


def write_summary(output_dir: Path, rows: list[dict[str, Any]]) -> tuple[str, str]:
    """Write matrix.md and matrix.json, each replaced in one rename; return a title naming them
    and the table."""
    failed = sum(not row["ok"] for row in rows)
    summary = output_dir / f"{SUMMARY_STEM}.md"
    title = f"Release matrix {summary}: {len(rows)} jobs, {failed} failed"
    table = markdown(RELEASE_COLUMNS, map(_cells, rows))
    atomic.write_text(summary, f"# {title}\n\n{table}\n")
    document = {"jobs": len(rows), "failed": failed, "artifacts": rows}
    atomic.write_text(summary.with_suffix(".json"), json.dumps(document, indent=1) + "\n")
    return title, table
