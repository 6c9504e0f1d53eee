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
from enum import StrEnum

from sortformer_build.coreml.coreml_errors import readable
from sortformer_build.records.base import Record

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


class SkipReason(StrEnum):
    """Why Core ML steps did not run on this host. Each means the host could not run them, never
    that a model failed."""

    not_macos = "not-macos"
    macos_too_old = "macos-too-old"
    no_native_library = "no-native-library"


# The skip reasons under which publishing accepts an on-device check that did not run: all of
# them say "could not run here"; any other skipped Core ML step is a problem.
COULD_NOT_RUN_HERE = frozenset(SkipReason)


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


class CoreMLAvailability(Record):
    """Whether Core ML steps run here, and why not, in one line for a log or a manifest."""

    skip: SkipReason | None
    detail: str
    # False on an Intel Mac: compute units "all" ran on CPU and GPU only.
    neural_engine: bool

    @property
    def note(self) -> str | None:
        """What a passing check did not prove, said beside its figures."""
        if self.skip is None and not self.neural_engine:
            return "the Neural Engine was not exercised (this Mac has none)"
        return None


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


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
