"""The arithmetic of a device report (`records.device`): a compute plan summarised per device,
calls timed one after another or interleaved, the peak memory of a process. Plain data in and
out, testable anywhere; `macos.measure_device` uses it on a Mac."""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

from sortformer_build.records.device import (
    ComputePlanSummary,
    Device,
    DeviceShares,
    OffNeuralEngine,
    PlannedOp,
)

# Ops that hold values instead of computing: Core ML plans no device for them.
_NOT_COMPUTED = frozenset({"const"})


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
