"""The store: content-addressed build cache, atomic publishing, digests and provenance."""
