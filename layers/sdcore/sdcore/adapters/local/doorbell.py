"""Wake-ups across the local stack's processes, so that nothing on a request's path sleeps to
poll: a waiter listens on a Unix datagram socket of a named bell, and whoever changes what it
waits for rings the bell (one datagram to every listener of that name).

The bells of the local queues (`queue:<name>`: a message was sent or woken) wake the consumers
of that queue (control's event source, an inference worker), and the `tasks` bell (a task
ended) wakes the front door's sync waits. A ring is a hint, never the data: the waiter reads
the database again, and keeps a slow fallback poll, so a ring lost (a full socket buffer, a
listener that was not there yet) costs latency, never a task. On AWS the same waits are SQS
long polls and the sync wait's reads.

Sockets live under the temporary folder (`sd-bells-<uid>/<data dir hash>/<bell hash>/`), where
their paths stay short of the Unix socket limit (108 bytes) whatever SD_DATA_DIR is.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import select
import socket
import tempfile
from pathlib import Path

_SEQ = itertools.count()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bell_dir(data_dir: Path, name: str) -> Path:
    """The folder of the listeners of bell `name` of the stack whose data is in `data_dir`."""
    root = Path(tempfile.gettempdir()) / f"sd-bells-{os.getuid()}"
    return root / _digest(str(Path(data_dir).resolve())) / _digest(name)


def ring(data_dir: Path, name: str) -> int:
    """Wake every listener of bell `name`; returns how many were rung. Never blocks and never
    raises: a listener whose process is gone is forgotten, a full one is skipped (it has a
    ring waiting already)."""
    folder = bell_dir(data_dir, name)
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    rung = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for entry in entries:
            path = str(folder / entry)
            try:
                sock.sendto(b"!", path)
                rung += 1
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # its listener is gone
            except OSError:  # full (EAGAIN/ENOBUFS): a ring is already waiting there
                rung += 1
    return rung


class Listener:
    """One waiter's end of bell `name`: `wait` returns as soon as it rings (or a ring came
    since the last wait), else after `timeout`. Close it when done (also on exit: the
    socket file is removed; a file left by a killed process is removed by the next ring)."""

    def __init__(self, data_dir: Path, name: str) -> None:
        folder = bell_dir(data_dir, name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / f"{os.getpid()}-{next(_SEQ)}"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(str(self.path))

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read every ring waiting; True if there was one."""
        rang = False
        while True:
            try:
                self.sock.recv(64)
                rang = True
            except (BlockingIOError, InterruptedError):
                return rang
            except OSError:
                return rang

    def wait(self, timeout: float) -> bool:
        """True when rung (now or since the last wait), False when `timeout` passed."""
        if self.drain():
            return True
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return bool(readable) and self.drain()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
