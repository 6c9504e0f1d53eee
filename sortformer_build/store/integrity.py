"""Is a cache entry still what was built? Its files' sizes and sha256 are recorded in its
entry.json when it is made, and checked before the entry is used.

The split between cheap and full checks: every use checks that each file is there with its
recorded size (one `stat` per file, so a truncated file never passes); the content is hashed
again only when a file's stamp (size, modification time and inode change time) differs from the
stamp it had when its content was last found right, which is remembered on disk per entry, like
the package digests (`store.digests`). Every rewrite of a file through the file system, an edit,
a flipped byte, a truncation, a copy over it, moves its inode change time, which nobody can set
back; so an entry whose stamps are unchanged still holds the bytes that were hashed, and a warm
sweep checks hundreds of MB of entries with a few `stat` calls instead of reading them all. What
this does not see is a change below the file system (a failing disk); the package each build
assembles from the entries is hashed in full anyway.
"""

from __future__ import annotations

from pathlib import Path

from sortformer_build.records.facts import FileDigest
from sortformer_build.store.digests import digest_of, file_stamp, remembered_digest, sha256_of
from sortformer_build.store.usage import ENTRY_FILE


def file_digests(folder: Path) -> dict[str, FileDigest]:
    """Size and sha256 of every file under `folder` but entry.json, by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): FileDigest(bytes=path.stat().st_size, sha256=sha256_of(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != ENTRY_FILE
    }


def remember(folder: Path, files: dict[str, FileDigest], memo_dir: Path) -> None:
    """Note that the files of `folder` (where the entry now lives) hold what `files` records."""
    remembered_digest(memo_dir, folder, _stamp(folder, files), lambda: _expected(files))


def problem(folder: Path, files: dict[str, FileDigest], memo_dir: Path | None) -> str | None:
    """What differs between the entry's files and the record, or None when they agree."""
    for name, recorded in files.items():
        try:
            size = (folder / name).stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        if size != recorded.bytes:
            return f"{name} holds {size} bytes where {recorded.bytes} were written"
    expected = _expected(files)
    if memo_dir is None:
        found = _actual(folder, files)
    else:
        found = remembered_digest(memo_dir, folder, _stamp(folder, files), lambda: _actual(folder, files))
    if found == expected:
        return None
    changed = [name for name, recorded in files.items() if sha256_of(folder / name) != recorded.sha256]
    return f"{changed[0] if changed else 'a file'} differs from the sha256 recorded when it was written"


def _stamp(folder: Path, files: dict[str, FileDigest]) -> list[list[object]]:
    return [[name, *file_stamp(folder / name)] for name in sorted(files)]


def _expected(files: dict[str, FileDigest]) -> str:
    return digest_of({name: recorded.sha256 for name, recorded in files.items()})


def _actual(folder: Path, files: dict[str, FileDigest]) -> str:
    return digest_of({name: sha256_of(folder / name) for name in files})
