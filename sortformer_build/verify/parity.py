"""Numerical agreement of a package with NeMo: per streaming step and over a whole stream.

The package runs in the NumPy executor (float16 mode rounds every fp16-typed value as the GPU
and Neural Engine would); NeMo runs its own modules. Figures are judged against gates from the
config; a failed gate stops the build.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.verify.reference import StepFunction, StreamResult

DECISION_THRESHOLD = 0.5


@dataclass
class Agreement:
    """How closely `ours` follows `theirs` over valid frames."""

    max_abs_prob_error: float
    mean_abs_prob_error: float
    decision_agreement: float  # share of (frame, speaker) pairs on the same side of 0.5
    argmax_agreement: float  # share of frames whose most active speaker is the same
    prob_spread: float  # std of the reference probabilities: the scale errors are judged on
    frames: int

    def as_dict(self) -> dict[str, float]:
        return {
            key: round(value, 7) if isinstance(value, float) else value for key, value in asdict(self).items()
        }


def agreement(ours: np.ndarray, theirs: np.ndarray) -> Agreement:
    """Compare (frames, speakers) probability arrays."""
    error = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return Agreement(
        max_abs_prob_error=float(error.max(initial=0.0)),
        mean_abs_prob_error=float(error.mean()) if error.size else 0.0,
        decision_agreement=float(np.mean((ours > DECISION_THRESHOLD) == (theirs > DECISION_THRESHOLD))),
        argmax_agreement=float(np.mean(ours.argmax(axis=-1) == theirs.argmax(axis=-1))),
        prob_spread=float(theirs.std()),
        frames=int(ours.shape[0]),
    )


def merge(agreements: list[Agreement]) -> Agreement:
    """Worst case over several comparisons, means weighted by frames."""
    frames = sum(a.frames for a in agreements)

    def weighted(field: str) -> float:
        return sum(getattr(a, field) * a.frames for a in agreements) / frames

    return Agreement(
        max_abs_prob_error=max(a.max_abs_prob_error for a in agreements),
        mean_abs_prob_error=weighted("mean_abs_prob_error"),
        decision_agreement=weighted("decision_agreement"),
        argmax_agreement=weighted("argmax_agreement"),
        prob_spread=weighted("prob_spread"),
        frames=frames,
    )


def run_cases(step: StepFunction, cases: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [step(case) for case in cases]


def compare_steps(
    ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]], cases: list[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Per-step figures: probabilities over the valid packed frames, chunk embeddings over
    the valid chunk frames, and exact equality of lengths."""
    probabilities, embedding_errors, magnitudes, lengths_equal = [], [], [0.0], True
    for mine, reference, case in zip(ours, theirs, cases, strict=True):
        chunk_frames = int(reference[contract.CHUNK_EMB_LENGTHS][0])
        lengths_equal &= int(mine[contract.CHUNK_EMB_LENGTHS][0]) == chunk_frames
        valid = int(case[contract.SPKCACHE_LENGTHS][0]) + int(case[contract.FIFO_LENGTHS][0]) + chunk_frames
        probabilities.append(
            agreement(mine[contract.SPEAKER_PREDS][0, :valid], reference[contract.SPEAKER_PREDS][0, :valid])
        )
        reference_embs = reference[contract.CHUNK_EMBS][0, :chunk_frames].astype(np.float64)
        embedding_errors.append(np.abs(mine[contract.CHUNK_EMBS][0, :chunk_frames] - reference_embs))
        magnitudes.append(float(np.abs(reference_embs).max(initial=0.0)))
    errors = np.concatenate([e.ravel() for e in embedding_errors])
    return {
        "cases": [p.as_dict() for p in probabilities],
        "overall": merge(probabilities).as_dict(),
        "max_abs_emb_error": float(errors.max(initial=0.0)),
        "emb_error_ratio": float(errors.max(initial=0.0) / max(max(magnitudes), 1e-12)),
        "mean_abs_emb_error": float(errors.mean()) if errors.size else 0.0,
        "lengths_equal": bool(lengths_equal),
    }


def compare_streams(ours: StreamResult, theirs: StreamResult) -> dict[str, Any]:
    """The whole stream's probabilities, and the final speaker cache: on random weights, near
    ties in the cache scores can pick different frames, which then shows up here first."""
    figures: dict[str, Any] = {"chunks": theirs.chunks, "frames": int(theirs.preds.shape[0])}
    figures.update(agreement(ours.preds, theirs.preds).as_dict())
    same_cache = ours.spkcache.shape == theirs.spkcache.shape
    figures["spkcache_frames"] = [int(ours.spkcache.shape[0]), int(theirs.spkcache.shape[0])]
    figures["spkcache_max_abs_error"] = (
        float(np.abs(ours.spkcache - theirs.spkcache).max(initial=0.0)) if same_cache else None
    )
    figures["fifo_frames"] = [int(ours.fifo.shape[0]), int(theirs.fifo.shape[0])]
    return figures
