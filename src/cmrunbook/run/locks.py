"""Per-machine locks, so that two runs never work on the same machine at once.

The locks are the operating system's, which vanish with the process that held them, so a killed
run never leaves a stale lock: `flock` on Linux and macOS, a byte-range lock (`msvcrt.locking`)
on a Windows jump host. Each lock file also names the run that holds it, for the refusal.

The locks belong to the jump host, not to a runs folder: they live in one folder per user
(`lock_dir`), so two runs with different `--runs`, or a `--resume` given another `--runs`, still
meet. And they belong to the machine, not to its inventory name: a host is locked under each of
its identities (`machine_keys`), so one machine listed under two names or letter cases is one
lock. A run also locks its own folder (`RUN_LOCK`), so a `--resume` of a run that is still going
is refused.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from cmrunbook.errors import LockHeld, UsageError
from cmrunbook.filenames import safe_name
from cmrunbook.load.inventory import HostView, Inventory

#: Overrides where the locks live, e.g. a folder shared by every operator account of a jump host.
LOCK_DIR_ENV = "CMRUNBOOK_LOCK_DIR"

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


def lock_dir() -> Path:
    """The jump host's one lock folder: `$CMRUNBOOK_LOCK_DIR`, else the user's state folder
    (`%LOCALAPPDATA%\\cmrunbook\\locks` on Windows, `$XDG_STATE_HOME/cmrunbook/locks` or
    `~/.local/state/cmrunbook/locks` elsewhere, as the XDG base directory spec places state)."""
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "cmrunbook" / "locks"
    state = os.environ.get("XDG_STATE_HOME", "")
    # The spec says a relative value is invalid and to be ignored.
    base_dir = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base_dir / "cmrunbook" / "locks"


def canonical_address(address: str) -> str:
    """One spelling per address: case-folded, without a DNS root dot or IPv6 brackets, and an
    IP address in its normal form (`0:0::1` is `::1`)."""
    text = address.strip().strip("[]").rstrip(".").casefold()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def machine_keys(host: HostView, inv: Inventory) -> tuple[str, ...]:
    """The identities a host is locked under; two hosts sharing any of them are one machine.

    - `machine:<address>`: the name the site knows the machine by (the inventory's `address`,
      else its name), canonical. Two inventory entries for one machine, or two WinRM listeners
      (http and https) on it, share it.
    - `winrm:<address>:<port><path>`: the WinRM endpoint actually connected to. This catches an
      entry whose `address` differs but that reaches the same listener. The port and URL path are
      part of it because one address can serve several machines' endpoints: a gateway, or the
      lab, which serves every simulated host on 127.0.0.1 under its own `/wsman/<name>`. The path
      is case-folded since the Windows HTTP server matches URLs without regard to case.
    """
    keys = [f"machine:{canonical_address(host.address)}"]
    if host.has_winrm:
        w = host.winrm(inv)
        where = canonical_address(w.address or host.address)
        keys.append(f"winrm:{where}:{w.port}{str(w.path).casefold()}")
    return tuple(keys)


#: The key of a run folder's own lock, held in that folder (`<run>/run.lock`): however `--runs`
#: or `--resume` names the folder, it is the same file, and it goes when the folder is pruned.
RUN_LOCK = "run"


def host_lock_keys(hosts: Iterable[HostView], inv: Inventory) -> dict[str, str]:
    """Every identity of a run's hosts, each with the inventory name the refusal calls it by.
    Two of the run's own hosts that are one machine are refused: the run would work on the
    machine twice at once (and the second lock would refuse the run that holds the first)."""
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}
    for host in hosts:
        for key in machine_keys(host, inv):
            if key in owner and owner[key] != host.name:
                raise UsageError(
                    f"hosts {owner[key]} and {host.name} in {inv.path} are one machine "
                    f"({key}); select one of them. Nothing was changed."
                )
            owner[key] = host.name
            keys[key] = host.name
    return keys


class HostLocks:
    """Holds an exclusive lock file per identity for the life of a run.

    `keys` maps each identity to what the refusal calls it (a host's inventory name, or the run
    folder).
    """

    def __init__(self, folder: Path, keys: Mapping[str, str], run_id: str) -> None:
        self.folder = folder
        self.keys = dict(keys)
        self.run_id = run_id
        self._fds: list[int] = []

    def __enter__(self) -> HostLocks:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            # In the given order: the lock is tried, never waited for, so no order can deadlock,
            # and a run folder's key first makes a --resume of a live run say so.
            for key in self.keys:
                path = self.folder / f"{safe_name(key)}.lock"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
                if not _try_lock(fd):
                    os.lseek(fd, 0, os.SEEK_SET)
                    holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another run"
                    os.close(fd)
                    raise LockHeld(
                        f"{self.keys[key]} is locked by {holder} ({path}); nothing was changed"
                    )
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
