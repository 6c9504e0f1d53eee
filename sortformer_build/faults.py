"""Named fault points: the places where a write can be interrupted, for tests to interrupt it there.

`SORTFORMER_BUILD_FAULT=<point>` makes a process that reaches `<point>` kill itself with SIGKILL,
as a power cut or the out-of-memory killer would: no cleanup code, no `finally`, runs. Unset (as
in every real build), each point is one dictionary look-up. Other actions:

- `<point>:full`: fill the file system the point writes to, then go on; the write that follows
  fails for want of space (the tests remove the filler file, `FILLER`, to make room again).
- `<point>:hold:<socket>`: connect to the Unix socket `<socket>`, send `<point> <pid>` and wait
  there until the other end sends a byte or closes: a test accepts the connection (no polling)
  and acts while the process is held at the point (kills it, cancels its Slurm job, starts a
  rival), then lets it go on.

`SORTFORMER_BUILD_FAULT_TRACE=<file>` appends every point reached to `<file>`, one name a line,
before any action: what a test reads to know that a point is reachable, and was reached.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from pathlib import Path

FAULT_VARIABLE = "SORTFORMER_BUILD_FAULT"
TRACE_VARIABLE = "SORTFORMER_BUILD_FAULT_TRACE"
# The file `full` leaves in the folder it filled.
FILLER = ".fault-filler"

# The cached stages' entries (their cache folders), each interrupted after its files are
# written and before entry.json and the rename that make the entry.
CACHED_STAGES = (
    "programs",
    "mixed-analysis",
    "palettize",
    "nemo-reference",
    "fp16-outputs",
    "nemo-diarization",
    "diarization",
)

POINTS: dict[str, str] = {
    **{
        f"cache.{stage}": f"the {stage} cache entry: its files written, not yet entry.json nor its rename"
        for stage in CACHED_STAGES
    },
    "cache.luts": "a look-up table written beside its place in the LUT store, not yet renamed",
    "rttm.write": "an RTTM written by NeMo's writer into a scratch folder, not yet renamed",
    "deliver.between-files": "the package renamed into the release folder; its compiled model, RTTMs not yet",
    "deliver.before-manifest": "every file of the artifact in place; its manifest not yet written",
    "deliver-evaluation.before-manifest": "a new evaluation's RTTMs in place; the manifest not yet updated",
    "matrix.write": "a sweep's matrix.md replaced; matrix.json not yet",
    "hub.tree": "the Hugging Face tree half staged: one model's files, not the card nor release.json",
}


def cache_point(stage: str) -> str:
    """The fault point inside a cached stage's entry write (`stage`: its cache folder)."""
    return f"cache.{stage}"


def point(name: str, folder: Path | None = None) -> None:
    """Mark the fault point `name`; `folder`: where the interrupted write goes (for `full`)."""
    armed = os.environ.get(FAULT_VARIABLE)
    trace = os.environ.get(TRACE_VARIABLE)
    if not armed and not trace:
        return
    assert name in POINTS, f"unknown fault point {name}"
    if trace:
        with open(trace, "a") as stream:
            stream.write(f"{name}\n")
    if not armed:
        return
    target, _, action = armed.partition(":")
    if target != name:
        return
    if action in ("", "kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "full":
        assert folder is not None, f"fault point {name} names no folder to fill"
        fill(folder)
    elif action.startswith("hold:"):
        _hold(name, action.removeprefix("hold:"))
    else:
        raise ValueError(f"{FAULT_VARIABLE}={armed}: unknown action {action!r} (kill, full or hold:<socket>)")


def fill(folder: Path) -> None:
    """Write `folder/FILLER` until the file system holds no free block."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / FILLER, "ab", buffering=0) as stream:
        for block in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    stream.write(b"\0" * block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise


def _hold(name: str, address: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(address)
        connection.sendall(f"{name} {os.getpid()}\n".encode())
        connection.recv(1)
