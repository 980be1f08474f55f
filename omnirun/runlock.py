"""A run directory belongs to one writer at a time: an OS advisory lock (`flock`) on a lock file inside it,
held for the whole run and holding the writer's pid. The OS releases it when the process ends, however it ends
(`kill -9` included), so a lock left by a dead run never blocks a resume."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from omnirun.errors import ConfigError

LOCK = ".omnirun.lock"
"""The lock file's name in a run directory."""


class RunLock:
    """The lock of one run directory, held from `acquire` until `release` (or the process's end)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._fd: int | None = None

    def acquire(self, purpose: str) -> RunLock:
        """Take the lock; ConfigError naming the holder's pid when another process writes the directory.
        `purpose` says what this process wanted (`resume=<dir>`, `a new run`) for the message."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{purpose}: {self.path.parent} is being written by another omnirun process (pid {holder}); "
                "wait for it to end or stop it (Ctrl-C or kill), then resume; two writers would mix their rows"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (the file stays, emptied: the next writer takes it)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def holder(folder: Path) -> int | None:
    """The pid of the process writing `folder`, or None when none holds its lock."""
    path = folder / LOCK
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
