"""The base of every record: frozen, strict about unknown fields, read and written as JSON by
pydantic, and refused in one line when a file does not hold what its type says.

pydantic v2 rather than cattrs: it validates while it reads (a field of the wrong type is an
error naming the field, not a value that breaks later), and it generates the JSON Schema of a
record from the same types, so the checked-in schemas cannot drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

from sortformer_build.errors import BuildError


class RecordError(BuildError):
    """A record file that is missing, not JSON, or not what its type says."""


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1) + "\n"

    def write(self, path: Path, scratch: Path | None = None) -> None:
        """Replace `path` in one rename: a reader sees the old record or the new one (the old one
        retired through `scratch`, see `store.atomic.staged`)."""
        from sortformer_build.store import atomic

        atomic.write_text(path, self.to_json(), scratch)

    @classmethod
    def parse(cls, text: str, source: str) -> Self:
        """The record in `text`; RecordError naming `source` and the first problem."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise RecordError(f"{source}: {describe_validation(error)}") from None

    @classmethod
    def read(cls, path: Path) -> Self:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise RecordError(f"{path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise RecordError(f"{path} cannot be read: {error}") from None
        return cls.parse(text, str(path))


def describe_validation(error: ValidationError) -> str:
    """The first problem pydantic found, in one line: where, and what."""
    first = error.errors(include_url=False)[0]
    # Keys come from the document and may hold any character: shown as JSON writes them.
    where = (
        ".".join(json.dumps(str(part), ensure_ascii=False)[1:-1] for part in first["loc"]) or "the document"
    )
    count = error.error_count()
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{where}: {first['msg']}{more}"
