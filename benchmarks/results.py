"""What a benchmark measured, kept: every script prints its tables as it goes and, at the end,
writes them with the machine, the versions and the command to
`benchmarks/results/<date>-<name>.md` and `.json`, where the docs quote them from."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

from pydantic import Field

from sortformer_build.records.base import Record
from sortformer_build.records.manifest import ToolVersions
from sortformer_build.store.atomic import write_text
from sortformer_build.store.provenance import current_provenance, tool_versions
from sortformer_build.text import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1024**3


class Machine(Record):
    cpu: str
    cores: int
    memory_gb: float
    system: str
    # Timings on a busy machine are not comparable with a quiet one's: say how busy it was.
    load_average_at_start: float
    load_average_at_end: float | None = None


class Table(Record):
    title: str
    header: list[str]
    rows: list[list[str]]


class BenchmarkResult(Record):
    name: str
    started: datetime.datetime
    seconds: float | None = None
    command: str
    machine: Machine
    versions: ToolVersions
    revision: str | None
    tables: list[Table] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def markdown(self) -> str:
        machine = self.machine
        lines = [
            f"# {self.name}, {self.started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- command: `{self.command}`",
            f"- machine: {machine.cpu}, {machine.cores} cores, {machine.memory_gb:.0f} GB RAM,"
            f" {machine.system}",
            f"- load average: {machine.load_average_at_start:.1f} at the start, "
            + (
                f"{machine.load_average_at_end:.1f} at the end"
                if machine.load_average_at_end is not None
                else "—"
            ),
            "- versions: "
            + ", ".join(f"{name} {value}" for name, value in self.versions.model_dump().items()),
            f"- revision: {self.revision or 'not a git checkout'}",
        ]
        if self.seconds is not None:
            lines.append(f"- wall time: {self.seconds:.0f} s")
        for table in self.tables:
            lines += ["", f"## {table.title}", "", markdown_table(table.header, table.rows)]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"


class Results:
    """The run of one benchmark script: `table` prints a table and keeps it, `write` files them."""

    def __init__(self, name: str) -> None:
        self._started = datetime.datetime.now(datetime.UTC)
        self._result = BenchmarkResult(
            name=name,
            started=self._started,
            command=shlex.join([Path(sys.executable).name, *sys.argv]),
            machine=_machine(),
            versions=tool_versions(),
            revision=current_provenance().git_revision,
        )
        self._tables: list[Table] = []
        self._notes: list[str] = []

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        self._tables.append(Table(title=title, header=header, rows=rows))
        print(f"\n{title}\n\n{markdown_table(header, rows)}", flush=True)

    def note(self, text: str) -> None:
        self._notes.append(text)
        print(text, flush=True)

    def write(self, folder: Path = RESULTS) -> Path:
        finished = datetime.datetime.now(datetime.UTC)
        result = self._result.model_copy(
            update={
                "seconds": (finished - self._started).total_seconds(),
                "machine": self._result.machine.model_copy(
                    update={"load_average_at_end": os.getloadavg()[0]}
                ),
                "tables": self._tables,
                "notes": self._notes,
            }
        )
        stem = folder / f"{self._started:%Y-%m-%d-%H%M}-{result.name}"
        folder.mkdir(parents=True, exist_ok=True)
        result.write(stem.with_suffix(".json"))
        write_text(stem.with_suffix(".md"), result.markdown())
        print(f"\nResults: {stem}.md and .json", flush=True)
        return stem.with_suffix(".md")


def _machine() -> Machine:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor()
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        memory_gb=round(memory, 1),
        system=f"{platform.system()} {platform.release()}",
        load_average_at_start=os.getloadavg()[0],
    )
