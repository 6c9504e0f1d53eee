"""Diarizations of one recording as DER sees them: each one's speakers mapped onto a reference's
by pyannote.metrics' optimal mapping (the one `DiarizationErrorRate` uses), and its missed
speech, false alarm and speaker confusion against that reference, where DER scores them
(within the recording's regions, outside the collars, overlap as configured)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import ascii_uppercase
from typing import Any

from sortformer_build.errors import BuildError
from sortformer_build.evaluate.annotations import Regions, SpeakerTurn, annotation, read_rttm, timeline
from sortformer_build.records.evaluation import DatasetEvaluation, RecordingDer, RttmSet, Scoring

Span = tuple[float, float]

# What each delivered RTTM set is called on a timeline.
TRACK_NAMES = {
    RttmSet.truth: "ground truth",
    RttmSet.nemo: "NeMo",
    RttmSet.artifact: "package",
    RttmSet.fp16: "fp16 twin",
}


class ReportInputError(BuildError):
    """A delivered result the report needs that is missing or unreadable: said in its place."""


@dataclass(frozen=True)
class Errors:
    """Spans of each kind of DER error, in seconds of the recording."""

    missed: tuple[Span, ...]
    false_alarm: tuple[Span, ...]
    confusion: tuple[Span, ...]

    @staticmethod
    def _seconds(spans: tuple[Span, ...]) -> float:
        return sum(end - start for start, end in spans)

    @property
    def seconds(self) -> tuple[float, float, float]:
        """Missed, false alarm, confusion."""
        return self._seconds(self.missed), self._seconds(self.false_alarm), self._seconds(self.confusion)


@dataclass(frozen=True)
class Track:
    """One diarization on the timeline: its turns by the reference speaker each maps to (a
    speaker the mapping leaves out keeps its own label, marked unmatched)."""

    set: RttmSet
    lanes: dict[str, tuple[Span, ...]]
    unmatched: frozenset[str]
    errors: Errors | None  # None: the reference itself, or a track not scored against it

    @property
    def name(self) -> str:
        return TRACK_NAMES[self.set]


@dataclass(frozen=True)
class RecordingTimeline:
    recording: str
    reference: RttmSet
    speakers: tuple[str, ...]  # the reference's, in lane order
    tracks: tuple[Track, ...]  # ground truth, NeMo, package, fp16 twin: those delivered
    unscored: tuple[Span, ...]  # inside the extent: outside the regions, collars, skipped overlap
    extent: Span
    scored_seconds: float  # reference speech DER divides by (overlap counted per speaker)

    def track(self, rttm_set: RttmSet) -> Track | None:
        return next((track for track in self.tracks if track.set is rttm_set), None)


def build_timeline(
    recording: str,
    turns: dict[RttmSet, list[SpeakerTurn]],
    reference: RttmSet,
    regions: Regions,
    scoring: Scoring,
) -> RecordingTimeline:
    """Map every diarization in `turns` onto the `reference` one and find its errors; the ground
    truth, when it is not the reference, is mapped but not scored."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=scoring.collar, skip_overlap=not scoring.scored_overlap)
    ref = annotation(turns[reference], recording)
    uem = timeline(regions, recording)
    tracks = []
    scored_uem, scored_seconds = None, 0.0
    for rttm_set, hypothesis_turns in sorted(turns.items(), key=lambda item: list(RttmSet).index(item[0])):
        if rttm_set is reference:
            tracks.append(Track(reference, _lanes(ref, {}), frozenset(), None))
            continue
        hypothesis = annotation(hypothesis_turns, recording)
        mapping, errors, scored_uem, scored_seconds = _against(metric, ref, hypothesis, uem)
        unmatched = frozenset(label for label in hypothesis.labels() if label not in mapping)
        scored = errors if rttm_set is not RttmSet.truth else None
        tracks.append(Track(rttm_set, _lanes(hypothesis, mapping), unmatched, scored))
    every = [turn for spans in turns.values() for turn in spans]
    extent = (
        min([start for start, _ in regions] + [turn.start for turn in every]),
        max([end for _, end in regions] + [turn.end for turn in every]),
    )
    if scored_uem is None:  # nothing to score against: what DER would score is the regions
        scored_uem = uem
    return RecordingTimeline(
        recording=recording,
        reference=reference,
        speakers=tuple(sorted(ref.labels())),
        tracks=tuple(tracks),
        unscored=_gaps(scored_uem, extent),
        extent=extent,
        scored_seconds=scored_seconds,
    )


def _against(
    metric: Any, reference: Any, hypothesis: Any, uem: Any
) -> tuple[dict[str, str], Errors, Any, float]:
    """As `DiarizationErrorRate.compute_components` does it: crop to the scored regions, label
    both sides apart, map, then match frame by frame. Returns the mapping (hypothesis label ->
    reference label), the errors, the scored regions and the reference speech scored."""
    from pyannote.metrics.errors.identification import IdentificationErrorAnalysis

    cropped_ref, cropped_hyp, scored = metric.uemify(
        reference,
        hypothesis,
        uem=uem,
        collar=metric.collar,
        skip_overlap=metric.skip_overlap,
        returns_uem=True,
    )
    ref_names = dict(zip(sorted(cropped_ref.labels()), _letters(), strict=False))
    hyp_names = {label: index for index, label in enumerate(sorted(cropped_hyp.labels()), start=1)}
    renamed_ref = cropped_ref.rename_labels(mapping=ref_names)
    renamed_hyp = cropped_hyp.rename_labels(mapping=hyp_names)
    optimal = metric.optimal_mapping(renamed_ref, renamed_hyp)
    mapped = renamed_hyp.rename_labels(mapping=optimal)
    difference = IdentificationErrorAnalysis().difference(renamed_ref, mapped, uem=scored)
    spans: dict[str, list[Span]] = {"missed detection": [], "false alarm": [], "confusion": []}
    for segment, _, (status, _, _) in difference.itertracks(yield_label=True):
        if status in spans:
            spans[status].append((segment.start, segment.end))
    back_ref = {letter: label for label, letter in ref_names.items()}
    back_hyp = {index: label for label, index in hyp_names.items()}
    mapping = {back_hyp[hyp]: back_ref[ref] for hyp, ref in optimal.items()}
    errors = Errors(
        missed=tuple(spans["missed detection"]),
        false_alarm=tuple(spans["false alarm"]),
        confusion=tuple(spans["confusion"]),
    )
    # As DER's total: every reference speaker counts, overlapped speech as many times as speakers.
    speech = sum(segment.duration for segment, _ in cropped_ref.itertracks())
    return mapping, errors, scored, float(speech)


def _letters() -> Sequence[str]:
    """As many distinct labels as a recording can have speakers: A..Z, then AA.."""
    return [*ascii_uppercase, *(a + b for a in ascii_uppercase for b in ascii_uppercase)]


def _lanes(turns: Any, mapping: dict[str, str]) -> dict[str, tuple[Span, ...]]:
    lanes: dict[str, list[Span]] = {}
    for segment, _, label in turns.itertracks(yield_label=True):
        lanes.setdefault(mapping.get(label, label), []).append((segment.start, segment.end))
    return {speaker: tuple(sorted(spans)) for speaker, spans in sorted(lanes.items())}


def _gaps(scored: Any, extent: Span) -> tuple[Span, ...]:
    from pyannote.core import Segment

    return tuple((gap.start, gap.end) for gap in scored.support().gaps(Segment(*extent)) if gap.duration > 0)


def reference_set(evaluation: DatasetEvaluation, random_weights: bool) -> RttmSet:
    """What the timeline's errors are marked against: the ground truth, unless there is none or
    the weights are random (where only the comparison with NeMo means anything)."""
    if evaluation.der_vs_truth is None or random_weights:
        return RttmSet.nemo
    return RttmSet.truth


def recording_timeline(
    folder: Path, evaluation: DatasetEvaluation, recording: RecordingDer, random_weights: bool
) -> RecordingTimeline:
    """The timeline of one recording from the RTTMs delivered in `folder` (the evaluation's
    `<dataset>/`), scored as the evaluation was."""
    from sortformer_build.evaluate.annotations import DatasetError

    reference = reference_set(evaluation, random_weights)
    files = {rttm_set: folder / rttm_set / f"{recording.recording}.rttm" for rttm_set in RttmSet}
    for needed in (reference, RttmSet.artifact):
        if not files[needed].is_file():
            raise ReportInputError(f"{files[needed]} is missing: rebuild the artifact to deliver it")
    try:
        turns = {rttm_set: read_rttm(path) for rttm_set, path in files.items() if path.is_file()}
    except DatasetError as error:
        raise ReportInputError(str(error)) from None
    if recording.regions is not None:
        regions: Regions = tuple(recording.regions)
    else:  # not recorded: the extent of every diarization, as scoring without regions does
        every = [turn for spans in turns.values() for turn in spans] or [SpeakerTurn(0.0, 0.0, "")]
        regions = ((min(turn.start for turn in every), max(turn.end for turn in every)),)
    return build_timeline(recording.recording, turns, reference, regions, evaluation.scoring)


def recording_der(recording: RecordingDer, reference: RttmSet) -> float | None:
    """The recording's DER against the timeline's reference, as the manifest records it."""
    rates = recording.vs_truth if reference is RttmSet.truth else recording.vs_nemo
    return None if rates is None else rates.der
