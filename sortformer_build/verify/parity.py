"""Numerical agreement of a package with NeMo: per model call (a streaming step, or an offline
window) and over a whole stream.

Figures only: `gates` judges them.
"""

from __future__ import annotations

import numpy as np

from sortformer_build import contract
from sortformer_build.records.parity import Agreement, CallFigures, StreamFigures
from sortformer_build.verify.reference import StepFunction, StreamResult

DECISION_THRESHOLD = 0.5


def rounded(figures: Agreement) -> Agreement:
    """Figures to 7 decimals, as the manifest records them."""
    return figures.model_copy(
        update={
            key: round(value, 7) for key, value in figures.model_dump().items() if isinstance(value, float)
        }
    )


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


def compare_calls(
    ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]], cases: list[dict[str, np.ndarray]]
) -> CallFigures:
    """Per-call figures: probabilities over the valid packed frames, chunk embeddings over
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
    return CallFigures(
        cases=[rounded(p) for p in probabilities],
        overall=rounded(merge(probabilities)),
        max_abs_emb_error=float(errors.max(initial=0.0)),
        emb_error_ratio=float(errors.max(initial=0.0) / max(max(magnitudes), 1e-12)),
        mean_abs_emb_error=float(errors.mean()) if errors.size else 0.0,
        lengths_equal=bool(lengths_equal),
    )


def compare_streams(ours: StreamResult, theirs: StreamResult) -> StreamFigures:
    """The whole stream's probabilities, and the final speaker cache: on random weights, near
    ties in the cache scores can pick different frames, which then shows up here first."""
    same_cache = ours.spkcache.shape == theirs.spkcache.shape
    return StreamFigures(
        chunks=theirs.chunks,
        frames=int(theirs.preds.shape[0]),
        agreement=rounded(agreement(ours.preds, theirs.preds)),
        spkcache_frames=(int(ours.spkcache.shape[0]), int(theirs.spkcache.shape[0])),
        spkcache_max_abs_error=(
            float(np.abs(ours.spkcache - theirs.spkcache).max(initial=0.0)) if same_cache else None
        ),
        fifo_frames=(int(ours.fifo.shape[0]), int(theirs.fifo.shape[0])),
    )
