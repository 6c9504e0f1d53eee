"""Evaluation: whole recordings diarized through NeMo's streaming loop by NeMo, the executor or
Core ML, segments by NeMo's post-processing, and DER by pyannote.metrics."""
