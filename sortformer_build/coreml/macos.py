"""Steps only Core ML itself can do, which exists on macOS alone: compile, load, predict, and
measure a model on the device.

Every failure is a CoreMLError (a BuildError) carrying Core ML's own words on one line. A model
is loaded from its compiled `.mlmodelc` with `CompiledMLModel`, which raises when loading fails
(`MLModel` on a package only warns, and fails later at the first prediction). The first
prediction runs in a fresh process before the model is trusted in this one: Core ML has been
seen to load a model and then kill the process at its first prediction.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.coreml import host
from sortformer_build.coreml.child import run_in_child
from sortformer_build.coreml.coreml_errors import CoreMLError, readable
from sortformer_build.coreml.device_report import peak_rss_bytes, summarise_plan, timed_calls
from sortformer_build.coreml.inputs import InputFill, declared_inputs, input_arrays
from sortformer_build.records.base import Record
from sortformer_build.records.device import (
    ComputePlanSummary,
    ComputeUnits,
    Device,
    DeviceReport,
    LatencyFigures,
    PlannedOp,
)
from sortformer_build.store import atomic

# Neural Engine compilation of a large graph takes minutes on small devices and sometimes never
# ends: a first prediction slower than this is a failed check, not a stalled build.
FIRST_PREDICT_TIMEOUT = 1800.0


@dataclass
class LoadedModel:
    """A compiled model loaded by Core ML; `keep` holds what must outlive it (its temporary
    `.mlmodelc` folder)."""

    model: Any  # coremltools.models.CompiledMLModel
    name: str
    compute_units: ComputeUnits
    keep: object | None = None

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # coremltools converts float16 arrays in the dict it is given: hand it a copy.
        try:
            outputs = self.model.predict(dict(inputs))
        except Exception as error:  # RuntimeError from Core ML; TypeError, ValueError from coremltools
            raise CoreMLError(f"{self.name}: Core ML prediction failed: {readable(error)}") from None
        return {name: np.asarray(value) for name, value in outputs.items()}


def core_ml_units(units: ComputeUnits) -> Any:
    import coremltools as ct

    return ct.ComputeUnit[units.name.upper()]


def compile_package(package: Path, destination: Path) -> None:
    """Compile `package` to the `.mlmodelc` folder the Swift runtime ships, replacing
    `destination` in one rename (compile_model would nest its output inside an existing folder)."""
    import coremltools as ct

    with atomic.staged(destination) as partial:
        try:
            ct.models.utils.compile_model(str(package), str(partial))
        except Exception as error:  # RuntimeError from Core ML, Exception when its library is missing
            raise CoreMLError(f"{package.name} does not compile with Core ML: {readable(error)}") from None


def load_compiled(compiled: Path, compute_units: ComputeUnits = ComputeUnits.all) -> LoadedModel:
    """Load with the given compute units (with `all`, this is where Neural Engine compilation
    runs); CoreMLError if Core ML refuses."""
    import coremltools as ct

    try:
        model = ct.models.CompiledMLModel(str(compiled), compute_units=core_ml_units(compute_units))
    except Exception as error:
        raise CoreMLError(
            f"{compiled.name} does not load with Core ML (compute units {compute_units.value}): "
            f"{readable(error)}"
        ) from None
    return LoadedModel(model, compiled.name, compute_units)


def load_package(
    package: Path, compute_units: ComputeUnits = ComputeUnits.all, timeout: float = FIRST_PREDICT_TIMEOUT
) -> LoadedModel:
    """Compile `package` into a temporary folder that lives as long as the model, check a first
    prediction in a fresh process, then load it here."""
    folder = tempfile.TemporaryDirectory(prefix="coreml-")
    compiled = Path(folder.name) / f"{package.stem}.mlmodelc"
    try:
        compile_package(package, compiled)
        first_predict_in_child(compiled, package, compute_units, timeout)
        loaded = load_compiled(compiled, compute_units)
    except BaseException:
        folder.cleanup()
        raise
    loaded.keep = folder
    return loaded


class MeasureRequest(Record):
    compiled: str
    package: str  # where the inputs are declared (a compiled model does not hold its spec)
    compute_units: ComputeUnits
    warmup: int = 0
    calls: int = 0


class ChildFigures(Record):
    """What a fresh process holding only the model measured."""

    load_seconds: float
    first_predict_seconds: float
    latency: LatencyFigures | None
    peak_rss_bytes: int


def first_predict_in_child(
    compiled: Path,
    package: Path,
    compute_units: ComputeUnits,
    timeout: float = FIRST_PREDICT_TIMEOUT,
    warmup: int = 0,
    calls: int = 0,
) -> ChildFigures:
    """Load `compiled` and predict once on zeros in a fresh process (then `calls` timed calls
    after `warmup`); CoreMLError naming the signal if Core ML kills that process."""
    request = MeasureRequest(
        compiled=str(compiled),
        package=str(package),
        compute_units=compute_units,
        warmup=warmup,
        calls=calls,
    )
    result = run_in_child(
        f"{__name__}:measure_in_this_process",
        request.model_dump_json(),
        f"{compiled.name}: the first prediction with compute units {compute_units.value}",
        timeout,
    )
    return ChildFigures.model_validate_json(result)


def measure_in_this_process(request_json: str) -> str:
    """The child's side of `first_predict_in_child`."""
    request = MeasureRequest.model_validate_json(request_json)
    inputs = input_arrays(declared_inputs(Path(request.package)), InputFill.zeros)
    start = time.perf_counter()
    model = load_compiled(Path(request.compiled), request.compute_units)
    loaded = time.perf_counter()
    model.predict(inputs)
    predicted = time.perf_counter()
    latency = None
    if request.calls > 0:
        seconds = timed_calls(lambda: model.predict(inputs), request.warmup, request.calls)
        latency = LatencyFigures.from_seconds(seconds, request.warmup)
    figures = ChildFigures(
        load_seconds=round(loaded - start, 4),
        first_predict_seconds=round(predicted - loaded, 4),
        latency=latency,
        peak_rss_bytes=peak_rss_bytes(),
    )
    return figures.model_dump_json()


class PlanRequest(Record):
    compiled: str
    compute_units: ComputeUnits


class PlanOps(Record):
    ops: tuple[PlannedOp, ...]


def compute_plan_in_child(compiled: Path, compute_units: ComputeUnits, timeout: float) -> ComputePlanSummary:
    """Where Core ML plans to run each op of `compiled` (macOS 14.4+), read in a fresh process."""
    request = PlanRequest(compiled=str(compiled), compute_units=compute_units)
    result = run_in_child(
        f"{__name__}:plan_in_this_process",
        request.model_dump_json(),
        f"{compiled.name}: the compute plan with compute units {compute_units.value}",
        timeout,
    )
    return summarise_plan(PlanOps.model_validate_json(result).ops)


def plan_in_this_process(request_json: str) -> str:
    """The child's side of `compute_plan_in_child`. The path is the compiled `.mlmodelc`: an
    `.mlpackage` path has aborted the process."""
    from coremltools.models.compute_plan import MLComputePlan

    request = PlanRequest.model_validate_json(request_json)
    plan = MLComputePlan.load_from_path(request.compiled, compute_units=core_ml_units(request.compute_units))
    return PlanOps(ops=tuple(_planned_ops(plan, plan.model_structure, ""))).model_dump_json()


def _planned_ops(plan: Any, structure: Any, prefix: str) -> Iterator[PlannedOp]:
    """Every ML-program op of a model structure, through pipelines and nested blocks."""
    if structure.pipeline is not None:
        for name, sub_model in structure.pipeline.sub_models:
            yield from _planned_ops(plan, sub_model, f"{prefix}{name}/")
    elif structure.program is not None:
        for function in structure.program.functions.values():
            yield from _block_ops(plan, function.block, prefix)


def _block_ops(plan: Any, block: Any, prefix: str) -> Iterator[PlannedOp]:
    for operation in block.operations:
        usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
        cost = plan.get_estimated_cost_for_mlprogram_operation(operation)
        named = operation.outputs[0].name if operation.outputs else operation.operator_name
        yield PlannedOp(
            name=f"{prefix}{named}",
            operator=operation.operator_name,
            preferred=None if usage is None else _device(usage.preferred_compute_device),
            supported=() if usage is None else tuple(_device(d) for d in usage.supported_compute_devices),
            cost=None if cost is None else float(cost.weight),
        )
        for nested in operation.blocks:
            yield from _block_ops(plan, nested, prefix)


def _device(device: Any) -> Device:
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )

    if isinstance(device, MLNeuralEngineComputeDevice):
        return Device.neural_engine
    if isinstance(device, MLGPUComputeDevice):
        return Device.gpu
    if isinstance(device, MLCPUComputeDevice):
        return Device.cpu
    raise CoreMLError(f"the compute plan names a device coremltools does not describe: {device!r}")


def measure_device(
    package: Path,
    compiled: Path,
    compute_units: ComputeUnits = ComputeUnits.all,
    warmup: int = 10,
    calls: int = 50,
    timeout: float = FIRST_PREDICT_TIMEOUT,
) -> DeviceReport:
    """Compile `package` to `compiled`, then in fresh processes load it, predict once on zeros,
    time `calls` predictions after `warmup`, and read where each op runs. CoreMLError when the
    model does not compile, load or predict, or kills the process that tries."""
    facts = host.current_facts()
    start = time.perf_counter()
    compile_package(package, compiled)
    compile_seconds = round(time.perf_counter() - start, 4)
    figures = first_predict_in_child(compiled, package, compute_units, timeout, warmup, calls)
    plan, note = None, None
    if facts.macos >= host.COMPUTE_PLAN_MACOS:
        try:
            plan = compute_plan_in_child(compiled, compute_units, timeout)
        except CoreMLError as error:
            note = f"no compute plan: {error}"
    else:
        note = f"no compute plan: it needs macOS 14.4 (this Mac runs {facts.macos_version})"
    return DeviceReport(
        machine=facts,
        compute_units=compute_units,
        compile_seconds=compile_seconds,
        load_seconds=figures.load_seconds,
        first_predict_seconds=figures.first_predict_seconds,
        latency=figures.latency,
        peak_rss_bytes=figures.peak_rss_bytes,
        compute_plan=plan,
        compute_plan_note=note,
    )
