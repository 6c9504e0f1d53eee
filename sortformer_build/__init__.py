"""Declarative, verified Core ML builds of NVIDIA Streaming Sortformer."""

__version__ = "0.1.0"
