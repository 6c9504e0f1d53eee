"""What a model costs on a device, as a record: the machine, compile, load and first-prediction
times, steady per-call latency, peak memory, and where Core ML plans to run each op.

Everything here is plain data and arithmetic (testable anywhere); `macos.measure_device` fills
it on a Mac. A figure that was not measured is None, and every rendering prints "—" for it.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from enum import StrEnum

import numpy as np

from sortformer_build.coreml.host import ComputeUnits, HostFacts
from sortformer_build.records.base import Record

MISSING = "—"
# Ops that hold values instead of computing: Core ML plans no device for them.
_NOT_COMPUTED = frozenset({"const"})
# How many ops that left the Neural Engine a one-line rendering names by operator.
_NAMED_OPERATORS = 4


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


def summarise_plan(ops: Sequence[PlannedOp]) -> ComputePlanSummary:
    """Shares of ops and of estimated cost per device, and the ops that left the Neural Engine."""
    computing = [op for op in ops if op.operator not in _NOT_COMPUTED]
    planned = [op for op in computing if op.preferred is not None]
    counts = Counter(op.preferred for op in planned)
    costs = {device: 0.0 for device in Device}
    for op in planned:
        if op.cost is not None and op.preferred is not None:
            costs[op.preferred] += op.cost
    total_cost = sum(costs.values())
    off = tuple(
        OffNeuralEngine(
            name=op.name,
            operator=op.operator,
            device=op.preferred,
            neural_engine_supported=Device.neural_engine in op.supported,
        )
        for op in planned
        if op.preferred is not None and op.preferred is not Device.neural_engine
    )
    return ComputePlanSummary(
        ops=len(planned),
        unplanned=len(computing) - len(planned),
        op_share=_shares({device: float(counts[device]) for device in Device}, len(planned)),
        cost_share=_shares(costs, total_cost) if total_cost > 0 else None,
        off_neural_engine=off,
    )


def _shares(amounts: dict[Device, float], total: float) -> DeviceShares:
    if total <= 0:
        return DeviceShares(neural_engine=0.0, gpu=0.0, cpu=0.0)
    return DeviceShares(**{device.value: round(amounts[device] / total, 6) for device in Device})


def peak_rss_bytes() -> int:
    """The peak resident memory of this process so far (getrusage counts bytes on macOS,
    kilobytes on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


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
            ("compile", _seconds(self.compile_seconds)),
            ("load (fresh process)", _seconds(self.load_seconds)),
            ("first prediction", _seconds(self.first_predict_seconds)),
            (
                f"per call, median / p95{counted}",
                f"{latency.median_ms:.2f} / {latency.p95_ms:.2f} ms" if latency else MISSING,
            ),
            ("peak memory of the process", _megabytes(self.peak_rss_bytes)),
            (
                f"ops on Neural Engine / GPU / CPU{f' ({plan.ops} ops)' if plan else ''}",
                plan.op_share.describe() if plan else MISSING,
            ),
            (
                "estimated cost on Neural Engine / GPU / CPU",
                plan.cost_share.describe() if plan and plan.cost_share else MISSING,
            ),
            (
                "ops off the Neural Engine",
                _off_neural_engine(plan) if plan and self.neural_engine_in_play else MISSING,
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
            placement = f"Neural Engine share {MISSING}"
        else:
            cost = f" ({plan.cost_share.neural_engine:.1%} of cost)" if plan.cost_share else ""
            placement = (
                f"Neural Engine {plan.op_share.neural_engine:.1%} of ops{cost}, "
                f"{len(plan.off_neural_engine)} off it"
            )
        parts = [
            f"compile {_seconds(self.compile_seconds)}",
            f"load {_seconds(self.load_seconds)}",
            f"first prediction {_seconds(self.first_predict_seconds)}",
            self.latency.describe() if self.latency else f"per call {MISSING}",
            f"peak {_megabytes(self.peak_rss_bytes)}",
            placement,
        ]
        notes = "".join(f"; {note}" for note in self.notes())
        return f"{self.machine.describe()}, {self.compute_units.value}: {', '.join(parts)}{notes}"


def _seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _megabytes(value: int | None) -> str:
    return MISSING if value is None else f"{value / 1e6:.0f} MB"


def _off_neural_engine(plan: ComputePlanSummary) -> str:
    if not plan.off_neural_engine:
        return "none"
    named = plan.off_by_operator()
    listed = ", ".join(f"{operator} x{count}" for operator, count in named[:_NAMED_OPERATORS])
    more = f", {len(named) - _NAMED_OPERATORS} more kinds" if len(named) > _NAMED_OPERATORS else ""
    unsupported = sum(not op.neural_engine_supported for op in plan.off_neural_engine)
    return f"{len(plan.off_neural_engine)} ({listed}{more}; {unsupported} unsupported there)"


def timed_calls(call: Callable[[], object], warmup: int, calls: int) -> list[float]:
    """Wall seconds of `calls` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def interleaved_calls(
    first: Callable[[], object], second: Callable[[], object], warmup: int, calls: int
) -> tuple[list[float], list[float]]:
    """Wall seconds of `calls` calls of each, alternated after `warmup` untimed calls of each.
    Which goes first alternates too, so neither always runs in the other's wake (caches, clocks,
    heat): a drift of the machine's speed then touches both alike."""
    for _ in range(warmup):
        first()
        second()
    timings: tuple[list[float], list[float]] = ([], [])
    for index in range(calls):
        order = ((first, timings[0]), (second, timings[1]))
        for call, seconds in order if index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
    return timings
