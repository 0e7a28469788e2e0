"""The run journal: append-only JSON lines, each flushed as it is written, so a kill loses nothing.

A `step-start` is also fsynced before its step runs (write-ahead): that puts it, and every event
before it, on disk before the host is touched, so even a power cut on the jump host leaves a
journal in which every step that may have changed a host is recorded as started. (A read-only
check's steps change nothing: their starts are written before they run, not waited onto the
disk; one a power cut took makes --resume read that host again.) Outcome events
are not waited on: a step whose `step-end` a power cut took is shown as interrupted and re-run.

Clients read from their site's one reading are journaled in batches (`JournalWriter.batch`):
the same events, written a batch at a time with one write and one fsync, since 50,000 clients
journaled line by line spent more time in the journal than the whole reading took. A batch is
put on disk before its thread makes any remote call (`settle`), so write-ahead still holds;
a kill loses at most the unwritten batch, whose clients --resume reads from the site again.
A target run on its own hosts journals in a batch too, written whenever it waits (a remote
call, a pause, a question) and at its end: a kill loses only the events of the moment it was
computing, never one that a remote call, and so a change on a host, followed.

A run folder is `runs/<YYYYmmdd-HHMMSS>-<runbook>/` holding `journal.jsonl`, the scripts as sent
and the reports. Each script is journaled (`script`: host, where it ran, its name, its first
line, which names the target) with the file holding the rest of it, `scripts/<sha256>.ps1`,
written once however many alike hosts were sent the same (`sent_script` puts it together
again). `--resume` reads the journal back (see `ResumeState`) and continues each host after
its last completed step. No credential is ever passed in here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cmrunbook.errors import UsageError, naming
from cmrunbook.record.journal_read import JOURNAL_NAME, SCRIPTS_DIR, read_events
from cmrunbook.record.vocabulary import SETTLED_STATUSES, SITE_EVENTS, Event

#: How events are written: non-ASCII as it is, anything JSON has no type for as its text.
_JSON: dict[str, Any] = {"default": str, "ensure_ascii": False}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_dir(runs: Path, runbook: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = runs / f"{stamp}-{runbook}"
    n = 1
    while path.exists():
        n += 1
        path = runs / f"{stamp}-{runbook}-{n}"
    path.mkdir(parents=True)
    return path


class JournalWriter:
    """Appends events; each is one line, written whole and flushed before returning."""

    def __init__(self, run_dir: Path, *, last_seq: int | None = None) -> None:
        """Open (or continue) the journal; `last_seq` is the resumed journal's, if it is known."""
        self.run_dir = run_dir
        self.path = run_dir / JOURNAL_NAME
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        if last_seq is None:
            last_seq = _last_seq(read_events(self.path)[0]) if self.path.is_file() else 0
        self._seq = self._synced = last_seq
        # The first failed write (a full disk): no line is written after it, since a whole line
        # after a torn one would make the torn one a corrupt middle line that stops --resume.
        self._failed: OSError | None = None
        _repair_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        #: This thread's open batch (see `batch`): event bodies not written yet, and whether
        #: one of them is a write-ahead event.
        self._local = threading.local()
        #: The script files this writer has seen written (`save_script`), by their digest.
        self._saved: set[str] = set()
        self._saving = threading.Lock()

    def write(self, event: str, *, durable: bool = False, **fields: Any) -> None:
        """Append one event; with `durable`, return only once it (and all before it) is on disk.

        The line is written and flushed under the lock (a kill loses at most the line being
        written). Only write-ahead events wait for an fsync: with a hundred forks, every event
        waiting for one made the workers queue on the sync lock, and a host spent more time in
        the journal than on the wire. The fsync covers every line flushed before it started, so
        hosts starting steps at once share a few disk syncs.

        Inside `batch`, the event waits in this thread's batch instead (its time is the time of
        this call); a durable one is on disk before the thread's next remote call (`settle`).
        """
        body = json.dumps({"time": now_iso(), "event": event, **fields}, **_JSON)
        pending: list[str] | None = getattr(self._local, "bodies", None)
        if pending is not None:
            pending.append(body)
            self._local.durable = self._local.durable or durable
            if len(pending) >= self._local.size:
                self._flush_batch()
            return
        mine = self._append([body])
        if durable:
            self._sync(mine)

    def _append(self, bodies: list[str]) -> int:
        """Write events (JSON objects without their seq) as whole lines in one write, numbering
        them in the order written; returns the last seq."""
        with self._lock:
            if self._failed is not None:  # a fresh error each time: threads raise it at once
                failed = self._failed
                raise OSError(failed.errno, failed.strerror, failed.filename)
            first = self._seq + 1
            self._seq += len(bodies)
            # "seq" leads each line, as it always has: the body's "{" becomes '{"seq": n, '.
            text = "".join(f'{{"seq": {n}, {body[1:]}\n' for n, body in enumerate(bodies, first))
            try:
                self._fh.write(text)
                self._fh.flush()
            except OSError as exc:
                self._failed = naming(exc, self.path)
                raise self._failed from exc
            return self._seq

    @contextlib.contextmanager
    def batch(self, size: int = 2000) -> Iterator[None]:
        """Collect this thread's events and write them `size` at a time (and at the end), each
        batch in one write and with one fsync when it holds a write-ahead event. Other threads
        write as before. Nested, the outer batch goes on."""
        if getattr(self._local, "bodies", None) is not None:
            yield
            return
        self._local.bodies, self._local.durable, self._local.size = [], False, max(1, size)
        try:
            yield
        finally:
            try:
                self._flush_batch()
            finally:
                self._local.bodies = None

    def settle(self) -> None:
        """Before a remote call: this thread's batch written and, if it holds a write-ahead
        event, on disk (outside a batch every write already is)."""
        if getattr(self._local, "bodies", None):
            self._flush_batch()

    def _flush_batch(self) -> None:
        bodies: list[str] = self._local.bodies
        if not bodies:
            return
        durable = self._local.durable
        self._local.bodies, self._local.durable = [], False
        mine = self._append(bodies)
        if durable:
            self._sync(mine)

    def _sync(self, mine: int) -> None:
        """Return once line `mine` is on disk, syncing unless another thread's sync covered it."""
        with self._sync_lock:
            if self._synced >= mine:
                return
            with self._lock:
                covered = self._seq
            os.fsync(self._fh.fileno())
            self._synced = covered

    def save_script(self, host: str, on: str, name: str, script: str) -> Path:
        """Record the script `name` about to be sent to `on` for target `host`: a `script` event
        with its first line, and the rest of it in `scripts/<sha256 of the rest>.ps1`.

        Only the first line names the target: alike hosts share the rest, written once (a
        folder and a file per host were most of what the engine spent on a host besides the
        wire). The file is written whole under a temporary name and renamed, so a name in the
        folder always holds its whole text; the event is journaled after it."""
        header, _, rest = script.partition("\n")
        digest = hashlib.sha256(rest.encode("utf-8")).hexdigest()
        path = self.run_dir / SCRIPTS_DIR / f"{digest}.ps1"
        if digest not in self._saved:
            with self._saving:
                if digest not in self._saved:
                    self._save(path, rest)
                    self._saved.add(digest)
        self.write(
            Event.SCRIPT,
            host=host,
            on=on,
            name=name,
            header=header,
            file=f"{SCRIPTS_DIR}/{path.name}",
        )
        return path

    @staticmethod
    def _save(path: Path, text: str) -> None:
        if path.is_file():  # written by the run being resumed
            return
        part = path.with_name(f"{path.name}.part")
        try:
            path.parent.mkdir(exist_ok=True)
            # newline="" writes the text as sent, "\r\n" included.
            with open(part, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.replace(part, path)
        except OSError as exc:
            raise naming(exc, path) from exc

    def close(self) -> None:
        """Sync the outcome events no write-ahead event has covered yet, and close.

        After a failed write, the rest of that line may still be buffered: closing tries to
        write it once more (completing the line if there is room now) and ignores a failure.
        """
        self._sync(self._seq)
        with self._lock:
            if self._failed is None:
                self._fh.close()
                return
            with contextlib.suppress(OSError):
                self._fh.close()


def _repair_tail(path: Path) -> None:
    """A kill mid-write leaves a last line without its newline: keep it if it is a whole event,
    else cut it off, so that appended events never follow half a line."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":  # the usual case: no need to read the journal again
            return
    data = path.read_bytes()
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:
        with open(path, "r+b") as fh:
            fh.truncate(start)
        return
    with open(path, "ab") as fh:
        fh.write(b"\n")


def _last_seq(events: list[dict[str, Any]]) -> int:
    return max((int(e.get("seq", 0)) for e in events), default=0)


@dataclass
class HostState:
    """What a previous run of one host got done."""

    done: set[str] = field(default_factory=set)
    stages: dict[str, str] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)
    armed: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: str | None = None
    restart_asked: list[str] = field(default_factory=list)  # since the last restart


@dataclass
class ResumeState:
    """The previous run's request and per-host progress, rebuilt from its journal."""

    run_dir: Path
    run: dict[str, Any]
    hosts: dict[str, HostState]
    last_seq: int
    #: The site-wide state events, in order (sitestate.Ledger.replay reads them).
    site_events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: Path) -> ResumeState:
        """Read the journal once; a line that cannot be read (but a cut last one) is an error,
        since a lost step-end would run that step again."""
        path = run_dir / JOURNAL_NAME
        events = read_events(path, strict=True)[0] if path.is_file() else []
        runs = [e for e in events if e.get("event") == Event.RUN]
        if not runs:
            raise UsageError(f"{run_dir} has no journal with a run event to resume")
        hosts: dict[str, HostState] = {}
        for e in events:
            host = e.get("host")
            if host is None:
                continue
            st = hosts.setdefault(host, HostState())
            kind = e.get("event")
            if kind == Event.STEP_END and e.get("status") in SETTLED_STATUSES:
                st.done.add(step_id(e["key"], e.get("item")))
            elif kind == Event.STAGE_END:
                st.stages[e["stage"]] = e["status"]
            elif kind == Event.PROBE:
                st.probes[e["probe"]] = e.get("value")
            elif kind == Event.LOG_ARMED:
                st.armed[e["key"]] = e.get("logs", {})
            elif kind == Event.RESTART_ASKED:
                st.restart_asked.append(str(e.get("reason")))
            elif kind == Event.REBOOT:
                st.restart_asked = []
            elif kind == Event.HOST_END:
                st.finished = e.get("status")
            elif kind == Event.HOST_RESUME:
                st.finished = None
        site_events = [e for e in events if e.get("event") in SITE_EVENTS]
        return cls(run_dir, runs[0], hosts, _last_seq(events), site_events)


def step_id(key: str, item: Any) -> str:
    """A step's identity in the journal: its plan key, and the loop item when it loops."""
    return key if item is None else f"{key}#{item}"
