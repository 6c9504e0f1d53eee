"""The speaker probabilities a parity check compared, kept small beside the package: NeMo's and
the package's over the verification stream (or the offline windows), for the release report.

Stored as float16 in an npz: NeMo's probabilities, and the package's difference from them. The
differences (1e-3 for an fp16 package) keep float16's relative precision instead of drowning in
the rounding of values near 1, so |p - p_nemo| reads back as it was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sortformer_build.errors import BuildError
from sortformer_build.records.parity import ProbabilityTrace, TraceSource, TraceStretch

_NEMO, _DIFFERENCE = "nemo", "package_minus_nemo"


class ProbabilitiesError(BuildError):
    """A kept probability file that is missing or does not match its manifest."""


@dataclass(frozen=True)
class Probabilities:
    """(frames, speakers) arrays over the stretches in order."""

    package: np.ndarray
    nemo: np.ndarray
    source: TraceSource
    stretches: tuple[TraceStretch, ...]

    def __post_init__(self) -> None:
        frames = sum(stretch.frames for stretch in self.stretches)
        if self.package.shape != self.nemo.shape or self.nemo.shape[0] != frames:
            raise ValueError(
                f"probabilities of shapes {self.package.shape} and {self.nemo.shape} for {frames} frames"
            )

    @property
    def error(self) -> np.ndarray:
        """|p - p_nemo| per frame and speaker."""
        return np.abs(self.package.astype(np.float64) - self.nemo.astype(np.float64))

    def save(self, path: Path) -> ProbabilityTrace:
        """Write the npz (a staged path: the deliver stage renames it into place)."""
        nemo = self.nemo.astype(np.float16)
        difference = (self.package.astype(np.float64) - self.nemo.astype(np.float64)).astype(np.float16)
        with path.open("wb") as handle:
            np.savez_compressed(handle, allow_pickle=False, **{_NEMO: nemo, _DIFFERENCE: difference})
        return ProbabilityTrace(
            file=path.name, source=self.source, stretches=list(self.stretches), speakers=nemo.shape[1]
        )


def stream_probabilities(package: np.ndarray, nemo: np.ndarray, chunks: int) -> Probabilities:
    return Probabilities(
        package,
        nemo,
        TraceSource.stream,
        (TraceStretch(name=f"synthetic conversation, {chunks} chunks", frames=nemo.shape[0]),),
    )


def load_probabilities(folder: Path, trace: ProbabilityTrace) -> Probabilities:
    """The probabilities a manifest in `folder` records; ProbabilitiesError in one line."""
    path = folder / trace.file
    try:
        with np.load(path) as archive:
            nemo, difference = archive[_NEMO], archive[_DIFFERENCE]
    except FileNotFoundError:
        raise ProbabilitiesError(f"{path} does not exist (the manifest records it)") from None
    except (OSError, ValueError, KeyError) as error:
        raise ProbabilitiesError(f"{path} is not a probability file: {error}") from None
    expected = (trace.frames, trace.speakers)
    if nemo.shape != expected or difference.shape != expected:
        raise ProbabilitiesError(
            f"{path} holds {nemo.shape} probabilities, its manifest says {expected} (frames, speakers)"
        )
    nemo32 = nemo.astype(np.float32)
    return Probabilities(nemo32 + difference.astype(np.float32), nemo32, trace.source, tuple(trace.stretches))
