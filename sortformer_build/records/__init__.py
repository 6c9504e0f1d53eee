"""Typed records: everything written to disk or passed between processes, one frozen type per
fact, serialised by pydantic (see `base.Record`)."""
