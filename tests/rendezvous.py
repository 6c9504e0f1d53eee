"""Meeting a process at a fault point without polling: the process, armed with
`SORTFORMER_BUILD_FAULT=<point>:hold:<socket>`, connects to a socket the test listens on when it
reaches the point and waits there until the test lets it go (or kills it)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sortformer_build import faults


@dataclass
class Held:
    """A process waiting at a fault point."""

    connection: socket.socket
    point: str
    pid: int

    def release(self) -> None:
        """Let it go on from the point."""
        self.connection.sendall(b"g")
        self.connection.close()


class Rendezvous:
    """A listening Unix socket in a short-lived folder of its own (socket paths are limited to
    about 100 characters, which pytest's folders can exceed)."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="sfb-hold-"))
        self.address = self._folder / "socket"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.address))
        self._server.listen()

    def fault(self, point: str) -> str:
        """The value of SORTFORMER_BUILD_FAULT that holds a process at `point`."""
        return f"{point}:hold:{self.address}"

    def environment(self, point: str) -> dict[str, str]:
        return {faults.FAULT_VARIABLE: self.fault(point)}

    def wait(self, timeout: float = 900) -> Held:
        """The next process to reach its point (the timeout only bounds a failing test)."""
        self._server.settimeout(timeout)
        connection, _ = self._server.accept()
        connection.settimeout(None)
        point, pid = connection.makefile().readline().split()
        return Held(connection, point, int(pid))

    def close(self) -> None:
        self._server.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Rendezvous:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
