"""Faults a simulated host suffers on purpose: from the lab file, or set by a test while it runs.

Host-level only (a failed log line, a reboot mid-step, a failing script); protocol faults (refused
connections, HTTP 500, timeouts) belong to the WS-Management layer.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterable
from typing import Any

from cmrunbook_lab.labfile import FaultSpec


class FaultBook:
    """Armed faults, consumed as they fire (a fault with `count: null` never runs out)."""

    def __init__(self, initial: Iterable[FaultSpec] = ()) -> None:
        self._lock = threading.Lock()
        self._armed: list[list[Any]] = [[f, f.count] for f in initial]

    def add(self, fault: FaultSpec | None = None, **fields: Any) -> FaultSpec:
        """Arm a fault: `add(FaultSpec(...))` or `add(host=..., kind=..., ...)`."""
        spec = fault or FaultSpec(**fields)
        with self._lock:
            self._armed.append([spec, spec.count])
        return spec

    def take(
        self,
        host: str,
        kinds: Iterable[str],
        *,
        step: str | None = None,
        log: str | None = None,
        operation: str | None = None,
        role: str | None = None,
        package_id: str | None = None,
    ) -> FaultSpec | None:
        """The first armed fault that matches, consumed once; None if none matches."""
        wanted = set(kinds)
        with self._lock:
            for entry in self._armed:
                f: FaultSpec = entry[0]
                if f.host.lower() != host.lower() or f.kind not in wanted:
                    continue
                if f.step and not (step and fnmatch.fnmatchcase(step, f.step)):
                    continue
                if f.log and log and f.log.lower() != log.lower():
                    continue
                if operation and f.operation not in ("any", operation):
                    continue
                if role and f.role not in ("any", role):
                    continue
                if package_id and f.package_id and f.package_id.upper() != package_id.upper():
                    continue
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._armed.remove(entry)
                return f
        return None
