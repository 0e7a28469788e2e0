"""Per-host locks, so that two runs never work on the same host at once.

`flock` locks vanish with the process that held them, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from cmrunbook.errors import LockHeld
from cmrunbook.filenames import safe_name


class HostLocks:
    """Holds an exclusive lock file per host for the life of a run."""

    def __init__(self, folder: Path, hosts: list[str], run_id: str) -> None:
        self.folder = folder
        self.hosts = hosts
        self.run_id = run_id
        self._fds: list[int] = []

    def __enter__(self) -> HostLocks:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            for host in sorted(self.hosts):
                path = self.folder / f"{safe_name(host)}.lock"
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = (
                        os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
                    )
                    os.close(fd)
                    raise LockHeld(
                        f"{host} is locked by {holder} ({path}); nothing was changed"
                    ) from None
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"run {self.run_id} (pid {os.getpid()})".encode(), 0)
                self._fds.append(fd)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
