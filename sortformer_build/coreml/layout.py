"""Where the converted programs of a model are saved, inside one folder, and how the offline
model's subsampling weights are named in its single program."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The offline model's one program.
OFFLINE_PROGRAM = "model.mlpackage"
# coremltools names a traced weight by its module path: the offline model's subsampling weights
# (`export.WholeWindow.pre_encoder.subsampling`) are the consts whose names start with this.
SUBSAMPLING_WEIGHTS = "pre_encoder_subsampling_"


PRE_ENCODER_PROGRAM = "pre_encoder.mlpackage"
HEAD_PROGRAM = "head.mlpackage"


@dataclass(frozen=True)
class ProgramFiles:
    """The pre-encoder and head ML programs of a streaming model, saved side by side."""

    pre_encoder: Path
    head: Path

    @classmethod
    def in_folder(cls, folder: Path) -> ProgramFiles:
        return cls(folder / PRE_ENCODER_PROGRAM, folder / HEAD_PROGRAM)
