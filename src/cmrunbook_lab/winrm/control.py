"""What a test or benchmark controls and observes on the lab's WinRM service.

Per-host request and connection counters (:class:`ServerStats`) and protocol-level faults armed
while the server runs (:class:`FaultInjector`). The HTTP layer counts and consults them; nothing
here touches a socket.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cmrunbook_lab.winrm.soap import ACTIONS

__all__ = ["FaultInjector", "FaultKind", "ServerStats", "WireStats"]


@dataclass(frozen=True)
class WireStats:
    """What went over the wire for one host since the last reset (the lab server's counters).

    ``connections`` counts the TCP connections that carried at least one request for the host;
    ``requests`` counts WS-Man requests by action (every action in :data:`ACTIONS` is present).
    The NTLM handshake is not a WS-Man request and is not counted there; ``http_requests``
    counts every HTTP request, handshake legs and refused ones included; ``rejected`` counts
    the NTLM AUTHENTICATE messages refused with a 401 (each one a failed logon for the account,
    what a domain counts towards its lockout threshold).
    """

    connections: int
    requests: Mapping[str, int]
    http_requests: int
    rejected: int = 0

    @property
    def total_requests(self) -> int:
        """All WS-Man requests of any action."""
        return sum(self.requests.values())


class ServerStats:
    """Thread-safe request and connection counters per host (host names in lower case)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, int] = {}
        self._requests: dict[str, dict[str, int]] = {}
        self._http: dict[str, int] = {}
        self._rejected: dict[str, int] = {}
        self.generation = 0  # bumped by reset(), so open connections are counted again

    def snapshot(self) -> dict[str, WireStats]:
        """A consistent copy of all counters."""
        with self._lock:
            hosts = set(self._connections) | set(self._requests)
            return {
                host: WireStats(
                    connections=self._connections.get(host, 0),
                    requests={a: self._requests.get(host, {}).get(a, 0) for a in ACTIONS},
                    http_requests=self._http.get(host, 0),
                    rejected=self._rejected.get(host, 0),
                )
                for host in sorted(hosts)
            }

    def reset(self) -> None:
        """Zero everything; a connection still open counts again when it is next used."""
        with self._lock:
            self._connections.clear()
            self._requests.clear()
            self._http.clear()
            self._rejected.clear()
            self.generation += 1

    def _count_connection(self, host: str) -> None:
        with self._lock:
            self._connections[host] = self._connections.get(host, 0) + 1

    def _count_http(self, host: str) -> None:
        with self._lock:
            self._http[host] = self._http.get(host, 0) + 1

    def _count_rejected(self, host: str) -> None:
        with self._lock:
            self._rejected[host] = self._rejected.get(host, 0) + 1

    def _count_request(self, host: str, action: str) -> None:
        with self._lock:
            per_host = self._requests.setdefault(host, {})
            per_host[action] = per_host.get(action, 0) + 1


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


class FaultKind(enum.StrEnum):
    """Protocol-level failures the lab can inject; the client-side kind is in brackets.

    * ``refuse``: close the TCP connection without any response [refused];
    * ``http500``: HTTP 500 with a WS-Man ``w:InternalError`` fault body [fault];
    * ``hang``: no answer until the client gives up (its read timeout) [timeout];
    * ``reset``: status line, headers and half the body, then close [reset];
    * ``quota``: the WS-Man ``w:QuotaLimit`` fault Windows sends when a user has too many shells
      (on Create) or operations (on Command); only applies to those two actions [fault].
    """

    REFUSE = "refuse"
    HTTP500 = "http500"
    HANG = "hang"
    RESET = "reset"
    QUOTA = "quota"


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int | None
    actions: frozenset[str]
    until: float | None


class FaultInjector:
    """Per-host faults, set and cleared while the server runs (thread-safe).

    A fault applies to the host's next WS-Man requests whose action it covers, ``count`` times
    (None: until cleared or until ``seconds`` have passed). The NTLM handshake is never faulted,
    so a count is an exact number of WS-Man requests.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, dict[FaultKind, _Fault]] = {}

    def set(
        self,
        host: str,
        kind: FaultKind | str,
        *,
        count: int | None = 1,
        actions: Iterable[str] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Arm ``kind`` for ``host``, replacing an earlier fault of the same kind.

        ``actions`` limits it to some of :data:`ACTIONS` (default: all; for ``quota``, Create and
        Command). ``count=None`` with ``seconds`` makes a host misbehave for a while, as during a
        reboot.
        """
        kind = FaultKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for 'until cleared')")
        allowed = {"Create", "Command"} if kind is FaultKind.QUOTA else set(ACTIONS)
        chosen = set(actions) if actions is not None else allowed
        if not chosen or not chosen <= allowed:
            raise ValueError(f"{kind} faults apply to {sorted(allowed)}, not {sorted(chosen)}")
        until = time.monotonic() + seconds if seconds is not None else None
        with self._lock:
            self._faults.setdefault(host.lower(), {})[kind] = _Fault(
                kind, count, frozenset(chosen), until
            )

    def clear(self, host: str | None = None) -> None:
        """Remove the faults of one host, or of every host."""
        with self._lock:
            if host is None:
                self._faults.clear()
            else:
                self._faults.pop(host.lower(), None)

    def pending(self, host: str) -> dict[FaultKind, int | None]:
        """Armed faults of a host and how many requests each will still hit (None: no limit)."""
        now = time.monotonic()
        with self._lock:
            return {
                kind: fault.remaining
                for kind, fault in self._faults.get(host.lower(), {}).items()
                if fault.until is None or fault.until > now
            }

    def _take(self, host: str, action: str) -> FaultKind | None:
        now = time.monotonic()
        with self._lock:
            faults = self._faults.get(host, {})
            for kind, fault in list(faults.items()):
                if fault.until is not None and fault.until <= now:
                    del faults[kind]
                    continue
                if action not in fault.actions:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del faults[kind]
                return kind
        return None
