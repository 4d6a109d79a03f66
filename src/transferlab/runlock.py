"""One run at a time per output folder: an advisory ``flock`` on ``OUT/.transferlab.lock``.

The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a
killed run never leaves a stale lock behind. A run that fails before writing anything leaves no
folder behind either, when the lock created it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import OutputInUse


class OutputLock:
    """Context manager holding the lock of ``directory`` (created if missing, and removed again
    if the run inside fails before it wrote anything)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / ".transferlab.lock"
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> OutputLock:
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputInUse(
                f"{self.path.parent} is in use by another transferlab run (pid {owner}); "
                "wait for it to finish or choose another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        folder = self.path.parent
        if kind is not None and self._created and [p.name for p in folder.iterdir()] == [self.path.name]:
            self.path.unlink()
            folder.rmdir()
