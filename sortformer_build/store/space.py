"""A full disk, said in one line: which folder filled, how much was free there, and roughly how
much the write wanted, instead of whatever a library's errno text looks like deep in a stack."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sortformer_build.errors import BuildError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How libraries that wrap the error (coremltools' C++ layer, shutil.Error) still say it.
_FULL_WORDS = ("No space left on device", "Disk quota exceeded")

# Bytes a write wanted when known in advance, else what it had written when the disk filled.
Needed = Callable[[], int | None]


class NoSpaceError(BuildError):
    """A folder's file system ran out of space during a write (nothing half-written is kept)."""


def is_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is a file system out of space."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NoSpaceError):
            return False  # already said
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if any(words in str(seen) for words in _FULL_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def reported(folder: Path, what: str, needed: Needed, exact: bool = False) -> Iterator[None]:
    """Within the block, a full disk becomes a NoSpaceError naming `folder` and `what`;
    `needed()` is the size wanted (`exact`) or, measured when the disk filled, the bytes written
    before it did."""
    try:
        yield
    except Exception as error:
        if not is_full(error):
            raise
        raise NoSpaceError(describe(folder, what, needed(), exact)) from None


def named_file(error: BaseException) -> Path | None:
    """The file the error, or an error it was raised from, names (resolved), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.filename:
            return Path(str(seen.filename)).resolve()
        seen = seen.__cause__ or seen.__context__
    return None


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(_existing(folder)).free


def describe(folder: Path, what: str, needed: int | None, exact: bool) -> str:
    free = free_bytes(folder)
    if needed is None:
        wanted = "more than was free"
    elif exact:
        wanted = f"about {megabytes(needed)}"
    else:
        wanted = f"more than the {megabytes(needed)} it had written"
    return (
        f"no space left in {folder} for {what}: {megabytes(free)} free, it needs {wanted}; "
        "free some space there or choose another folder"
    )


def tree_size(path: Path) -> int:
    """Bytes of a file or of every file under a folder (0 when it is gone)."""
    if path.is_file():
        return path.stat().st_size
    return sum(found.stat().st_size for found in path.rglob("*") if found.is_file()) if path.is_dir() else 0


def megabytes(count: int) -> str:
    """`12.34 MB`, or `0.9 kB` below 10 kB (a manifest, a look-up table)."""
    return f"{count / 1e6:.2f} MB" if count >= 10_000 else f"{count / 1e3:.1f} kB"


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
