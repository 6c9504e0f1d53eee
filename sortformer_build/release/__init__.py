"""A release: the matrix that summarises a sweep, and the report beside it."""
