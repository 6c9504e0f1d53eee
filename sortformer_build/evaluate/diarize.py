"""Diarizing a dataset: every recording's mel features through a backend, NeMo's
post-processing, one RTTM per recording."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sortformer_build.evaluate.annotations import Regions, write_rttm
from sortformer_build.evaluate.audio import load_audio
from sortformer_build.evaluate.backends import Backend
from sortformer_build.evaluate.datasets import Dataset, Recording
from sortformer_build.evaluate.segments import PostProcessing, speaker_labels
from sortformer_build.progress import counted
from sortformer_build.records.evaluation import RecordingRun
from sortformer_build.records.facts import DiarizationFacts
from sortformer_build.verify.reference import SAMPLE_RATE

# 16 kHz mono audio -> the checkpoint's mel features (1, 128, mel frames).
Features = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Diarization:
    """One backend's RTTMs for a dataset: `<folder>/<recording name>.rttm`."""

    backend: str
    folder: Path
    recordings: tuple[RecordingRun, ...]

    @property
    def rttms(self) -> dict[str, Path]:
        return {result.name: self.folder / f"{result.name}.rttm" for result in self.recordings}

    @property
    def regions(self) -> dict[str, Regions]:
        return {result.name: tuple(result.regions) for result in self.recordings}

    @property
    def audio_seconds(self) -> float:
        return sum(result.audio_seconds for result in self.recordings)

    @property
    def seconds(self) -> float:
        return sum(result.seconds for result in self.recordings)

    @property
    def real_time_factor(self) -> float:
        """Processing seconds per second of audio (below 1: faster than real time)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    def facts(self) -> DiarizationFacts:
        """What the build cache keeps beside the RTTMs."""
        return DiarizationFacts(backend=self.backend, recordings=list(self.recordings))

    @classmethod
    def from_facts(cls, folder: Path, facts: DiarizationFacts) -> Diarization:
        return cls(facts.backend, folder, tuple(facts.recordings))


def diarize(
    backend: Backend, dataset: Dataset, features: Features, postprocessing: PostProcessing, folder: Path
) -> Diarization:
    """Diarize every recording of `dataset` with `backend`, writing its RTTMs into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    recordings = counted(
        dataset.recordings, len(dataset.recordings), f"{backend.name} on {dataset.name}", "recordings"
    )
    results = tuple(
        _diarize(backend, recording, features, postprocessing, folder) for recording in recordings
    )
    return Diarization(backend.name, folder, results)


def _diarize(
    backend: Backend, recording: Recording, features: Features, postprocessing: PostProcessing, folder: Path
) -> RecordingRun:
    started = time.perf_counter()
    audio = load_audio(recording.audio, recording.offset, recording.duration)
    preds = backend.predict(features(audio))
    labels = speaker_labels(preds, postprocessing, recording.offset)
    write_rttm(folder / f"{recording.name}.rttm", labels, recording.name)
    seconds = audio.size / SAMPLE_RATE
    return RecordingRun(
        name=recording.name,
        audio_seconds=seconds,
        seconds=time.perf_counter() - started,
        regions=list(recording.regions(seconds)),
    )
