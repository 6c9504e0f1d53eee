"""Recordings to evaluate on: the shipped conversation, a NeMo diarization manifest, or a
folder of audio files with same-named RTTMs. Every file is checked when the dataset is
loaded, so a bad input fails before any model runs."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from sortformer_build.config import DatasetKind, EvaluateConfig
from sortformer_build.evaluate import conversation
from sortformer_build.evaluate.annotations import DatasetError, Regions, read_rttm, read_uem, rttm_file_ids
from sortformer_build.evaluate.audio import audio_seconds
from sortformer_build.store.digests import file_sha256

log = logging.getLogger("sortformer_build")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# Fields every manifest line must have; `offset`, `duration` and `uem_filepath` are optional,
# and a null `rttm_filepath` means the recording has no ground truth.
MANIFEST_REQUIRED = ("audio_filepath", "rttm_filepath")


@dataclass(frozen=True)
class Recording:
    name: str  # unique in its dataset: names the RTTM written for it
    audio: Path
    offset: float = 0.0
    duration: float | None = None  # None: to the end of the file
    rttm: Path | None = None  # ground truth
    uem: Path | None = None  # scored regions; None: the span read (offset, offset + duration)
    origin: str = ""  # where it was declared, for messages ("manifest.json:3")

    def regions(self, audio_seconds: float) -> Regions:
        """Where a hypothesis is scored: the UEM's regions, else the span of audio read."""
        if self.uem is not None:
            return read_uem(self.uem)
        return ((self.offset, self.offset + audio_seconds),)


@dataclass(frozen=True)
class Dataset:
    name: str
    recordings: tuple[Recording, ...]

    @property
    def has_truth(self) -> bool:
        return all(recording.rttm is not None for recording in self.recordings)


@dataclass(frozen=True)
class LoadedDataset:
    """A checked dataset and the digest of its content (see `dataset_digest`)."""

    dataset: Dataset
    sha256: str


def load_checked(config: EvaluateConfig, memo_dir: Path) -> LoadedDataset:
    dataset = load_dataset(config)
    return LoadedDataset(dataset, dataset_digest(dataset, memo_dir))


def load_dataset(config: EvaluateConfig) -> Dataset:
    kind = config.dataset
    if kind is DatasetKind.conversation:
        return conversation_dataset()
    if not config.path:
        raise DatasetError(f"evaluate={kind.value} needs evaluate.path=/path/to/the/{kind.value}")
    path = Path(config.path).expanduser()
    return manifest_dataset(path) if kind is DatasetKind.manifest else folder_dataset(path)


def conversation_dataset() -> Dataset:
    folder = conversation.DATA_DIR
    recording = Recording(
        name=conversation.NAME,
        audio=folder / f"{conversation.NAME}.flac",
        rttm=folder / f"{conversation.NAME}.rttm",
        origin="the shipped conversation",
    )
    return _checked(conversation.NAME, [recording])


def manifest_dataset(path: Path) -> Dataset:
    """NeMo's diarization manifest: one JSON object per line; relative paths are relative to
    the manifest's folder."""
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read manifest {path}: {error}") from None
    recordings = []
    # Numbered as editors number them: only a newline ends a JSON line.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            recordings.append(_manifest_recording(path, number, line))
    if not recordings:
        raise DatasetError(f"manifest {path} lists no recording")
    return _checked(path.stem, recordings)


def _manifest_recording(manifest: Path, number: int, line: str) -> Recording:
    where = f"{manifest}:{number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where}: not a JSON object ({error.msg})") from None
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: not a JSON object")
    missing = [name for name in MANIFEST_REQUIRED if name not in entry]
    if missing:
        raise DatasetError(f"{where}: missing field {', '.join(missing)}")
    audio = _manifest_path(manifest, entry["audio_filepath"], where, "audio_filepath")
    assert audio is not None
    offset = _seconds(entry.get("offset"), where, "offset") or 0.0
    duration = _seconds(entry.get("duration"), where, "duration")
    name = audio.stem if not offset and duration is None else f"{audio.stem}-{offset:g}"
    return Recording(
        name=name,
        audio=audio,
        offset=offset,
        duration=duration,
        rttm=_manifest_path(manifest, entry.get("rttm_filepath"), where, "rttm_filepath"),
        uem=_manifest_path(manifest, entry.get("uem_filepath"), where, "uem_filepath"),
        origin=where,
    )


def _seconds(value: object, where: str, field: str) -> float | None:
    """A span field in seconds: absent (None), or a finite number of at least 0."""
    if value is None:
        return None
    # JSON's true and false are not numbers, though Python takes them as 1 and 0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise DatasetError(f"{where}: {field} must be a number of seconds (at least 0), got {value!r}")
    return float(value)


def _manifest_path(manifest: Path, value: object, where: str, field: str) -> Path | None:
    if value is None:
        if field == "audio_filepath":
            raise DatasetError(f"{where}: audio_filepath is null")
        return None
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where}: {field} must be a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else manifest.parent / path


def folder_dataset(folder: Path) -> Dataset:
    """Every audio file of `folder` (not recursive), each with `<name>.rttm` and optionally `<name>.uem`."""
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist")
    audio_files = sorted(path for path in folder.iterdir() if path.suffix.lower() in AUDIO_SUFFIXES)
    if not audio_files:
        raise DatasetError(f"dataset folder {folder} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
    recordings = []
    for audio in audio_files:
        uem = audio.with_suffix(".uem")
        recordings.append(
            Recording(
                name=audio.stem,
                audio=audio,
                rttm=audio.with_suffix(".rttm"),
                uem=uem if uem.is_file() else None,
                origin=str(audio),
            )
        )
    return _checked(folder.name, recordings)


def _checked(name: str, recordings: list[Recording]) -> Dataset:
    """The dataset, once every file exists and every RTTM and UEM parses."""
    seen: dict[str, str] = {}
    for recording in recordings:
        if recording.name in seen:
            raise DatasetError(
                f"{recording.origin}: recording name {recording.name!r} is already used by "
                f"{seen[recording.name]} (its RTTM would be overwritten)"
            )
        seen[recording.name] = recording.origin
        if not recording.audio.is_file():
            raise DatasetError(f"{recording.origin}: audio file {recording.audio} does not exist")
        audio_seconds(recording.audio, recording.offset, recording.duration)
        if recording.rttm is not None:
            if not recording.rttm.is_file():
                raise DatasetError(f"{recording.origin}: RTTM file {recording.rttm} does not exist")
            read_rttm(recording.rttm)
            _warn_foreign_ids(recording)
        if recording.uem is not None:
            read_uem(recording.uem)
    return Dataset(name=name, recordings=tuple(recordings))


def _warn_foreign_ids(recording: Recording) -> None:
    """An RTTM is scored against the recording it is paired with, whatever id its lines carry:
    an id that is not the audio file's name is likely a pairing mistake."""
    assert recording.rttm is not None
    foreign = sorted(rttm_file_ids(recording.rttm) - {recording.audio.stem, recording.name})
    if foreign:
        log.warning(
            "%s: RTTM %s names recording %s, not %s: it is scored against %s anyway",
            recording.origin,
            recording.rttm.name,
            ", ".join(foreign),
            recording.audio.stem,
            recording.audio.name,
        )


def dataset_digest(dataset: Dataset, cache_dir: Path) -> str:
    """sha256 of what an evaluation reads: every file's content and every recording's span.
    File hashes are remembered under `cache_dir` by size and mtime, so a large corpus is read once."""
    digest = hashlib.sha256()
    for recording in sorted(dataset.recordings, key=lambda recording: recording.name):
        files = {
            role: file_sha256(path, cache_dir) if path is not None else None
            for role, path in (("audio", recording.audio), ("rttm", recording.rttm), ("uem", recording.uem))
        }
        spans = {"name": recording.name, "offset": recording.offset, "duration": recording.duration}
        digest.update(json.dumps({**spans, **files}, sort_keys=True).encode())
    return digest.hexdigest()
