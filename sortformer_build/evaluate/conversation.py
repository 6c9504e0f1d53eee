"""The `conversation` dataset: a short meeting of synthesized voices with exact ground truth.

espeak-ng (Debian package `espeak-ng`) speaks each turn; the turns are mixed on one timeline
with pauses and some overlap, and the reference RTTM marks where each voice makes sound (its
silences at the edges trimmed, inner pauses longer than `PAUSE_SECONDS` cut out). The result is
committed beside this module, so evaluating needs no espeak-ng; this script remakes it:

    python -m sortformer_build.evaluate.conversation [output folder]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sortformer_build.errors import BuildError
from sortformer_build.evaluate.annotations import SpeakerTurn
from sortformer_build.evaluate.audio import resample
from sortformer_build.store import atomic
from sortformer_build.verify.reference import SAMPLE_RATE

NAME = "conversation"
DATA_DIR = Path(__file__).parent / "data"
# 10 ms analysis frames; a frame is voiced when its RMS exceeds this fraction of the turn's peak RMS.
FRAME_SAMPLES = SAMPLE_RATE // 100
VOICED_FRACTION = 0.02
PAUSE_SECONDS = 0.3


@dataclass(frozen=True)
class Voice:
    label: str
    voice: str  # espeak-ng voice and variant
    pitch: int  # espeak-ng -p, 0..99
    speed: int  # words per minute


@dataclass(frozen=True)
class Turn:
    speaker: int  # index into VOICES
    text: str
    # Seconds from the end of the previous turn to the start of this one; negative overlaps it.
    gap: float


VOICES = (
    Voice("anna", "en-us+f3", 70, 160),
    Voice("bert", "en-gb+m3", 35, 150),
    Voice("carl", "en-gb-scotland+m1", 50, 170),
    Voice("dora", "en-us+f4", 85, 175),
)

TURNS = (
    Turn(0, "Good morning everyone, shall we start with the schedule for the new release?", 0.6),
    Turn(1, "Yes. The build is ready, but the tests on the phone are still running.", 0.8),
    Turn(2, "How long will they take?", -0.4),
    Turn(1, "About an hour, maybe a little more.", 0.5),
    Turn(3, "Then we could look at the budget first, if nobody minds.", 1.2),
    Turn(0, "Fine by me.", -0.3),
    Turn(2, "I sent the numbers yesterday evening. Travel is higher than we planned.", 0.7),
    Turn(3, "That was the conference in October, it should not happen again.", 0.4),
    Turn(1, "Wait, was the hotel included in that figure?", -0.6),
    Turn(2, "It was, together with the flights.", 0.5),
    Turn(0, "Good. Let us write that down and move on to hiring.", 1.5),
    Turn(3, "We have two candidates for the audio team, both very strong.", 0.6),
    Turn(1, "Can we meet them next week?", -0.5),
    Turn(0, "I will ask them on Monday. Thank you all, see you tomorrow.", 0.9),
)


def make_conversation(folder: Path) -> tuple[Path, Path]:
    """Write `<folder>/conversation.flac` (16 kHz mono) and `conversation.rttm`; return both."""
    if shutil.which("espeak-ng") is None:
        raise BuildError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic.scratch_folder(folder) as scratch:
        spoken = [
            _speak(VOICES[turn.speaker], turn.text, scratch / f"turn{i}.wav") for i, turn in enumerate(TURNS)
        ]
    audio, segments = _mix(spoken)
    audio_path, rttm_path = folder / f"{NAME}.flac", folder / f"{NAME}.rttm"
    _write_flac(audio_path, audio)
    atomic.write_text(rttm_path, "".join(_rttm_line(segment) for segment in segments))
    return audio_path, rttm_path


def _speak(voice: Voice, text: str, wav: Path) -> np.ndarray:
    """One turn, trimmed to its first and last voiced frame, at 16 kHz."""
    import soundfile

    command = [
        "espeak-ng",
        "-v",
        voice.voice,
        "-p",
        str(voice.pitch),
        "-s",
        str(voice.speed),
        "-w",
        str(wav),
        text,
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BuildError(f"espeak-ng failed for voice {voice.voice}: {completed.stderr.strip()}")
    samples, rate = soundfile.read(wav, dtype="float32")
    samples = resample(samples, rate)
    voiced = np.flatnonzero(_voiced_frames(samples))
    return samples[voiced[0] * FRAME_SAMPLES : (voiced[-1] + 1) * FRAME_SAMPLES]


def _voiced_frames(samples: np.ndarray) -> np.ndarray:
    frames = samples[: samples.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return rms > VOICED_FRACTION * rms.max()


def _mix(spoken: list[np.ndarray]) -> tuple[np.ndarray, list[SpeakerTurn]]:
    starts, cursor = [], 0.0
    for turn, samples in zip(TURNS, spoken, strict=True):
        start = max(0.0, cursor + turn.gap)
        starts.append(round(start * SAMPLE_RATE))
        cursor = start + samples.size / SAMPLE_RATE
    audio = np.zeros(round((cursor + 1.0) * SAMPLE_RATE), dtype=np.float32)
    segments = []
    for turn, samples, start in zip(TURNS, spoken, starts, strict=True):
        audio[start : start + samples.size] += samples
        label = VOICES[turn.speaker].label
        offset = start / SAMPLE_RATE
        segments += [SpeakerTurn(offset + a, offset + b, label) for a, b in _speech_spans(samples)]
    audio *= 0.9 / np.max(np.abs(audio))
    return audio, sorted(segments, key=lambda segment: segment.start)


def _speech_spans(samples: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) seconds of speech in a trimmed turn, pauses of `PAUSE_SECONDS` or more cut out."""
    voiced = _voiced_frames(samples)
    frame = FRAME_SAMPLES / SAMPLE_RATE
    spans: list[tuple[float, float]] = []
    for index in np.flatnonzero(voiced):
        start, end = index * frame, (index + 1) * frame
        if spans and start - spans[-1][1] < PAUSE_SECONDS:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _rttm_line(segment: SpeakerTurn) -> str:
    duration = segment.end - segment.start
    return f"SPEAKER {NAME} 1 {segment.start:.3f} {duration:.3f} <NA> <NA> {segment.speaker} <NA> <NA>\n"


def _write_flac(path: Path, audio: np.ndarray) -> None:
    import soundfile

    with atomic.staged(path) as temporary:
        soundfile.write(temporary, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DATA_DIR)
    arguments = parser.parse_args(argv)
    audio, rttm = make_conversation(arguments.folder)
    print(f"wrote {audio} and {rttm}")


if __name__ == "__main__":
    main()
