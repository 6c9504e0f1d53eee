"""Declarative, verified Core ML builds of NVIDIA Streaming Sortformer."""

from importlib import metadata

# The one version string is pyproject.toml's, read from the installed distribution.
__version__ = metadata.version("sortformer-build")
