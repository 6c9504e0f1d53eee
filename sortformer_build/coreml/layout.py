"""Where the converted programs of a streaming model are saved, inside one folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProgramFiles:
    """The pre-encoder and head ML programs, saved side by side."""

    pre_encoder: Path
    head: Path

    @classmethod
    def in_folder(cls, folder: Path) -> ProgramFiles:
        return cls(folder / "pre_encoder.mlpackage", folder / "head.mlpackage")
