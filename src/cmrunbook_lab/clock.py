"""Time in the lab: a clock that tests can drive, and a queue of things due later.

Delayed effects (a role's setup log lines a minute after the commit, a host coming back after a
restart) are events with a due time. They are applied lazily, whenever anything looks at the
lab, in due order and stamped with their due time, so the result does not depend on how often
anyone polls, and a test with a `ManualClock` needs no sleeping at all.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


class SiteClock:
    """Real time: monotonic for ordering, wall time for log stamps."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = datetime.now(UTC)

    def now(self) -> float:
        return time.monotonic() - self._mono0

    def wall(self, at: float | None = None) -> datetime:
        """The wall-clock time of lab time `at` (default now), in UTC."""
        return self._wall0 + timedelta(seconds=self.now() if at is None else at)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Block up to `seconds` of real time; True if the event was set."""
        return event.wait(max(0.0, seconds))


class ManualClock(SiteClock):
    """A clock that moves only when told to: `advance(seconds)`."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__()
        self._t = 0.0
        self._wall0 = start or datetime(2026, 11, 21, 9, 30, 0, tzinfo=UTC)

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        # Real waiting would never move this clock; report at once what is already true.
        return event.is_set()


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    action: Callable[[float], None] = field(compare=False)
    tag: str = field(compare=False, default="")
    cancelled: bool = field(compare=False, default=False)


class Schedule:
    """Events due at lab times; `run_due()` applies those whose time has come, in order."""

    def __init__(self, clock: SiteClock) -> None:
        self.clock = clock
        self._heap: list[_Due] = []
        self._seq = itertools.count()

    def at(self, when: float, action: Callable[[float], None], tag: str = "") -> _Due:
        """Run `action(due_time)` once the clock reaches `when`."""
        due = _Due(when, next(self._seq), action, tag)
        heapq.heappush(self._heap, due)
        return due

    def cancel(self, tag: str) -> int:
        """Cancel every pending event with this tag; returns how many."""
        n = 0
        for due in self._heap:
            if due.tag == tag and not due.cancelled:
                due.cancelled = True
                n += 1
        return n

    def pending(self, tag_prefix: str = "") -> list[tuple[float, str]]:
        return sorted(
            (d.at, d.tag) for d in self._heap if not d.cancelled and d.tag.startswith(tag_prefix)
        )

    def run_due(self) -> int:
        """Apply every event due by now (events may schedule more; those run too if due)."""
        now = self.clock.now()
        ran = 0
        while self._heap and self._heap[0].at <= now:
            due = heapq.heappop(self._heap)
            if not due.cancelled:
                due.action(due.at)
                ran += 1
        return ran


def dmtf(when: datetime) -> str:
    """A WMI (DMTF) datetime of a UTC time, as Windows and the SMS Provider return it."""
    return when.strftime("%Y%m%d%H%M%S.") + f"{when.microsecond:06d}+000"
