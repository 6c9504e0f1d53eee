"""What a model costs on a device, as records: the machine Core ML ran on, compile, load and
first-prediction times, steady per-call latency, peak memory, and where Core ML plans to run each
op. `coreml.macos.measure_device` fills them on a Mac; a figure that was not measured is None and
prints as "—"."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from sortformer_build import text
from sortformer_build.records.base import Record
from sortformer_build.text import NOT_MEASURED

# How many ops that left the Neural Engine a one-line rendering names by operator.
_NAMED_OPERATORS = 4


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


class ComputeUnits(StrEnum):
    """coremltools' `ComputeUnit` choices, by the names a command line takes."""

    all = "all"
    cpu_and_ne = "cpu_and_ne"
    cpu_and_gpu = "cpu_and_gpu"
    cpu_only = "cpu_only"

    @property
    def may_use_neural_engine(self) -> bool:
        return self in (ComputeUnits.all, ComputeUnits.cpu_and_ne)


class HostFacts(Record):
    """The host as Core ML sees it."""

    system: str  # platform.system(): Darwin, Linux, Windows
    macos_version: str | None  # "14.4.1"; None off macOS
    machine: str  # arm64, x86_64
    chip: str | None  # "Apple M2 Pro", "Intel(R) Core(TM) i7-9750H ..."; None off macOS
    # Apple silicon, also under Rosetta; Intel Macs have none, and there "all" means CPU and GPU.
    neural_engine: bool
    python_version: str
    coremltools_version: str | None
    native_library: bool  # coremltools.libcoremlpython imports
    native_library_error: str | None = None

    @property
    def macos(self) -> tuple[int, ...]:
        return version_tuple(self.macos_version) if self.macos_version else ()

    def describe(self) -> str:
        if self.macos_version is None:
            return f"{self.system} {self.machine}"
        return f"{self.chip or self.machine}, macOS {self.macos_version}"

    def cache_identity(self) -> dict[str, str]:
        """What a cached Core ML result (predictions, DER, timings) depends on beyond the model:
        Core ML's compiler and kernels change with the OS, and devices differ by chip."""
        return {
            "macos": self.macos_version or "",
            "chip": self.chip or self.machine,
            "coremltools": self.coremltools_version or "",
        }


class Device(StrEnum):
    neural_engine = "neural_engine"
    gpu = "gpu"
    cpu = "cpu"


_DEVICE_LABEL = {Device.neural_engine: "Neural Engine", Device.gpu: "GPU", Device.cpu: "CPU"}


class LatencyFigures(Record):
    """Per-call wall time of predictions after `warmup` calls that are not counted."""

    warmup: int
    calls: int
    median_ms: float
    p95_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float], warmup: int) -> LatencyFigures:
        if not seconds:
            raise ValueError("latency figures need at least one timed call")
        milliseconds = np.asarray(seconds, dtype=np.float64) * 1000.0
        return cls(
            warmup=warmup,
            calls=len(milliseconds),
            median_ms=round(float(np.median(milliseconds)), 4),
            p95_ms=round(float(np.percentile(milliseconds, 95)), 4),
        )

    def describe(self) -> str:
        return f"{self.median_ms:.2f} ms median, {self.p95_ms:.2f} ms p95 ({self.calls} calls)"


class PlannedOp(Record):
    """One op of a compute plan: where Core ML prefers to run it, where it could, and its share
    of the estimated cost of a prediction (None where Core ML gives none, as on Intel Macs)."""

    name: str
    operator: str
    preferred: Device | None
    supported: tuple[Device, ...] = ()
    cost: float | None = None


class OffNeuralEngine(Record):
    """An op that will not run on the Neural Engine although the compute units allow it."""

    name: str
    operator: str
    device: Device
    # True: the Neural Engine could run it and Core ML preferred another device; False: it cannot.
    neural_engine_supported: bool


class DeviceShares(Record):
    neural_engine: float
    gpu: float
    cpu: float

    def describe(self) -> str:
        return " / ".join(f"{getattr(self, device.value):.1%}" for device in Device)


class ComputePlanSummary(Record):
    ops: int  # ops with a planned device
    unplanned: int  # computing ops Core ML gave no device for
    op_share: DeviceShares
    cost_share: DeviceShares | None
    off_neural_engine: tuple[OffNeuralEngine, ...]

    def off_by_operator(self) -> list[tuple[str, int]]:
        return Counter(op.operator for op in self.off_neural_engine).most_common()


class DeviceReport(Record):
    """One model on one machine with one choice of compute units. Load, first-prediction,
    latency and memory figures come from a fresh process that held only this model."""

    machine: HostFacts
    compute_units: ComputeUnits
    compile_seconds: float | None = None
    load_seconds: float | None = None
    first_predict_seconds: float | None = None
    latency: LatencyFigures | None = None
    peak_rss_bytes: int | None = None
    compute_plan: ComputePlanSummary | None = None
    # Why there is no compute plan (macOS before 14.4, or Core ML could not make one).
    compute_plan_note: str | None = None

    @property
    def neural_engine_in_play(self) -> bool:
        return self.machine.neural_engine and self.compute_units.may_use_neural_engine

    def notes(self) -> list[str]:
        """What the figures do not show, in words."""
        found = []
        if not self.machine.neural_engine:
            found.append("this Mac has no Neural Engine: it was not exercised")
        elif not self.compute_units.may_use_neural_engine:
            found.append(f"compute units {self.compute_units.value} exclude the Neural Engine")
        if self.compute_plan_note:
            found.append(self.compute_plan_note)
        return found

    def rows(self) -> list[tuple[str, str]]:
        plan = self.compute_plan
        latency = self.latency
        counted = f" ({latency.calls} calls after {latency.warmup})" if latency else ""
        return [
            ("machine", self.machine.describe()),
            ("compute units", self.compute_units.value),
            ("compile", text.seconds(self.compile_seconds)),
            ("load (fresh process)", text.seconds(self.load_seconds)),
            ("first prediction", text.seconds(self.first_predict_seconds)),
            (
                f"per call, median / p95{counted}",
                f"{latency.median_ms:.2f} / {latency.p95_ms:.2f} ms" if latency else NOT_MEASURED,
            ),
            ("peak memory of the process", text.megabytes(self.peak_rss_bytes)),
            (
                f"ops on Neural Engine / GPU / CPU{f' ({plan.ops} ops)' if plan else ''}",
                plan.op_share.describe() if plan else NOT_MEASURED,
            ),
            (
                "estimated cost on Neural Engine / GPU / CPU",
                plan.cost_share.describe() if plan and plan.cost_share else NOT_MEASURED,
            ),
            (
                "ops off the Neural Engine",
                _off_neural_engine(plan) if plan and self.neural_engine_in_play else NOT_MEASURED,
            ),
        ]

    def markdown(self) -> str:
        lines = ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        notes = self.notes()
        if notes:
            lines += ["", *(f"- {note}" for note in notes)]
        return "\n".join(lines) + "\n"

    def one_line(self) -> str:
        plan = self.compute_plan
        if plan is None or not self.neural_engine_in_play:
            placement = f"Neural Engine share {NOT_MEASURED}"
        else:
            cost = f" ({plan.cost_share.neural_engine:.1%} of cost)" if plan.cost_share else ""
            placement = (
                f"Neural Engine {plan.op_share.neural_engine:.1%} of ops{cost}, "
                f"{len(plan.off_neural_engine)} off it"
            )
        parts = [
            f"compile {text.seconds(self.compile_seconds)}",
            f"load {text.seconds(self.load_seconds)}",
            f"first prediction {text.seconds(self.first_predict_seconds)}",
            self.latency.describe() if self.latency else f"per call {NOT_MEASURED}",
            f"peak {text.megabytes(self.peak_rss_bytes)}",
            placement,
        ]
        notes = "".join(f"; {note}" for note in self.notes())
        return f"{self.machine.describe()}, {self.compute_units.value}: {', '.join(parts)}{notes}"


def _off_neural_engine(plan: ComputePlanSummary) -> str:
    if not plan.off_neural_engine:
        return "none"
    named = plan.off_by_operator()
    listed = ", ".join(f"{operator} x{count}" for operator, count in named[:_NAMED_OPERATORS])
    more = f", {len(named) - _NAMED_OPERATORS} more kinds" if len(named) > _NAMED_OPERATORS else ""
    unsupported = sum(not op.neural_engine_supported for op in plan.off_neural_engine)
    return f"{len(plan.off_neural_engine)} ({listed}{more}; {unsupported} unsupported there)"
