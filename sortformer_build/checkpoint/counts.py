"""Parameter counts of a Sortformer model, split where the release splits its compression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    pre_encoder: int  # kept at full precision
    head: int  # FastConformer, Transformer and speaker layers: what palettization compresses


def parameter_counts(model: Any) -> ParameterCounts:
    total = sum(parameter.numel() for parameter in model.parameters())
    pre_encoder = sum(parameter.numel() for parameter in model.encoder.pre_encode.parameters())
    return ParameterCounts(total=total, pre_encoder=pre_encoder, head=total - pre_encoder)
