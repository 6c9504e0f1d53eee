"""The offline model against NeMo: whole windows of NeMo's own mel features (a conversation, a
short zero-padded last window, mostly silence), NeMo's non-streaming forward on them, and the
figures of a package against those answers."""

from __future__ import annotations

import math
from itertools import permutations
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.geometry import NUM_SPEAKERS, SUBSAMPLING_FACTOR, OfflineGeometry
from sortformer_build.progress import counted
from sortformer_build.records.parity import CallFigures, TraceSource, TraceStretch
from sortformer_build.verify import reference
from sortformer_build.verify.parity import agreement, merge, rounded
from sortformer_build.verify.probabilities import Probabilities
from sortformer_build.verify.reference import StepFunction

MEL_FRAMES_PER_SECOND = 100
# Output frames two neighbouring windows of a recording share: their speakers are matched over it.
OFFLINE_OVERLAP_FRAMES = 100
# (name, valid share of the window, share of the audio with speech)
WINDOW_CASES = (
    ("full window of a conversation", 1.0, 1.0),
    ("short last window, zero-padded", 0.7, 1.0),
    ("mostly silence, one short burst of speech", 1.0, 0.15),
)


def window_cases(model: Any, geometry: OfflineGeometry, seed: int) -> list[dict[str, np.ndarray]]:
    """The model's inputs for each case: NeMo's mel features, zero past the valid length."""
    frames = geometry.window_frames
    seconds = frames / MEL_FRAMES_PER_SECOND + 0.1
    cases = []
    for index, (_, valid_share, speech_share) in enumerate(WINDOW_CASES):
        audio = reference.synthetic_conversation(seconds, seed + index)
        audio *= _burst(audio.size, speech_share)
        mel = reference.mel_features(model, audio)[:, :, :frames].astype(np.float32)
        # Off the 8-frame grid and above 2048 (where fp16 stops holding every integer) on purpose:
        # the subsampled length must come out exactly as NeMo computes it.
        valid = frames if valid_share == 1.0 else round(frames * valid_share) + 3
        mel[:, :, valid:] = 0.0
        cases.append({contract.MEL: mel, contract.MEL_LENGTH: np.array([valid], dtype=np.int32)})
    return cases


def _burst(samples: int, share: float) -> np.ndarray:
    """1 over a centred `share` of the audio, a faint floor elsewhere (near silence, not zeros)."""
    if share >= 1.0:
        return np.ones(samples, dtype=np.float32)
    envelope = np.full(samples, 0.01, dtype=np.float32)
    start = int(samples * (1 - share) / 2)
    envelope[start : start + int(samples * share)] = 1.0
    return envelope


def nemo_window(model: Any) -> StepFunction:
    """NeMo's non-streaming path without the preprocessor: `frontend_encoder` on the mel
    features (subsampling, FastConformer, projection), then `forward_infer` (Transformer and
    speaker sigmoids, zeroed past the valid length)."""
    import torch

    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mel = torch.from_numpy(inputs[contract.MEL])
        length = torch.from_numpy(inputs[contract.MEL_LENGTH]).long()
        with torch.no_grad():
            embs, lengths = model.frontend_encoder(processed_signal=mel, processed_signal_length=length)
            preds = model.forward_infer(embs, lengths)
        return {contract.OFFLINE_PREDS: preds.numpy()}

    return step


def compare_windows(ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]]) -> CallFigures:
    """Probabilities over every output frame of each window, the padded ones included (NeMo
    gives zeros there); an offline model returns no embeddings or lengths to compare."""
    windows = [
        agreement(mine[contract.OFFLINE_PREDS][0], reference[contract.OFFLINE_PREDS][0])
        for mine, reference in zip(ours, theirs, strict=True)
    ]
    return CallFigures(cases=[rounded(window) for window in windows], overall=rounded(merge(windows)))


def window_probabilities(
    ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]]
) -> Probabilities:
    """The windows' probabilities one after the other, every output frame as compared."""
    package, nemo = (
        np.concatenate([output[contract.OFFLINE_PREDS][0] for output in side]) for side in (ours, theirs)
    )
    stretches = tuple(
        TraceStretch(name=name, frames=output[contract.OFFLINE_PREDS].shape[1])
        for (name, _, _), output in zip(WINDOW_CASES, theirs, strict=True)
    )
    return Probabilities(package, nemo, TraceSource.windows, stretches)


def tile_windows(mel: np.ndarray, geometry: OfflineGeometry, step: StepFunction) -> np.ndarray:
    """Speaker probabilities (output frames, speakers) of a whole recording from an offline
    model: windows overlapping by OFFLINE_OVERLAP_FRAMES output frames; each window's speaker
    columns are permuted to agree best with the timeline over the overlap (a window numbers
    speakers by arrival, its own), then averaged there."""
    total = math.ceil(mel.shape[2] / SUBSAMPLING_FACTOR)
    timeline = np.zeros((total, NUM_SPEAKERS), dtype=np.float32)
    stride = geometry.output_frames - OFFLINE_OVERLAP_FRAMES
    windows = 1 + math.ceil(max(0, total - geometry.output_frames) / stride)
    filled = 0
    for index in counted(range(windows), windows, "window by window", "windows"):
        start = index * stride
        chunk = mel[:, :, start * SUBSAMPLING_FACTOR :][:, :, : geometry.window_frames]
        padded = np.zeros((1, mel.shape[1], geometry.window_frames), dtype=np.float32)
        padded[:, :, : chunk.shape[2]] = chunk
        inputs = {contract.MEL: padded, contract.MEL_LENGTH: np.array([chunk.shape[2]], dtype=np.int32)}
        preds = np.asarray(step(inputs)[contract.OFFLINE_PREDS], dtype=np.float32)[0, : total - start]
        overlap = filled - start
        if overlap > 0:
            preds = preds[:, _best_permutation(timeline[start:filled], preds[:overlap])]
            timeline[start:filled] = (timeline[start:filled] + preds[:overlap]) / 2
        timeline[filled : start + preds.shape[0]] = preds[overlap:]
        filled = start + preds.shape[0]
    return timeline


def _best_permutation(timeline: np.ndarray, window: np.ndarray) -> list[int]:
    """The column order of `window` that agrees most with `timeline` (sum of products)."""
    return list(
        max(
            permutations(range(NUM_SPEAKERS)),
            key=lambda order: float(np.sum(timeline * window[:, list(order)])),
        )
    )
