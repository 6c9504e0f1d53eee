"""RTTM and UEM files: read with line-precise errors, written the way NeMo writes them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build import faults
from sortformer_build.errors import BuildError
from sortformer_build.store import atomic

# Columns of an RTTM SPEAKER line: type, file, channel, onset, duration, ortho, stype, name, ...
_RTTM_MIN_FIELDS = 8


class DatasetError(BuildError):
    """Evaluation input that cannot be used: a missing or unreadable file, a bad line."""


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


# Scored regions of a recording, (start, end) in seconds.
Regions = tuple[tuple[float, float], ...]


def read_rttm(path: Path) -> list[SpeakerTurn]:
    """The SPEAKER lines of an RTTM file (other line types, such as SPKR-INFO, are skipped)."""
    turns = []
    for number, fields in _lines(path):
        if fields[0] != "SPEAKER":
            continue
        if len(fields) < _RTTM_MIN_FIELDS:
            raise DatasetError(
                f"{path}:{number}: an RTTM SPEAKER line needs at least {_RTTM_MIN_FIELDS} fields "
                f"(SPEAKER file channel onset duration <NA> <NA> speaker), found {len(fields)}"
            )
        start, duration = (
            _number(path, number, fields[3], "onset"),
            _number(path, number, fields[4], "duration"),
        )
        if start < 0 or duration < 0:
            raise DatasetError(f"{path}:{number}: negative onset or duration ({fields[3]}, {fields[4]})")
        turns.append(SpeakerTurn(start, start + duration, fields[7]))
    return turns


def rttm_file_ids(path: Path) -> set[str]:
    """The recording ids (second column) of an RTTM's SPEAKER lines."""
    return {fields[1] for _, fields in _lines(path) if fields[0] == "SPEAKER" and len(fields) > 1}


def read_uem(path: Path) -> Regions:
    """Scored regions from a UEM file (`file channel start end` per line)."""
    regions = []
    for number, fields in _lines(path):
        if len(fields) < 4:
            raise DatasetError(f"{path}:{number}: a UEM line needs 4 fields (file channel start end)")
        start, end = _number(path, number, fields[2], "start"), _number(path, number, fields[3], "end")
        if end <= start:
            raise DatasetError(f"{path}:{number}: UEM region ends ({end}) before it starts ({start})")
        regions.append((start, end))
    if not regions:
        raise DatasetError(f"{path}: the UEM file lists no region")
    return tuple(regions)


def write_rttm(path: Path, labels: Sequence[str], name: str) -> None:
    """Write NeMo's label lines (`start end speaker`) with NeMo's own RTTM writer, atomically."""
    from nemo.collections.asr.parts.utils.speaker_utils import labels_to_rttmfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.scratch_folder(path.parent) as scratch:
        written = Path(labels_to_rttmfile(list(labels), name, str(scratch)))
        faults.point("rttm.write", path.parent)
        atomic.replace(written, path)


def annotation(turns: Sequence[SpeakerTurn], uri: str) -> Any:
    """The turns as a pyannote `Annotation`."""
    from pyannote.core import Annotation, Segment

    result = Annotation(uri=uri)
    for index, turn in enumerate(turns):
        if turn.end > turn.start:
            result[Segment(turn.start, turn.end), index] = turn.speaker
    return result


def timeline(regions: Regions, uri: str) -> Any:
    from pyannote.core import Segment, Timeline

    return Timeline([Segment(start, end) for start, end in regions], uri=uri)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from None
    # Numbered as editors number them: only a newline ends a line (`splitlines` also breaks at
    # form feeds and other separators, and would name the wrong line).
    return [
        (number, line.split())
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip() and not line.lstrip().startswith(";")
    ]


def _number(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{line}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{line}: {what} {text!r} is not a finite number")
    return value
