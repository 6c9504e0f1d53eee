"""Numerical agreement of a package with NeMo: per model call (a streaming step, or an offline
window) and over a whole stream.

Figures only: `gates` judges them.
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

    def rounded(self) -> Agreement:
        """Figures to 7 decimals, as the manifest records them."""
        values = {
            key: round(value, 7) if isinstance(value, float) else value for key, value in asdict(self).items()
        }
        return Agreement(**values)


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


@dataclass
class StepFigures:
    """One package against a reference, step by step over the per-step cases."""

    cases: list[Agreement]
    overall: Agreement
    # The chunk embeddings and their lengths; None for a model that returns neither (offline).
    max_abs_emb_error: float | None
    emb_error_ratio: float | None  # max error relative to the reference embeddings' largest magnitude
    mean_abs_emb_error: float | None
    lengths_equal: bool | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepFigures:
        return cls(
            cases=[Agreement(**case) for case in data["cases"]],
            overall=Agreement(**data["overall"]),
            max_abs_emb_error=data["max_abs_emb_error"],
            emb_error_ratio=data["emb_error_ratio"],
            mean_abs_emb_error=data["mean_abs_emb_error"],
            lengths_equal=data["lengths_equal"],
        )


@dataclass
class StreamFigures:
    """A whole stream through NeMo's state update: probabilities and the final buffers."""

    chunks: int
    frames: int
    agreement: Agreement
    spkcache_frames: tuple[int, int]  # (ours, reference)
    spkcache_max_abs_error: float | None  # None when the caches differ in length
    fifo_frames: tuple[int, int]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamFigures:
        return cls(
            chunks=data["chunks"],
            frames=data["frames"],
            agreement=Agreement(**data["agreement"]),
            spkcache_frames=tuple(data["spkcache_frames"]),
            spkcache_max_abs_error=data["spkcache_max_abs_error"],
            fifo_frames=tuple(data["fifo_frames"]),
        )


def compare_steps(
    ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]], cases: list[dict[str, np.ndarray]]
) -> StepFigures:
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
    return StepFigures(
        cases=[p.rounded() for p in probabilities],
        overall=merge(probabilities).rounded(),
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
        agreement=agreement(ours.preds, theirs.preds).rounded(),
        spkcache_frames=(int(ours.spkcache.shape[0]), int(theirs.spkcache.shape[0])),
        spkcache_max_abs_error=(
            float(np.abs(ours.spkcache - theirs.spkcache).max(initial=0.0)) if same_cache else None
        ),
        fifo_frames=(int(ours.fifo.shape[0]), int(theirs.fifo.shape[0])),
    )


@dataclass
class ParityFigures:
    """Everything the parity stage measured for one package."""

    precision: str  # the executor mode, or "core_ml" for predictions by Core ML itself
    per_step_vs_nemo: StepFigures
    streaming_vs_nemo: StreamFigures | None = None
    per_step_vs_fp16: StepFigures | None = None

    def summary(self) -> str:
        """One line for the log, the manifest's step detail and the release matrix."""
        steps = self.per_step_vs_nemo.overall
        text = (
            f"per step: max |dp| {steps.max_abs_prob_error:.1e}, decisions {steps.decision_agreement:.2%}, "
            f"argmax {steps.argmax_agreement:.2%}"
        )
        if self.streaming_vs_nemo is not None:
            stream = self.streaming_vs_nemo
            text += (
                f"; streaming {stream.chunks} chunks: max |dp| {stream.agreement.max_abs_prob_error:.1e}, "
                f"decisions {stream.agreement.decision_agreement:.2%}"
            )
        if self.per_step_vs_fp16 is not None:
            twin = self.per_step_vs_fp16.overall
            text += (
                f"; vs fp16 twin: decisions {twin.decision_agreement:.2%}, argmax {twin.argmax_agreement:.2%}"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityFigures:
        stream, twin = data.get("streaming_vs_nemo"), data.get("per_step_vs_fp16")
        return cls(
            precision=data["precision"],
            per_step_vs_nemo=StepFigures.from_dict(data["per_step_vs_nemo"]),
            streaming_vs_nemo=StreamFigures.from_dict(stream) if stream else None,
            per_step_vs_fp16=StepFigures.from_dict(twin) if twin else None,
        )
