"""The gates that decide publication: each compression option's thresholds (`GateConfig`,
from sortformer_build/conf/compression/*.yaml) held against the parity figures. A figure that was not measured
(no stream on device, no twin for an fp16 build) or a threshold that is not set is not gated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sortformer_build.config import GateConfig
from sortformer_build.records.parity import ParityFigures


@dataclass(frozen=True)
class Gate:
    figure: str  # what is measured, in words
    value: Callable[[ParityFigures], float | None]
    threshold: Callable[[GateConfig], float | None]
    at_least: bool  # True: the figure must reach the threshold; False: stay at or below it


def _twin_decisions(figures: ParityFigures) -> float | None:
    twin = figures.per_call_vs_fp16
    return None if twin is None else twin.overall.decision_agreement


def _streaming_decisions(figures: ParityFigures) -> float | None:
    stream = figures.streaming_vs_nemo
    return None if stream is None else stream.agreement.decision_agreement


GATES = (
    Gate(
        "max |p - p_nemo| per call",
        lambda figures: figures.per_call_vs_nemo.overall.max_abs_prob_error,
        lambda gates: gates.max_prob_error,
        at_least=False,
    ),
    Gate(
        "decisions at 0.5 agreeing with NeMo per call",
        lambda figures: figures.per_call_vs_nemo.overall.decision_agreement,
        lambda gates: gates.min_decision_agreement,
        at_least=True,
    ),
    Gate(
        "decisions at 0.5 agreeing with the fp16 twin per call",
        _twin_decisions,
        lambda gates: gates.min_twin_decision_agreement,
        at_least=True,
    ),
    Gate(
        "streaming decisions agreeing with NeMo",
        _streaming_decisions,
        lambda gates: gates.min_streaming_decision_agreement,
        at_least=True,
    ),
)


def gate(figures: ParityFigures, gates: GateConfig, max_emb_error_ratio: float) -> list[str]:
    """One line per failed gate; empty: publishable."""
    failures = _structural(figures, max_emb_error_ratio)
    for rule in GATES:
        value, threshold = rule.value(figures), rule.threshold(gates)
        if value is None or threshold is None:
            continue
        if (value < threshold) if rule.at_least else (value > threshold):
            relation = "<" if rule.at_least else ">"
            failures.append(f"{rule.figure}: {value:.6g} {relation} {threshold:g}{_spread(figures, rule)}")
    return failures


def _structural(figures: ParityFigures, max_emb_error_ratio: float) -> list[str]:
    """What no compression may change: the uncompressed pre-encoder's lengths and embeddings
    (when the model returns them)."""
    steps = figures.per_call_vs_nemo
    failures = []
    if steps.lengths_equal is False:
        failures.append("chunk embedding lengths differ from NeMo's")
    if steps.emb_error_ratio is not None and steps.emb_error_ratio > max_emb_error_ratio:
        failures.append(
            f"chunk embeddings differ from NeMo's by up to {steps.emb_error_ratio:.1%} of their largest "
            f"magnitude > {max_emb_error_ratio:.1%} (a frame masked or shifted?)"
        )
    return failures


def _spread(figures: ParityFigures, rule: Gate) -> str:
    """Errors mean little without the scale of the reference: say it next to them."""
    if rule.at_least:
        return ""
    return f" (reference spread {figures.per_call_vs_nemo.overall.prob_spread:.3f})"
