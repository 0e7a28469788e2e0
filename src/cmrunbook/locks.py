"""Per-host locks, so that two runs never work on the same host at once.

The locks are the operating system's, which vanish with the process that held them, so a killed
run never leaves a stale lock: `flock` on Linux and macOS, a byte-range lock (`msvcrt.locking`)
on a Windows jump host. Each lock file also names the run that holds it, for the refusal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

from cmrunbook.errors import LockHeld
from cmrunbook.filenames import safe_name

if sys.platform == "win32":
    import msvcrt

    #: Windows locks a byte range, and a locked range cannot be read by another process: the
    #: lock sits far past the holder's text, which stays readable for the refusal message.
    _LOCK_OFFSET = 1 << 30

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        """Windows releases a closed file's locks only eventually: release them now."""
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        """Closing the file releases a flock at once."""


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
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
                if not _try_lock(fd):
                    os.lseek(fd, 0, os.SEEK_SET)
                    holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another run"
                    os.close(fd)
                    raise LockHeld(f"{host} is locked by {holder} ({path}); nothing was changed")
                self._fds.append(fd)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"run {self.run_id} (pid {os.getpid()})".encode())
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
            try:
                _unlock(fd)
            finally:
                os.close(fd)
        self._fds.clear()
