"""Per-machine locks, so that two runs never work on the same machine at once.

The locks are the operating system's, which vanish with the process that held them, so a killed
run never leaves a stale lock. They belong to the jump host, not to a runs folder: they live in
one folder per user (`lock_dir`), so two runs with different `--runs`, or a `--resume` given
another `--runs`, still meet. And they belong to the machine, not to its inventory name: a host
is locked under each of its identities (`machine_keys`), so one machine listed under two names
or letter cases is one lock. A run also locks its own folder (`RUN_LOCK`), so a `--resume` of a
run that is still going is refused.

**A few descriptors for any number of keys.** A lock is one byte of one of `SHARDS` shared
files in the folder (`LOCK_FILE`, then `keys-1.lock` ...), at an offset drawn from a 64-bit hash
of the key, which also picks the file: a record lock (`fcntl.lockf`, POSIX) on Linux and macOS,
`msvcrt.locking` on a Windows jump host. A file per key held open for the run cost a descriptor
per key, and a 10,000-host run (two keys per host) stopped at "Too many open files" under the
usual limit of 20,000; a byte range costs none. Several files, not one: Linux walks every lock
held on a file for each new one, so 20,000 keys in one file cost 4.4 s of CPU to take (the
walk grows with the keys held, the total with their square); spread over `SHARDS` files, each
walk is that much shorter. Offsets lie below 2**62, inside any `off_t`; the files stay empty, a
lock needs no data under it. Two keys sharing an offset (a chance of about n**2 / 2**63) would
only refuse a run, never let two runs meet.

POSIX record locks belong to a process, not to a descriptor: a process does not conflict with
itself, and closing *any* descriptor of the file drops all its locks on it. So the process opens
each folder's lock files once (`_SharedFile`, keyed by the device and inode of `LOCK_FILE`,
whatever path named the folder), keeps them open while any of its runs holds a key there, and
keeps its own table of held offsets, which refuses a second run in the same process as the
system refuses one in another process.

The refusal names the holder: the system reports which process holds a byte (`F_GETLK`), and
each process holding keys keeps a line naming its runs in `holder-<pid>.txt` beside the lock
file, written before it takes a lock and removed when it holds none. Where the holder cannot be
told (Windows, an unknown `struct flock` layout), the refusal says "another run".
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import struct
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from cmrunbook.errors import LockHeld, UsageError
from cmrunbook.load.inventory import HostView, Inventory

#: Overrides where the locks live, e.g. a folder shared by every operator account of a jump host.
LOCK_DIR_ENV = "CMRUNBOOK_LOCK_DIR"

#: The first of the files whose bytes are the locks of a folder (the others: `shard_name`).
LOCK_FILE = "keys.lock"
#: How many files a folder's locks are spread over: at most this many descriptors per run.
SHARDS = 32


def shard_name(shard: int) -> str:
    """The lock file holding the keys whose offset is `shard` modulo `SHARDS`."""
    return LOCK_FILE if shard == 0 else f"keys-{shard}.lock"


if sys.platform == "win32":
    import msvcrt

    # UNCONFIRMED: that msvcrt.locking locks at offsets past 4 GiB (the C runtime's _locking
    # over LockFile, which takes 64-bit offsets) was not tried on a Windows jump host here. If
    # it cannot, the lock fails and the run is refused as locked: it never runs unlocked.

    def _try_lock(fd: int, offset: int) -> bool:
        os.lseek(fd, offset, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int, offset: int) -> None:
        os.lseek(fd, offset, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    def _holder_pid(fd: int, offset: int) -> int | None:
        """Windows does not say who holds a range."""
        return None

else:
    import fcntl

    def _try_lock(fd: int, offset: int) -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
        except OSError:  # EACCES or EAGAIN: held by another process
            return False
        return True

    def _unlock(fd: int, offset: int) -> None:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)

    # `struct flock` as the C headers lay it out: (format, field order) per system; elsewhere
    # the holder is not asked for. Linux: l_type, l_whence, l_start, l_len, l_pid (fcntl(2));
    # macOS: l_start, l_len, l_pid, l_type, l_whence (<sys/fcntl.h>; UNCONFIRMED, not run on
    # macOS here: a wrong layout only changes who the refusal names, never whether it refuses).
    _FLOCK = {
        "linux": ("@hhqqi4x", ("type", "whence", "start", "len", "pid")),
        "darwin": ("@qqihh", ("start", "len", "pid", "type", "whence")),
    }.get(sys.platform)

    def _holder_pid(fd: int, offset: int) -> int | None:
        """The process holding the byte at ``offset`` (F_GETLK), or None if it is free now or
        this system's `struct flock` is not known here."""
        if _FLOCK is None:
            return None
        layout, order = _FLOCK
        values = {"type": fcntl.F_WRLCK, "whence": os.SEEK_SET, "start": offset, "len": 1}
        values["pid"] = 0
        packed = struct.pack(layout, *(values[name] for name in order))
        try:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, packed)
        except OSError:
            return None
        got = dict(zip(order, struct.unpack(layout, answer), strict=True))
        return got["pid"] if got["type"] != fcntl.F_UNLCK and got["pid"] > 0 else None


def key_offset(key: str) -> int:
    """The byte that locks ``key``: 62 bits of its BLAKE2b hash, stable across runs and
    processes (Python's own `hash` of a string is salted per process)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


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


#: The key of a run folder's own lock, a byte of that folder's `<run>/keys.lock`: however `--runs`
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


class _SharedFile:
    """This process's one descriptor on each lock file of a folder, and what it holds there.

    Never closed while a run of the process holds a byte in them: closing any descriptor of a
    file would drop every lock the process has there. ``held`` maps each locked offset to the
    run holding it, so that a second run in this process is refused as the system refuses a run
    in another one; ``runs`` counts the process's runs in the file, named in its holder file.
    """

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.fd = fd
        #: The descriptor of each lock file opened so far, by shard (`LOCK_FILE` is shard 0).
        self.fds: dict[int, int] = {0: fd}
        self.held: dict[int, str] = {}
        self.runs: dict[str, int] = {}
        self.spares: list[int] = []  # descriptors that turned out to be this file too

    @property
    def holder_path(self) -> Path:
        return self.folder / f"holder-{os.getpid()}.txt"

    def write_holder(self) -> None:
        """Name this process's runs for a refusal in another process (replaced whole, so a
        reader never sees half of it)."""
        text = f"{' or '.join(f'run {r}' for r in self.runs)} (pid {os.getpid()})"
        part = self.holder_path.with_suffix(".part")
        part.write_text(text, encoding="utf-8")
        os.replace(part, self.holder_path)

    def fd_for(self, offset: int) -> int:
        """The descriptor of the lock file holding ``offset``'s byte, opened on first use."""
        shard = offset % SHARDS
        fd = self.fds.get(shard)
        if fd is None:
            path = self.folder / shard_name(shard)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
            self.fds[shard] = fd
        return fd

    def holder(self, offset: int) -> str:
        """Who holds the byte at ``offset`` in another process, as the refusal names it."""
        pid = _holder_pid(self.fd_for(offset), offset)
        if pid is None:
            return "another run"
        try:
            with open(self.folder / f"holder-{pid}.txt", encoding="utf-8", errors="replace") as f:
                return f.read(200).strip() or f"another run (pid {pid})"
        except OSError:
            return f"another run (pid {pid})"


#: The lock folders this process has open, by the (device, inode) of their `LOCK_FILE`: one
#: descriptor per lock file, however many runs or paths name it. Guarded by `_GUARD`, which is
#: also held while a run takes its keys.
_OPEN: dict[tuple[int, int], _SharedFile] = {}
_GUARD = threading.Lock()
# A forked child inherits the descriptors but not the locks: it starts with none of its own.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_OPEN.clear)


def _attach(folder: Path, run_id: str) -> _SharedFile:
    """The folder's lock file, opened by this process once, with ``run_id`` counted in it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        st = os.stat(path)
        shared = _OPEN.get((st.st_dev, st.st_ino))
    except FileNotFoundError:
        shared = None
    if shared is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        st = os.fstat(fd)
        shared = _OPEN.get((st.st_dev, st.st_ino))
        if shared is None:
            shared = _OPEN[(st.st_dev, st.st_ino)] = _SharedFile(folder, fd)
        else:  # renamed in between: closing this descriptor now would drop the held locks
            shared.spares.append(fd)
    shared.runs[run_id] = shared.runs.get(run_id, 0) + 1
    shared.write_holder()
    return shared


def _detach(shared: _SharedFile, run_id: str) -> None:
    """Count ``run_id`` out; the last run out removes the holder file and closes the file."""
    shared.runs[run_id] -= 1
    if shared.runs[run_id]:
        return
    del shared.runs[run_id]
    if shared.runs:
        shared.write_holder()
        return
    st = os.fstat(shared.fd)
    del _OPEN[(st.st_dev, st.st_ino)]
    try:
        shared.holder_path.unlink(missing_ok=True)
    finally:
        for fd in (*shared.fds.values(), *shared.spares):
            os.close(fd)


class HostLocks:
    """Holds an exclusive lock per identity for the life of a run, all in ``folder``'s one lock
    file (see the module's docstring for why one byte of one file, not a file each).

    `keys` maps each identity to what the refusal calls it (a host's inventory name, or the run
    folder).
    """

    def __init__(self, folder: Path, keys: Mapping[str, str], run_id: str) -> None:
        self.folder = folder
        self.keys = dict(keys)
        self.run_id = run_id
        self._shared: _SharedFile | None = None
        self._offsets: list[int] = []

    def __enter__(self) -> HostLocks:
        with _GUARD:
            self._shared = shared = _attach(self.folder, self.run_id)
            try:
                # In the given order: a lock is tried, never waited for, so no order can
                # deadlock, and a run folder's key first makes a --resume of a live run say so.
                for key in self.keys:
                    offset = key_offset(key)
                    mine = shared.held.get(offset)
                    if mine is not None:
                        holder = f"run {mine} (pid {os.getpid()})"
                    elif _try_lock(shared.fd_for(offset), offset):
                        shared.held[offset] = self.run_id
                        self._offsets.append(offset)
                        continue
                    else:
                        holder = shared.holder(offset)
                    where = self.folder / shard_name(offset % SHARDS)
                    raise LockHeld(
                        f"{self.keys[key]} is locked by {holder} ({where}); nothing was changed"
                    )
            except BaseException:
                self._release()
                raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _GUARD:
            self._release()

    def _release(self) -> None:
        """Unlock this run's bytes and leave the file (called with `_GUARD` held)."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        try:
            # In ascending order: the system keeps a process's ranges sorted and looks for the
            # one to unlock from the lowest, so in the order taken (random, by hash) releasing
            # 20,000 keys walked 10,000 ranges each (1.3 s of CPU), in this order none.
            for offset in sorted(self._offsets):
                del shared.held[offset]
                _unlock(shared.fd_for(offset), offset)
        finally:
            self._offsets.clear()
            _detach(shared, self.run_id)
