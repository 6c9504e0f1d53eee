"""Diarizing a dataset: every recording's mel features through a backend, NeMo's
post-processing, one RTTM per recording."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sortformer_build.evaluate.annotations import Regions, write_rttm
from sortformer_build.evaluate.audio import load_audio
from sortformer_build.evaluate.backends import Backend
from sortformer_build.evaluate.datasets import Dataset, Recording
from sortformer_build.evaluate.parallel import BackendRecipe, RecordingPool, recording_workers
from sortformer_build.evaluate.segments import PostProcessing, speaker_labels
from sortformer_build.progress import counted
from sortformer_build.records.evaluation import RecordingRun
from sortformer_build.records.facts import DiarizationFacts
from sortformer_build.verify.reference import SAMPLE_RATE

# 16 kHz mono audio -> the checkpoint's mel features (1, 128, mel frames).
Features = Callable[[np.ndarray], np.ndarray]

log = logging.getLogger("sortformer_build")


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
    """Diarize every recording of `dataset` with `backend`, writing its RTTMs into `folder`.

    A package backend diarizes several recordings side by side in worker processes when the job
    has cores and memory for them (`parallel.recording_workers`); the results come in the
    dataset's order either way."""
    folder.mkdir(parents=True, exist_ok=True)
    total = len(dataset.recordings)
    workers = 1 if backend.recipe is None else recording_workers(total)
    if backend.recipe is not None and workers > 1:
        log.info("  %d recordings side by side in %d worker processes", total, workers)
        runs = _side_by_side(backend.recipe, workers, dataset, features, postprocessing, folder)
    else:
        runs = (
            _diarize(backend, recording, features, postprocessing, folder) for recording in dataset.recordings
        )
    results = tuple(counted(runs, total, f"{backend.name} on {dataset.name}", "recordings"))
    return Diarization(backend.name, folder, results)


def _diarize(
    backend: Backend, recording: Recording, features: Features, postprocessing: PostProcessing, folder: Path
) -> RecordingRun:
    started = time.perf_counter()
    audio = load_audio(recording.audio, recording.offset, recording.duration)
    preds = backend.predict(features(audio))
    return _written(recording, audio.size, preds, postprocessing, folder, time.perf_counter() - started)


def _side_by_side(
    recipe: BackendRecipe,
    workers: int,
    dataset: Dataset,
    features: Features,
    postprocessing: PostProcessing,
    folder: Path,
) -> Iterator[RecordingRun]:
    """The recordings' probabilities computed by `workers` processes while this one reads audio,
    computes features and writes RTTMs, in the dataset's order. A few recordings wait in line
    per worker, so that no worker idles and the features of a long dataset are not all held."""
    waiting: deque[tuple[Recording, int, float, Future[tuple[np.ndarray, float]]]] = deque()

    def collect() -> RecordingRun:
        recording, samples, seconds, future = waiting.popleft()
        preds, predict_seconds = future.result()
        return _written(recording, samples, preds, postprocessing, folder, seconds + predict_seconds)

    with RecordingPool(recipe, workers) as pool:
        for recording in dataset.recordings:
            started = time.perf_counter()
            audio = load_audio(recording.audio, recording.offset, recording.duration)
            mel = features(audio)
            waiting.append((recording, audio.size, time.perf_counter() - started, pool.submit(mel)))
            if len(waiting) > 2 * workers:
                yield collect()
        while waiting:
            yield collect()


def _written(
    recording: Recording,
    samples: int,
    preds: np.ndarray,
    postprocessing: PostProcessing,
    folder: Path,
    seconds: float,
) -> RecordingRun:
    """The recording's RTTM written; `seconds`: its processing so far (audio to probabilities)."""
    started = time.perf_counter()
    labels = speaker_labels(preds, postprocessing, recording.offset)
    write_rttm(folder / f"{recording.name}.rttm", labels, recording.name)
    audio_seconds = samples / SAMPLE_RATE
    return RecordingRun(
        name=recording.name,
        audio_seconds=audio_seconds,
        seconds=seconds + time.perf_counter() - started,
        regions=list(recording.regions(audio_seconds)),
    )
