"""Core ML's errors in one line, the host facts and skip reasons, and the device report: all on
Linux, with the error texts coremltools' native layer produces and the facts of Macs injected."""

from __future__ import annotations

import coremltools as ct
import pytest

from sortformer_build.coreml.coreml_errors import readable
from sortformer_build.coreml.device_report import interleaved_calls, peak_rss_bytes, summarise_plan
from sortformer_build.coreml.host import (
    MACOS_FOR_SPECIFICATION,
    availability,
    current_facts,
    required_macos,
    skip_reason,
)
from sortformer_build.coreml.targets import TARGET_FACTS, DeploymentTarget
from sortformer_build.records.device import (
    ComputeUnits,
    Device,
    DeviceReport,
    HostFacts,
    LatencyFigures,
    PlannedOp,
)
from sortformer_build.records.steps import SkipReason
from sortformer_build.text import NOT_MEASURED as MISSING

# Foundation prints an NSError's userInfo as a dictionary: keys in order, four-space indents,
# quoted values with backslash escapes (coremltools' Utils::handleError raises it as is).
LOAD_FAILURE = (
    "{\n"
    '    NSLocalizedDescription = "Failed to build the model execution plan using a model architecture '
    "file '/private/var/folders/q1/T/Sortformer_v2.1.mlmodelc/model.mil' with error code: -5.\";\n"
    '    NSUnderlyingError = "Error Domain=com.apple.CoreML Code=0 \\"(null)\\" UserInfo={}";\n'
    "}"
)


def test_the_localized_description_of_a_core_ml_error_is_its_line() -> None:
    assert readable(RuntimeError(LOAD_FAILURE)) == (
        "Failed to build the model execution plan using a model architecture file "
        "'/private/var/folders/q1/T/Sortformer_v2.1.mlmodelc/model.mil' with error code: -5."
    )


def test_escapes_in_the_description_are_undone_and_lines_joined() -> None:
    text = '{\n    NSLocalizedDescription = "tensor \\"fifo\\" in caf\\U00e9:\\n  rank 3\\\\4";\n}'
    assert readable(RuntimeError(text)) == 'tensor "fifo" in café: rank 3\\4'


def test_a_bare_word_description() -> None:
    assert readable(RuntimeError("{\n    NSLocalizedDescription = Failed;\n}")) == "Failed"


def test_coremltools_warning_text_around_the_dictionary() -> None:
    warning = (
        "You will not be able to run predict() on this Core ML model. Underlying exception message was: "
        + LOAD_FAILURE
    )
    assert readable(warning).startswith("Failed to build the model execution plan")


def test_without_a_description_the_message_is_joined_onto_one_line() -> None:
    text = '{\n    NSUnderlyingError = "Error Domain=com.apple.CoreML Code=0";\n}'
    assert readable(RuntimeError(text)) == '{ NSUnderlyingError = "Error Domain=com.apple.CoreML Code=0"; }'
    # Model::Model's own compile error, and coremltools' Python-side refusals, stay as they are.
    compile_error = 'Error compiling model: "Unable to parse ML Program: unknown op constexpr_foo".'
    assert readable(RuntimeError(compile_error)) == compile_error
    refusal = "Unable to compile any Core ML models."
    assert readable(Exception(refusal)) == refusal


def test_an_empty_error_is_named_by_its_type() -> None:
    assert readable(RuntimeError()) == "RuntimeError"


def _mac(**changes: object) -> HostFacts:
    facts = {
        "system": "Darwin",
        "macos_version": "14.4.1",
        "machine": "arm64",
        "chip": "Apple M2 Pro",
        "neural_engine": True,
        "python_version": "3.12.4",
        "coremltools_version": "9.0",
        "native_library": True,
    }
    return HostFacts.model_validate({**facts, **changes})


IOS17 = required_macos(TARGET_FACTS[DeploymentTarget.iOS17].max_specification_version)
IOS16 = required_macos(TARGET_FACTS[DeploymentTarget.iOS16].max_specification_version)


def test_deployment_targets_need_the_macos_they_were_made_for() -> None:
    assert IOS17 == (14,)
    assert IOS16 == (13,)
    with pytest.raises(ValueError, match="newer than any"):
        required_macos(max(MACOS_FOR_SPECIFICATION) + 1)


def test_the_macos_table_is_coremltools_own() -> None:
    """coremltools' `target.macOS<N>` aliases name the specification version of each release."""
    theirs: dict[int, tuple[int, ...]] = {}
    for name, member in ct.target.__members__.items():
        if name.startswith("macOS") and name != "macOS10_16":  # Big Sur's first name for 11
            version = tuple(int(part) for part in name.removeprefix("macOS").split("_"))
            theirs.setdefault(int(member), version)
    assert theirs == MACOS_FOR_SPECIFICATION


def test_linux_is_not_macos() -> None:
    linux = _mac(system="Linux", macos_version=None, chip=None, neural_engine=False, native_library=False)
    assert skip_reason(linux, IOS17) is SkipReason.not_macos
    assert availability(linux, IOS17).detail == (
        "needs macOS (Core ML cannot compile, load or run models on Linux)"
    )


def test_a_mac_older_than_the_target_needs() -> None:
    ventura = _mac(macos_version="13.6.7")
    found = availability(ventura, IOS17)
    assert found.skip is SkipReason.macos_too_old
    assert found.detail == "needs macOS 14 or later to compile this model (this Mac runs macOS 13.6.7)"
    assert skip_reason(ventura, IOS16) is None
    # macOS 14.0 is enough for iOS17.
    assert skip_reason(_mac(macos_version="14.0"), IOS17) is None


def test_a_python_without_coremltools_native_library() -> None:
    facts = _mac(
        python_version="3.14.0",
        native_library=False,
        native_library_error="No module named 'coremltools.libcoremlpython'",
    )
    found = availability(facts, IOS17)
    assert found.skip is SkipReason.no_native_library
    assert "coremltools 9.0 has no Core ML library for Python 3.14.0" in found.detail
    assert "No module named 'coremltools.libcoremlpython'" in found.detail
    # An old macOS is the first thing to fix.
    assert skip_reason(facts.model_copy(update={"macos_version": "13.5"}), IOS17) is SkipReason.macos_too_old


def test_an_intel_mac_runs_the_checks_without_the_neural_engine() -> None:
    intel = _mac(machine="x86_64", chip="Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz", neural_engine=False)
    found = availability(intel, IOS17)
    assert found.skip is None and not found.neural_engine
    assert found.note == "the Neural Engine was not exercised (this Mac has none)"
    apple = availability(_mac(), IOS17)
    assert apple.skip is None and apple.neural_engine and apple.note is None
    assert apple.detail == "Core ML on Apple M2 Pro, macOS 14.4.1, with the Neural Engine"


def test_every_host_skip_reason_means_the_host_could_not_run_core_ml() -> None:
    host_reasons = {SkipReason.not_macos, SkipReason.macos_too_old, SkipReason.no_native_library}
    assert {reason for reason in SkipReason if reason.could_not_run_here} == host_reasons


def test_cache_identity_names_the_os_and_the_chip() -> None:
    assert _mac().cache_identity() == {"macos": "14.4.1", "chip": "Apple M2 Pro", "coremltools": "9.0"}
    assert _mac(macos_version="15.1").cache_identity() != _mac().cache_identity()
    assert _mac(chip="Apple M1").cache_identity() != _mac().cache_identity()


@pytest.mark.skipif(current_facts().system == "Darwin", reason="the facts of a Linux host")
def test_this_linux_host_is_not_macos() -> None:
    facts = current_facts()
    assert not facts.native_library and facts.macos_version is None
    assert skip_reason(facts, IOS17) is SkipReason.not_macos


def test_plan_summary_counts_ops_and_cost_per_device() -> None:
    ops = [
        PlannedOp(name="w", operator="const", preferred=None),
        PlannedOp(
            name="pre/x",
            operator="conv",
            preferred=Device.neural_engine,
            supported=(Device.neural_engine, Device.gpu, Device.cpu),
            cost=0.6,
        ),
        PlannedOp(
            name="pre/y",
            operator="gather",
            preferred=Device.cpu,
            supported=(Device.cpu,),
            cost=0.1,
        ),
        PlannedOp(
            name="head/z",
            operator="layer_norm",
            preferred=Device.gpu,
            supported=(Device.neural_engine, Device.gpu, Device.cpu),
            cost=0.3,
        ),
        PlannedOp(name="head/s", operator="cast", preferred=None),
    ]
    summary = summarise_plan(ops)
    assert summary.ops == 3 and summary.unplanned == 1
    assert (summary.op_share.neural_engine, summary.op_share.gpu, summary.op_share.cpu) == pytest.approx(
        (1 / 3, 1 / 3, 1 / 3), abs=1e-6
    )
    assert summary.cost_share is not None
    assert (summary.cost_share.neural_engine, summary.cost_share.gpu, summary.cost_share.cpu) == (
        pytest.approx(0.6),
        pytest.approx(0.3),
        pytest.approx(0.1),
    )
    off = {op.name: (op.device, op.neural_engine_supported) for op in summary.off_neural_engine}
    assert off == {"pre/y": (Device.cpu, False), "head/z": (Device.gpu, True)}


def test_a_plan_without_cost_estimates_has_no_cost_shares() -> None:
    """Core ML gives no cost estimates on Intel Macs."""
    ops = [PlannedOp(name="x", operator="add", preferred=Device.gpu, supported=(Device.gpu, Device.cpu))]
    summary = summarise_plan(ops)
    assert summary.cost_share is None and summary.op_share.gpu == 1.0


def test_latency_figures() -> None:
    figures = LatencyFigures.from_seconds([0.001 * value for value in range(1, 101)], warmup=5)
    assert figures.calls == 100 and figures.warmup == 5
    assert figures.median_ms == pytest.approx(50.5)
    assert figures.p95_ms == pytest.approx(95.05)


def test_interleaved_calls_alternate_which_goes_first() -> None:
    log: list[str] = []
    first, second = interleaved_calls(lambda: log.append("A"), lambda: log.append("B"), warmup=2, calls=4)
    assert "".join(log) == "ABAB" + "AB" + "BA" + "AB" + "BA"
    assert len(first) == len(second) == 4 and all(seconds >= 0 for seconds in first + second)


def test_peak_rss_is_this_process_in_bytes() -> None:
    held = bytearray(64 * 1024 * 1024)
    assert len(held) <= peak_rss_bytes() < 1024**4


def test_a_report_prints_a_dash_for_what_was_not_measured() -> None:
    report = DeviceReport(machine=_mac(), compute_units=ComputeUnits.all)
    values = dict(report.rows())
    assert set(values.values()) - {MISSING} == {"Apple M2 Pro, macOS 14.4.1", "all"}
    assert report.one_line() == (
        f"Apple M2 Pro, macOS 14.4.1, all: compile {MISSING}, load {MISSING}, first prediction {MISSING}, "
        f"per call {MISSING}, peak {MISSING}, Neural Engine share {MISSING}"
    )
    assert report.markdown().count(MISSING) == 8


def test_a_full_report() -> None:
    plan = summarise_plan(
        [
            PlannedOp(name="a", operator="conv", preferred=Device.neural_engine, cost=0.9),
            PlannedOp(name="b", operator="gather", preferred=Device.cpu, cost=0.1),
        ]
    )
    report = DeviceReport(
        machine=_mac(),
        compute_units=ComputeUnits.cpu_and_ne,
        compile_seconds=12.34,
        load_seconds=2.5,
        first_predict_seconds=0.41,
        latency=LatencyFigures(warmup=10, calls=50, median_ms=7.91, p95_ms=8.4),
        peak_rss_bytes=412_000_000,
        compute_plan=plan,
    )
    assert report.one_line() == (
        "Apple M2 Pro, macOS 14.4.1, cpu_and_ne: compile 12.3 s, load 2.50 s, first prediction 0.41 s, "
        "7.91 ms median, 8.40 ms p95 (50 calls), peak 412.0 MB, Neural Engine 50.0% of ops (90.0% of cost), "
        "1 off it"
    )
    rows = dict(report.rows())
    assert rows["ops off the Neural Engine"] == "1 (gather x1; 1 unsupported there)"
    assert MISSING not in report.markdown()
    assert DeviceReport.parse(report.to_json(), "report") == report


def test_without_a_neural_engine_the_report_says_so() -> None:
    intel = _mac(machine="x86_64", chip="Intel(R) Core(TM) i7", neural_engine=False)
    report = DeviceReport(
        machine=intel,
        compute_units=ComputeUnits.all,
        compute_plan=summarise_plan([PlannedOp(name="a", operator="conv", preferred=Device.gpu)]),
    )
    assert report.notes() == ["this Mac has no Neural Engine: it was not exercised"]
    assert dict(report.rows())["ops off the Neural Engine"] == MISSING
    assert report.one_line().endswith("; this Mac has no Neural Engine: it was not exercised")
    cpu_only = DeviceReport(machine=_mac(), compute_units=ComputeUnits.cpu_only)
    assert cpu_only.notes() == ["compute units cpu_only exclude the Neural Engine"]
