"""A release: the matrix that summarises a sweep."""
