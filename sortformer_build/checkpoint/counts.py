"""Parameter counts of a Sortformer model, split where the release splits its compression."""

from __future__ import annotations

from typing import Any

from sortformer_build.records.manifest import ParameterCounts


def parameter_counts(model: Any) -> ParameterCounts:
    total = sum(parameter.numel() for parameter in model.parameters())
    pre_encoder = sum(parameter.numel() for parameter in model.encoder.pre_encode.parameters())
    return ParameterCounts(total=total, pre_encoder=pre_encoder, head=total - pre_encoder)
