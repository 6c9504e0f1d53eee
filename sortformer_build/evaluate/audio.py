"""Audio as the model hears it: 16 kHz mono float32, whatever the file holds."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

from sortformer_build.evaluate.annotations import DatasetError
from sortformer_build.verify.reference import SAMPLE_RATE


def load_audio(path: Path, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """`duration` seconds (None: to the end) from `offset`, downmixed to mono (channel mean)
    and resampled to 16 kHz. A silent recording is returned as is (it is diarized like any
    other); one with no samples in the requested span is an error."""
    import soundfile

    if not path.is_file():
        raise DatasetError(f"audio file {path} does not exist")
    try:
        with soundfile.SoundFile(str(path)) as stream:
            rate = stream.samplerate
            start = round(offset * rate)
            stream.seek(min(start, stream.frames))
            frames = -1 if duration is None else round(duration * rate)
            samples = stream.read(frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise DatasetError(f"cannot read audio file {path}: {error}") from None
    if samples.shape[0] == 0:
        span = f" from {offset:g} s" + ("" if duration is None else f" for {duration:g} s")
        raise DatasetError(f"audio file {path} has no samples{span}")
    return resample(samples.mean(axis=1), rate)


def audio_seconds(path: Path, offset: float = 0.0, duration: float | None = None) -> float:
    """Seconds of audio `load_audio` would return, found by opening the file and decoding its
    first block (a file with an audio suffix that is not audio fails here, before any model runs)."""
    import soundfile

    if not path.is_file():
        raise DatasetError(f"audio file {path} does not exist")
    try:
        with soundfile.SoundFile(str(path)) as stream:
            rate, frames = stream.samplerate, stream.frames
            stream.read(min(frames, rate), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise DatasetError(f"cannot read audio file {path}: {error}") from None
    available = max(0.0, frames / rate - offset)
    seconds = available if duration is None else min(duration, available)
    if seconds <= 0:
        span = f" from {offset:g} s" + ("" if duration is None else f" for {duration:g} s")
        raise DatasetError(f"audio file {path} has no samples{span}")
    return seconds


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (anti-aliased)."""
    if rate == SAMPLE_RATE:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    common = gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // common, rate // common).astype(np.float32)
