"""`gate()` row by row: each threshold of a compression option against the figure it guards."""

from __future__ import annotations

import pytest

from sortformer_build.config import GateConfig
from sortformer_build.records.parity import Agreement, CallFigures, ParityFigures, StreamFigures
from sortformer_build.verify.gates import gate

FP16 = GateConfig(max_prob_error=0.01, min_decision_agreement=0.999, min_streaming_decision_agreement=0.99)
PALETTIZED = GateConfig(
    min_decision_agreement=0.97, min_twin_decision_agreement=0.97, min_streaming_decision_agreement=0.9
)
EMB_RATIO = 0.02


def agreement(max_error: float = 0.001, decisions: float = 1.0) -> Agreement:
    return Agreement(
        max_abs_prob_error=max_error,
        mean_abs_prob_error=max_error / 4,
        decision_agreement=decisions,
        argmax_agreement=decisions,
        prob_spread=0.2,
        frames=100,
    )


def steps(max_error: float = 0.001, decisions: float = 1.0, **changes: object) -> CallFigures:
    figures = CallFigures(
        cases=[agreement(max_error, decisions)],
        overall=agreement(max_error, decisions),
        max_abs_emb_error=0.001,
        emb_error_ratio=0.001,
        mean_abs_emb_error=0.0005,
        lengths_equal=True,
    )
    return figures.model_copy(update=changes)


def figures(
    step: CallFigures | None = None, stream_decisions: float | None = 1.0, twin: CallFigures | None = None
) -> ParityFigures:
    stream = (
        None
        if stream_decisions is None
        else StreamFigures(
            chunks=5,
            frames=100,
            agreement=agreement(0.001, stream_decisions),
            spkcache_frames=(4, 4),
            spkcache_max_abs_error=0.0,
            fifo_frames=(2, 2),
        )
    )
    return ParityFigures(
        precision="float16", per_call_vs_nemo=step or steps(), streaming_vs_nemo=stream, per_call_vs_fp16=twin
    )


@pytest.mark.parametrize(
    ("measured", "gates", "failure"),
    [
        (figures(), FP16, None),
        (
            figures(steps(max_error=0.02)),
            FP16,
            "max |p - p_nemo| per call: 0.02 > 0.01 (reference spread 0.200)",
        ),
        (figures(steps(decisions=0.99)), FP16, "decisions at 0.5 agreeing with NeMo per call: 0.99 < 0.999"),
        (figures(stream_decisions=0.95), FP16, "streaming decisions agreeing with NeMo: 0.95 < 0.99"),
        (figures(steps(max_error=0.3), twin=steps()), PALETTIZED, None),
        (figures(twin=steps(decisions=0.9)), PALETTIZED, "agreeing with the fp16 twin per call: 0.9 < 0.97"),
        (
            figures(stream_decisions=0.85, twin=steps()),
            PALETTIZED,
            "streaming decisions agreeing with NeMo: 0.85 < 0.9",
        ),
        (figures(steps(lengths_equal=False)), FP16, "chunk embedding lengths differ from NeMo's"),
        (
            figures(steps(emb_error_ratio=0.05)),
            PALETTIZED,
            "chunk embeddings differ from NeMo's by up to 5.0%",
        ),
        # A figure that was not measured (no stream on device) is not gated.
        (figures(stream_decisions=None), FP16, None),
    ],
)
def test_gate(measured: ParityFigures, gates: GateConfig, failure: str | None) -> None:
    failures = gate(measured, gates, EMB_RATIO)
    if failure is None:
        assert failures == []
    else:
        assert len(failures) == 1 and failure in failures[0], failures


def test_figures_survive_the_manifest() -> None:
    measured = figures(twin=steps(decisions=0.98))
    assert ParityFigures.model_validate_json(measured.model_dump_json()) == measured
