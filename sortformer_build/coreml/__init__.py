"""Everything coremltools touches: tracing wrappers, conversion, palettization, the package reader,
macOS-only steps."""
