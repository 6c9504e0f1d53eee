"""Digests: of cache keys, and of large files remembered by their stamps so warm builds skip
re-reading hundreds of MB."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sortformer_build.store import atomic


def digest_of(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def remembered_digest(memo_dir: Path, path: Path, stamp: object, compute: Callable[[], str]) -> str:
    """`compute()` for `path`, remembered while `stamp` (sizes and mtimes, JSON-plain) is unchanged."""
    memo = memo_dir / hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    try:
        remembered = json.loads(memo.read_text())
        if remembered["stamp"] == stamp:
            return str(remembered["sha256"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    digest = compute()
    atomic.write_text(memo, json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def file_stamp(path: Path) -> list[int]:
    """What changes when a file is rewritten: its size, modification time and inode change time
    (which, unlike the modification time, no one can set back)."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def file_sha256(path: Path, memo_dir: Path) -> str:
    """sha256 of one file, remembered per (path, size, mtime)."""
    return remembered_digest(memo_dir, path, file_stamp(path), lambda: sha256_of(path))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
