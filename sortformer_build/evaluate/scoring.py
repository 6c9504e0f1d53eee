"""Diarization error rate of hypothesis RTTMs against reference RTTMs, by pyannote.metrics:
per recording and overall, with its parts (missed speech, false alarm, speaker confusion)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.evaluate.annotations import DatasetError, Regions, annotation, read_rttm, timeline


@dataclass(frozen=True)
class ErrorBreakdown:
    """Seconds of reference speech scored and of each error, after the optimal speaker mapping."""

    scored: float
    missed: float
    false_alarm: float
    confusion: float

    @property
    def der(self) -> float:
        return self._rate(self.missed + self.false_alarm + self.confusion)

    @property
    def missed_rate(self) -> float:
        return self._rate(self.missed)

    @property
    def false_alarm_rate(self) -> float:
        return self._rate(self.false_alarm)

    @property
    def confusion_rate(self) -> float:
        return self._rate(self.confusion)

    def _rate(self, seconds: float) -> float:
        # pyannote.metrics' convention without reference speech: 0 if no error, else 1.
        if self.scored == 0:
            return 0.0 if seconds == 0 else 1.0
        return seconds / self.scored

    def __add__(self, other: ErrorBreakdown) -> ErrorBreakdown:
        return ErrorBreakdown(
            self.scored + other.scored,
            self.missed + other.missed,
            self.false_alarm + other.false_alarm,
            self.confusion + other.confusion,
        )


@dataclass(frozen=True)
class RecordingScore:
    name: str
    errors: ErrorBreakdown


@dataclass(frozen=True)
class Comparison:
    against: str  # what the reference was: "ground truth", "nemo", ...
    collar: float
    skip_overlap: bool
    recordings: tuple[RecordingScore, ...]
    overall: ErrorBreakdown


def compare(
    hypothesis_rttms: Mapping[str, Path],
    reference_rttms: Mapping[str, Path],
    collar: float,
    skip_overlap: bool,
    regions: Mapping[str, Regions] | None = None,
    against: str = "reference",
) -> Comparison:
    """Score each recording's hypothesis RTTM against its reference RTTM (both keyed by
    recording name), within its `regions` (UEM) when given, else within the extent of both."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    if set(hypothesis_rttms) != set(reference_rttms):
        unmatched = sorted(set(hypothesis_rttms) ^ set(reference_rttms))
        raise DatasetError(
            f"hypothesis and reference RTTMs name different recordings: {', '.join(unmatched)}"
        )
    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    scores = []
    for name in sorted(hypothesis_rttms):
        hypothesis, reference = read_rttm(hypothesis_rttms[name]), read_rttm(reference_rttms[name])
        span = regions[name] if regions is not None else _extent(hypothesis + reference)
        components = metric(
            annotation(reference, name), annotation(hypothesis, name), uem=timeline(span, name), detailed=True
        )
        errors = ErrorBreakdown(
            scored=components["total"],
            missed=components["missed detection"],
            false_alarm=components["false alarm"],
            confusion=components["confusion"],
        )
        scores.append(RecordingScore(name, errors))
    overall = sum((score.errors for score in scores), ErrorBreakdown(0.0, 0.0, 0.0, 0.0))
    return Comparison(against, collar, skip_overlap, tuple(scores), overall)


def _extent(turns: list) -> Regions:
    if not turns:
        return ((0.0, 0.0),)
    return ((min(turn.start for turn in turns), max(turn.end for turn in turns)),)
