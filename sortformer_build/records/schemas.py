"""JSON Schemas of the records other programs read, generated from the types and checked in
under `schemas/` (a test holds them equal): `python -m sortformer_build.records.schemas` rewrites
them after a record changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sortformer_build.records.base import Record
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.records.release import ReleaseIndex
from sortformer_build.records.status import JobStatus
from sortformer_build.records.trace import TraceComparison, TraceIndex

SCHEMAS: dict[str, type[Record]] = {
    "manifest": Manifest,
    "job-status": JobStatus,
    "matrix": ReleaseMatrix,
    "release": ReleaseIndex,
    "trace-index": TraceIndex,
    "trace-comparison": TraceComparison,
}
FOLDER = Path(__file__).resolve().parents[2] / "schemas"


def schema_text(record: type[Record]) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **record.model_json_schema()}
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


def schema_path(name: str, folder: Path = FOLDER) -> Path:
    return folder / f"{name}.schema.json"


def main(argv: list[str] | None = None) -> int:
    folder = Path(argv[0]) if argv else FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, record in SCHEMAS.items():
        schema_path(name, folder).write_text(schema_text(record))
        print(f"wrote {schema_path(name, folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
