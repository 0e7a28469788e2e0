"""The time the engine waits by: a real clock for runs, a manual one for in-process tests.

Every engine wait (a settle between two checks, a log poll, a restart) goes through
:meth:`Clock.sleep` with the run's stop event. Hosts work in worker threads, which never see
Ctrl-C themselves: the main thread catches it and sets the stop event, and a worker that slept
with ``time.sleep`` went on sleeping until its poll was over (10-15 s for a log wait, 5 s in a
restart wait). The real clock waits on the event in slices of at most a second, so that every
wait ends within a second of Ctrl-C, whichever thread it is in.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["SLICE", "Clock", "SystemClock"]

#: The longest a wait goes without looking at the stop event and letting Ctrl-C in.
SLICE = 1.0


class Clock(Protocol):
    """Monotonic seconds, and a sleep that a stop event ends early."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds``, or until ``stop`` is set; True when it was set."""
        ...


class SystemClock:
    """Real time: ``time.monotonic``, and sleeps cut into slices of at most :data:`SLICE`."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        end = time.monotonic() + seconds
        while True:
            if stop is not None and stop.is_set():
                return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            # Slices, not one long wait: a stop set by another thread is seen at once (the
            # event wakes the wait), and in the main thread Ctrl-C gets in between two slices
            # even where a platform's wait does not let signals in.
            if stop is not None:
                stop.wait(min(SLICE, remaining))
            else:
                time.sleep(min(SLICE, remaining))
