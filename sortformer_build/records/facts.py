"""What cached stages remember beside their files, in the build cache's `entry.json`."""

from __future__ import annotations

from sortformer_build.records.base import Record
from sortformer_build.records.evaluation import RecordingRun
from sortformer_build.records.manifest import ParameterCounts
from sortformer_build.records.mixed import AnalysisCost


class NoFacts(Record):
    """A stage whose files say everything."""


class ProgramsFacts(Record):
    d_model: int
    parameters: ParameterCounts


class PalettizeFacts(Record):
    engine: str
    # Look-up tables served by the LUT store and computed now (fast engine only).
    lut_cache_hits: int | None = None
    lut_cache_misses: int | None = None


class MixedAnalysisFacts(Record):
    cost: AnalysisCost | None  # None: a given recipe's groups, nothing measured


class ReferenceFacts(Record):
    chunks: int | None  # the reference stream's; None: the model does not stream


class DiarizationFacts(Record):
    backend: str
    recordings: list[RecordingRun]


class FileDigest(Record):
    bytes: int
    sha256: str


class TraceFacts(Record):
    """NeMo's reference trace in its entry: what delivering it and the manifest need."""

    index: str  # file names in the entry
    arrays: str
    arrays_sha256: str
    bytes: int  # of the arrays
    entries: int  # chunks (windows) recorded
    recording: str


class CacheEntryRecord(Record):
    """`entry.json`: the key an entry was built for, its stage's facts (checked against the
    stage's own facts type when the entry is used) and every other file of the entry with its size
    and sha256, by path inside the entry (checked before the entry is used: see `store.integrity`)."""

    key: dict[str, object]
    facts: dict[str, object]
    files: dict[str, FileDigest]


class StoredArrayRecord(Record):
    """One array of an `ArrayStore` (a look-up table): its bytes, their digest, dtype and shape."""

    dtype: str
    shape: list[int]
    data: str  # base64
    sha256: str
