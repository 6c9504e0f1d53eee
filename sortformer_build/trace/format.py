"""The trace file pair: `<name>.safetensors` (every array, little-endian, raw) and `<name>.json`
(the index: what the trace is of, which tensors each chunk holds, their dtypes).

safetensors because its layout is an 8-byte header length, a JSON header and raw arrays: a Swift
test reads it with Foundation alone, and no reader can execute anything from it. Arrays with the
same content are stored once; the index maps every other name holding them to the stored one
(`aliases`), so a state that does not change between chunks costs nothing and every chunk still
has every tensor under its own name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.errors import BuildError
from sortformer_build.records.base import RecordError
from sortformer_build.records.trace import (
    ARRAYS_SUFFIX,
    INDEX_SUFFIX,
    TRACE_FORMAT,
    TRACE_FORMAT_VERSION,
    ArraysFile,
    ChunkEntry,
    TensorSpec,
    TraceHeader,
    TraceIndex,
    WindowEntry,
    chunk_name,
    trace_file_names,
    window_name,
)

# Whole-recording tensors.
AUDIO = "audio"  # F32 [samples]: what the preprocessor heard
MEL = "mel"  # F32 [1, n_mels, frames]: NeMo's features of the whole recording
PREDS = "preds"  # F32 [output frames, speakers]: the final probabilities (offline: stitched)

# Per chunk, beside the contract's inputs and outputs (`contract.INPUT_NAMES`, its three outputs):
# what NeMo's state update returns and the state it leaves.
CHUNK_PREDS = "chunk_preds"  # F32 [1, frames, speakers]: the chunk's own probabilities
STATE_SPKCACHE = "state/spkcache"
STATE_SPKCACHE_LENGTHS = "state/spkcache_lengths"
STATE_SPKCACHE_PREDS = "state/spkcache_preds"
STATE_FIFO = "state/fifo"
STATE_FIFO_LENGTHS = "state/fifo_lengths"
STATE_FIFO_PREDS = "state/fifo_preds"
STATE_MEAN_SIL_EMB = "state/mean_sil_emb"  # the silence profile: mean embedding of silent frames
STATE_N_SIL_FRAMES = "state/n_sil_frames"  # and how many frames it averages
STATE_COMPRESSED = "state/spkcache_compressed"  # BOOL [1]: this update compressed the speaker cache

# numpy dtype -> safetensors dtype name, for the dtypes a trace holds.
DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int32): "I32",
    np.dtype(np.bool_): "BOOL",
}


def window_key(name: str) -> str:
    """A window tensor's name without its index (chunk tensors go by their bare name)."""
    return f"window/{name}"


class TraceError(BuildError):
    """A trace that cannot be read, or two traces that cannot be compared."""


@dataclass
class TraceWriter:
    """Collects a trace's arrays (each content stored once) and entries, then writes the pair."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    chunks: list[ChunkEntry] = field(default_factory=list)
    windows: list[WindowEntry] = field(default_factory=list)
    recording_names: list[str] = field(default_factory=list)
    _by_content: dict[tuple[str, tuple[int, ...], bytes], str] = field(default_factory=dict)

    def add(self, name: str, array: np.ndarray) -> None:
        array = np.array(array, order="C")  # a copy: the caller's loop goes on changing its buffers
        if array.dtype not in DTYPES:
            raise TypeError(f"{name}: a trace holds {', '.join(map(str, DTYPES))}, not {array.dtype}")
        key = (DTYPES[array.dtype], array.shape, hashlib.sha256(array.tobytes()).digest())
        stored = self._by_content.setdefault(key, name)
        if stored == name:
            self.arrays[name] = array
        else:
            self.aliases[name] = stored

    def add_recording(self, name: str, array: np.ndarray) -> None:
        self.add(name, array)
        self.recording_names.append(name)

    def add_chunk(self, entry: ChunkEntry, tensors: dict[str, np.ndarray]) -> None:
        for name, array in tensors.items():
            self.add(chunk_name(entry.index, name), array)
        self.chunks.append(entry.model_copy(update={"tensors": tuple(tensors)}))

    def add_window(self, entry: WindowEntry, tensors: dict[str, np.ndarray]) -> None:
        for name, array in tensors.items():
            self.add(window_name(entry.index, name), array)
        self.windows.append(entry.model_copy(update={"tensors": tuple(tensors)}))

    def write(self, folder: Path, header: TraceHeader) -> TraceIndex:
        """Write `<folder>/<header.name>.safetensors`, then its index `<header.name>.json`; each
        replaces any earlier file in one rename, and the index names the arrays' sha256, so a
        reader never pairs an index with other arrays."""
        from safetensors.numpy import save

        from sortformer_build.store import atomic

        arrays_path, index_path = trace_files(folder, header.name)
        content = save(self.arrays, metadata={"format": TRACE_FORMAT, "index": index_path.name})
        with atomic.staged(arrays_path) as temporary:
            temporary.write_bytes(content)
        index = TraceIndex(
            **dict(header),
            arrays=ArraysFile(
                file=arrays_path.name, bytes=len(content), sha256=hashlib.sha256(content).hexdigest()
            ),
            tensors={name: self._spec([name]) for name in self.recording_names},
            chunk_tensors=self._specs(chunk_name, [(entry.index, entry.tensors) for entry in self.chunks]),
            window_tensors=self._specs(window_name, [(entry.index, entry.tensors) for entry in self.windows]),
            aliases=self.aliases,
            chunks=tuple(self.chunks),
            windows=tuple(self.windows),
        )
        index.write(index_path)
        return index

    def _array(self, name: str) -> np.ndarray:
        return self.arrays[self.aliases.get(name, name)]

    def _spec(self, names: list[str]) -> TensorSpec:
        arrays = [self._array(name) for name in names]
        dtypes = {DTYPES[array.dtype] for array in arrays}
        ranks = {array.ndim for array in arrays}
        if len(dtypes) != 1 or len(ranks) != 1:
            raise TypeError(f"{names[0]} changes dtype or rank between chunks")
        shape = tuple(
            sizes.pop() if len(sizes := {array.shape[axis] for array in arrays}) == 1 else None
            for axis in range(ranks.pop())
        )
        return TensorSpec(dtype=dtypes.pop(), shape=shape)

    def _specs(self, full_name: Any, groups: list[tuple[int, tuple[str, ...]]]) -> dict[str, TensorSpec]:
        by_name: dict[str, list[str]] = {}
        for index, names in groups:
            for name in names:
                by_name.setdefault(name, []).append(full_name(index, name))
        return {name: self._spec(full_names) for name, full_names in by_name.items()}


class Trace:
    """A trace read back: its index, and its tensors by name (aliases resolved), read lazily."""

    def __init__(self, arrays_path: Path, index: TraceIndex, handle: Any) -> None:
        self.path = arrays_path
        self.index = index
        self._handle = handle
        self._stored = set(handle.keys())

    def stored_name(self, name: str) -> str:
        """The name under which `name`'s content is stored (itself, or what it aliases)."""
        return self.index.aliases.get(name, name)

    def has(self, name: str) -> bool:
        return self.stored_name(name) in self._stored

    def tensor(self, name: str) -> np.ndarray:
        return self._handle.get_tensor(self.stored_name(name))

    def chunk(self, index: int, name: str) -> np.ndarray:
        return self.tensor(chunk_name(index, name))

    def window(self, index: int, name: str) -> np.ndarray:
        return self.tensor(window_name(index, name))


def trace_files(folder: Path, name: str) -> tuple[Path, Path]:
    """(arrays, index) of the trace `name` in `folder`."""
    arrays, index = trace_file_names(name)
    return folder / arrays, folder / index


def trace_paths(path: Path) -> tuple[Path, Path]:
    """(arrays, index) for either file of a trace."""
    for suffix in (ARRAYS_SUFFIX, INDEX_SUFFIX):
        if path.name.endswith(suffix):
            return trace_files(path.parent, path.name.removesuffix(suffix))
    raise TraceError(f"{path} is not a trace: give its {ARRAYS_SUFFIX} or {INDEX_SUFFIX} file")


def read_trace(path: Path) -> Trace:
    """The trace `path` names (either file of the pair), checked: the index parses, the arrays
    are whole and are the ones the index describes, and every listed tensor is there."""
    from safetensors import SafetensorError, safe_open

    index_path = trace_paths(path)[1]
    index = _read_index(index_path)
    if Path(index.arrays.file).name != index.arrays.file:
        raise TraceError(
            f"{index_path}: arrays.file must be a file name beside the index, got {index.arrays.file!r}"
        )
    arrays_path = index_path.parent / index.arrays.file
    if not arrays_path.is_file():
        raise TraceError(f"{arrays_path} does not exist (the arrays of the trace {index_path})")
    size = arrays_path.stat().st_size
    if size != index.arrays.bytes:
        raise TraceError(
            f"{arrays_path} holds {size} bytes, its index says {index.arrays.bytes}: the file is "
            "truncated or was replaced; copy the trace again"
        )
    if file_sha256(arrays_path) != index.arrays.sha256:
        raise TraceError(f"{arrays_path} does not match the sha256 in {index_path}: copy the trace again")
    try:
        handle = safe_open(str(arrays_path), framework="numpy")
    except SafetensorError as error:
        raise TraceError(f"{arrays_path} is not a readable safetensors file: {error}") from None
    trace = Trace(arrays_path, index, handle)
    missing = [name for name in index.names() if not trace.has(name)]
    if missing:
        raise TraceError(
            f"{index_path} lists {len(missing)} tensors its arrays lack (first: {missing[0]}); "
            "the writer did not finish"
        )
    return trace


def _read_index(path: Path) -> TraceIndex:
    if not path.is_file():
        raise TraceError(
            f"{path} does not exist: a trace is a {ARRAYS_SUFFIX} file and its {INDEX_SUFFIX} index"
        )
    try:
        text = path.read_text()
        document = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TraceError(f"{path} is not a trace index (JSON): {error}") from None
    if not isinstance(document, dict) or document.get("format") != TRACE_FORMAT:
        raise TraceError(f"{path} is not a trace index: its `format` is not {TRACE_FORMAT!r}")
    if document.get("format_version") != TRACE_FORMAT_VERSION:
        raise TraceError(
            f"{path} is trace format version {document.get('format_version')!r}; this sortformer-build "
            f"reads version {TRACE_FORMAT_VERSION}"
        )
    try:
        return TraceIndex.parse(text, str(path))
    except RecordError as error:
        raise TraceError(str(error)) from None


def file_sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
