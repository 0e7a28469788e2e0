"""Site-wide state (a runbook's `site_states`): saved once per site, changed by one target at a
time, and set back when a run stops halfway.

Method 3 of KB971413 clears the multicast option on every OS image of the site before it works
on one DP, and sets it again afterwards: the images belong to the site, not to the DP. So:

- the probes that read such a state are taken once per site and run, before the first change,
  and journaled as `site-state` (every target of the site loops over the same saved items);
- a step that changes an item writes `site-changed` before its `step-start` (write-ahead), a
  completed restore writes `site-restored`; what was changed and not restored is outstanding;
- one target of a site holds the site's changes at a time (`SiteStates.open`/`close`): a second
  DP of the site waits until the first has set the items back, so their changes never
  interleave;
- when a target ends with items outstanding (failure, timeout, Ctrl-C), or a resumed run finds
  some in the journal (the run was killed), the runbook's restore step runs for each of them,
  and the change steps of the target are run again if it is resumed (`reopen`).

`Ledger.replay` rebuilds all of this from a journal, for --resume and for the reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cmrunbook.record.vocabulary import Event


class Writer(Protocol):
    def write(self, event: str, *, durable: bool = False, **fields: Any) -> None: ...


@dataclass
class Ledger:
    """What the journal says about site-wide state, event by event."""

    #: (site, probe, digest of the script) -> the value saved before the first change.
    snapshots: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    #: (site, state) -> {item: the target whose step changed it last}, not yet restored.
    outstanding: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: (site, state) -> items set back after a run stopped, in order.
    compensated: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: target -> change steps (step ids) whose change was set back after a stop: a resumed
    #: target runs them again before it goes on, as the procedure expects them done.
    reopen: dict[str, set[str]] = field(default_factory=dict)
    _changed_by: dict[tuple[str, str, str], set[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def replay(cls, events: Iterable[dict[str, Any]]) -> Ledger:
        ledger = cls()
        for event in events:
            ledger.apply(event)
        return ledger

    def apply(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == Event.SITE_STATE:
            self.snapshots[(str(e["site"]), str(e["probe"]), str(e["digest"]))] = e.get("value")
            return
        if kind not in (Event.SITE_CHANGED, Event.SITE_RESTORED):
            return
        key = (str(e["site"]), str(e["state"]))
        item, host = str(e["item"]), str(e["host"])
        changed = self._changed_by.setdefault((*key, item), set())
        if kind == Event.SITE_CHANGED:
            self.outstanding.setdefault(key, {})[item] = host
            changed.add((host, str(e["step"])))
            self.reopen.get(host, set()).discard(str(e["step"]))
            return
        self.outstanding.get(key, {}).pop(item, None)
        if e.get("compensated"):
            self.compensated.setdefault(key, []).append(item)
            for who, step in changed:
                self.reopen.setdefault(who, set()).add(step)
        changed.clear()

    def held_by(self, site: str, host: str) -> bool:
        """Whether `host` changed an item of `site` that is not set back yet."""
        return any(
            host in items.values() for (s, _), items in self.outstanding.items() if s == site
        )


class SiteStates:
    """The run's site-wide state: the ledger, kept in step with the journal, and who holds what.

    Every event goes to the journal and the ledger under one lock, so the ledger a resumed run
    replays is the one this run had.
    """

    def __init__(self, journal: Writer, events: Iterable[dict[str, Any]] = ()) -> None:
        self.ledger = Ledger.replay(events)
        self._journal = journal
        self._lock = threading.Lock()
        self._probe_locks: dict[str, threading.Lock] = {}
        self._holders: dict[str, str] = {}
        self._window = threading.Condition()
        #: (site, state) -> items this invocation set back after a stop.
        self.restored_now: dict[tuple[str, str], list[str]] = {}

    def record(self, event: str, *, durable: bool = False, **fields: Any) -> None:
        with self._lock:
            self._journal.write(event, durable=durable, **fields)
            self.ledger.apply({"event": event, **fields})
            if event == Event.SITE_RESTORED and fields.get("compensated"):
                key = (str(fields["site"]), str(fields["state"]))
                self.restored_now.setdefault(key, []).append(str(fields["item"]))

    def snapshot(
        self, site: str, probe: str, digest: str, host: str, take: Callable[[], tuple[str, Any]]
    ) -> Any:
        """The site's saved value of a probe; taken (`take` -> (on, value)) and journaled once."""
        with self._lock:
            lock = self._probe_locks.setdefault(site, threading.Lock())
        with lock:
            key = (site, probe, digest)
            if key in self.ledger.snapshots:
                return self.ledger.snapshots[key]
            on, value = take()
            self.record(
                Event.SITE_STATE,
                durable=True,
                site=site,
                probe=probe,
                digest=digest,
                on=on,
                host=host,
                value=value,
            )
            return value

    def outstanding(self, site: str, state: str) -> dict[str, str]:
        with self._lock:
            return dict(self.ledger.outstanding.get((site, state), {}))

    def holds(self, site: str, host: str) -> bool:
        """Whether `host` still has changed items of `site` that are not set back."""
        with self._lock:
            return self.ledger.held_by(site, host)

    def reopened(self, host: str) -> set[str]:
        """The change steps of `host` to run again (their change was set back after a stop)."""
        with self._lock:
            return set(self.ledger.reopen.get(host, ()))

    def open(
        self, site: str, host: str, stop: threading.Event, waiting: Callable[[str], None]
    ) -> bool:
        """Hold `site`'s changes for `host`, waiting while another target holds them; False
        if the run was stopped meanwhile."""
        told = False
        with self._window:
            while self._holders.get(site, host) != host:
                if stop.is_set():
                    return False
                if not told:
                    waiting(self._holders[site])
                    told = True
                self._window.wait(0.1)
            self._holders[site] = host
        return True

    def close(self, site: str, host: str) -> None:
        """Let another target of `site` change it (the holder set everything back, or ended)."""
        with self._window:
            if self._holders.get(site) == host:
                del self._holders[site]
                self._window.notify_all()

    def unresolved(self) -> bool:
        """Whether any site-wide change is still not set back."""
        with self._lock:
            return any(self.ledger.outstanding.values())

    def summary(self, titles: dict[str, str]) -> list[str]:
        """Lines for the run summary: what this invocation set back, what is still changed."""
        lines = [
            f"site {site}: {titles.get(state, state)}: {', '.join(items)}"
            for (site, state), items in sorted(self.restored_now.items())
        ]
        for (site, state), items in sorted(self.ledger.outstanding.items()):
            if items:
                lines.append(f"site {site}: NOT set back ({state}): {', '.join(sorted(items))}")
        return lines
