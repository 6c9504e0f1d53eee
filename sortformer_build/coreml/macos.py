"""Steps only Core ML itself can do, which exists on macOS alone: compile, load, predict."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from sortformer_build.records.steps import SkipReason

NEEDS_MACOS = SkipReason.needs_macos.describe()


def available() -> bool:
    return sys.platform == "darwin"


def compile_package(package: Path, destination: Path) -> None:
    """Compile `package` to the `.mlmodelc` folder the Swift runtime ships."""
    import coremltools as ct

    compiled = ct.models.utils.compile_model(str(package))
    shutil.move(str(compiled), destination)


def load_compiled(compiled: Path) -> Any:
    """Load with every compute unit, as the runtime does (this is where ANE compilation runs)."""
    import coremltools as ct

    return ct.models.CompiledMLModel(str(compiled), compute_units=ct.ComputeUnit.ALL)


def load_package(package: Path) -> Any:
    """Load an `.mlpackage` with every compute unit (Core ML compiles it on load)."""
    import coremltools as ct

    return ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.ALL)
