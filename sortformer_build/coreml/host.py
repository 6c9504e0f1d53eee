"""What this machine can do with Core ML: the facts about the host (read once, injectable in
tests), the precise reason Core ML steps are skipped, and whether the Neural Engine takes part.

Nothing here imports coremltools except the probe of its native library, and only on macOS:
a dry run or a Linux build learns that Core ML cannot run without loading it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import platform
import subprocess
import sys

from sortformer_build.coreml.coreml_errors import readable
from sortformer_build.coreml.targets import TARGET_FACTS, DeploymentTarget
from sortformer_build.records.base import Record
from sortformer_build.records.device import HostFacts
from sortformer_build.records.steps import Skip, SkipReason

# The macOS release that first compiles each Core ML specification version: coremltools'
# `AvailableTarget` aliases `macOS<N>` to the same specification versions (a test holds the two
# together). A package of a newer version than the host's macOS does not compile there.
MACOS_FOR_SPECIFICATION: dict[int, tuple[int, ...]] = {
    4: (10, 15),
    5: (11,),
    6: (12,),
    7: (13,),
    8: (14,),
    9: (15,),
    10: (26,),
}
# MLComputePlan, which says where each op runs, exists from this release on.
COMPUTE_PLAN_MACOS = (14, 4)


class CoreMLAvailability(Record):
    """Whether Core ML steps run here, and why not, in one line for a log or a manifest."""

    skip: SkipReason | None
    detail: str
    # False on an Intel Mac: compute units "all" ran on CPU and GPU only.
    neural_engine: bool

    def skipped(self) -> Skip | None:
        return None if self.skip is None else Skip(reason=self.skip, detail=self.detail)

    @property
    def note(self) -> str | None:
        """What a passing check did not prove, said beside its figures."""
        if self.skip is None and not self.neural_engine:
            return "the Neural Engine was not exercised (this Mac has none)"
        return None


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def required_macos(specification_version: int) -> tuple[int, ...]:
    """The oldest macOS that compiles a package of this specification version."""
    if specification_version in MACOS_FOR_SPECIFICATION:
        return MACOS_FOR_SPECIFICATION[specification_version]
    if specification_version < min(MACOS_FOR_SPECIFICATION):
        return MACOS_FOR_SPECIFICATION[min(MACOS_FOR_SPECIFICATION)]
    newest = max(MACOS_FOR_SPECIFICATION)
    raise ValueError(
        f"Core ML specification version {specification_version} is newer than any this project "
        f"knows (up to {newest}, macOS {version_text(MACOS_FOR_SPECIFICATION[newest])})"
    )


def skip_reason(facts: HostFacts, required: tuple[int, ...]) -> SkipReason | None:
    """The first thing that keeps Core ML from compiling a package that needs macOS `required`."""
    if facts.system != "Darwin":
        return SkipReason.not_macos
    if facts.macos < required:
        return SkipReason.macos_too_old
    if not facts.native_library:
        return SkipReason.no_native_library
    return None


def availability(facts: HostFacts, required: tuple[int, ...]) -> CoreMLAvailability:
    reason = skip_reason(facts, required)
    return CoreMLAvailability(
        skip=reason,
        detail=_describe(reason, facts, required),
        neural_engine=facts.neural_engine and reason is None,
    )


def for_target(target: DeploymentTarget) -> CoreMLAvailability:
    """Whether this host compiles and runs models built for `target`."""
    return availability(current_facts(), required_macos(TARGET_FACTS[target].max_specification_version))


def _describe(reason: SkipReason | None, facts: HostFacts, required: tuple[int, ...]) -> str:
    if reason is SkipReason.not_macos:
        return f"needs macOS (Core ML cannot compile, load or run models on {facts.system})"
    if reason is SkipReason.macos_too_old:
        return (
            f"needs macOS {version_text(required)} or later to compile this model "
            f"(this Mac runs macOS {facts.macos_version})"
        )
    if reason is SkipReason.no_native_library:
        why = f": {facts.native_library_error}" if facts.native_library_error else ""
        return (
            f"coremltools {facts.coremltools_version} has no Core ML library for Python "
            f"{facts.python_version} (libcoremlpython does not import{why}); "
            "use a Python its macOS wheels are built for"
        )
    engine = "with the Neural Engine" if facts.neural_engine else "without a Neural Engine (CPU and GPU only)"
    return f"Core ML on {facts.describe()}, {engine}"


@functools.cache
def current_facts() -> HostFacts:
    """This host, read once per process."""
    python = platform.python_version()
    system = platform.system()
    coremltools_version = _installed_version("coremltools")
    if sys.platform != "darwin":
        return HostFacts(
            system=system,
            macos_version=None,
            machine=platform.machine(),
            chip=None,
            neural_engine=False,
            python_version=python,
            coremltools_version=coremltools_version,
            native_library=False,
            native_library_error="coremltools builds its Core ML library for macOS only",
        )
    translated = _sysctl("sysctl.proc_translated") == "1"
    machine = platform.machine()
    error = _native_library_error()
    return HostFacts(
        system=system,
        macos_version=platform.mac_ver()[0] or None,
        machine=machine,
        chip=_sysctl("machdep.cpu.brand_string"),
        neural_engine=machine == "arm64" or translated,
        python_version=python,
        coremltools_version=coremltools_version,
        native_library=error is None,
        native_library_error=error,
    )


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _sysctl(name: str) -> str | None:
    """One value from macOS's sysctl; None when the key does not exist on this machine."""
    completed = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, check=False)
    value = completed.stdout.strip()
    return value if completed.returncode == 0 and value else None


def _native_library_error() -> str | None:
    """None when coremltools' native library imports; else why not, in one line. coremltools'
    compile_model raises "Unable to compile any Core ML models" when this import fails."""
    try:
        importlib.import_module("coremltools.libcoremlpython")
    except Exception as error:  # an ImportError, or whatever a broken binary raises
        return readable(error)
    return None
