"""Deployment targets a build may choose, and what each means inside a saved package."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeploymentTarget(StrEnum):
    # Newer targets lower palettized weights to forms that fail on the Neural Engine; older
    # ones lack the ops the converter emits for this model.
    iOS16 = "iOS16"
    iOS17 = "iOS17"


# Entries of a `constexpr_lut_to_dense` table are 2^nbits for these bit widths.
LUT_NBITS = (1, 2, 3, 4, 6, 8)
# The width of a weight left fp16 in a per-tensor choice.
KEEP_FP16 = 16

# The Swift runtime serves iOS 17 / macOS 14 and later.
DEFAULT_TARGET = DeploymentTarget.iOS17


@dataclass(frozen=True)
class TargetFacts:
    """What a package for a target may hold: its highest specification version, opset and the
    bit widths its look-up tables may have."""

    max_specification_version: int
    opset: str
    os_versions: str
    # Below iOS18, `constexpr_lut_to_dense` is the iOS16 op: tables of 2, 4, 16, 64 or 256
    # entries (coremltools 9.0, `mil/ops/defs/iOS16/constexpr_ops.py`); 3 bits need iOS18.
    palette_nbits: tuple[int, ...] = (1, 2, 4, 6, 8)


TARGET_FACTS = {
    DeploymentTarget.iOS16: TargetFacts(7, "CoreML6", "iOS 16 / macOS 13"),
    DeploymentTarget.iOS17: TargetFacts(8, "CoreML7", "iOS 17 / macOS 14"),
}
