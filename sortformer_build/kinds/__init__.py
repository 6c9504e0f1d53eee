"""The model-kind seam: the geometry picks a kind (streaming pipeline or offline model), and
every difference between them is asked of it. A new kind is a module here, listed in KINDS."""

from __future__ import annotations

from sortformer_build.geometry import Geometry
from sortformer_build.kinds.base import ModelKind
from sortformer_build.kinds.offline import OFFLINE
from sortformer_build.kinds.streaming import STREAMING

KINDS: tuple[ModelKind, ...] = (STREAMING, OFFLINE)


def kind_of(geometry: Geometry) -> ModelKind:
    """The kind of model `geometry` describes."""
    for kind in KINDS:
        if kind.serves(geometry):
            return kind
    raise TypeError(f"no model kind serves {type(geometry).__name__}")


def kind_for_metadata(metadata: dict[str, str]) -> ModelKind:
    """The kind a saved model's metadata describes; a package that says nothing is held to the
    streaming contract, whose check then names the entries it lacks."""
    return next((kind for kind in KINDS if kind.reads_metadata(metadata)), STREAMING)


def geometry_from_metadata(metadata: dict[str, str]) -> Geometry:
    return kind_for_metadata(metadata).geometry_from_metadata(metadata)
