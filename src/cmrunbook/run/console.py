"""What a run prints: one line per step event; on a terminal, a live status line per host.

Unattended runs (no TTY) get plain, timestamped lines only, with wait progress throttled so a
30-minute log wait does not flood the scheduler's mail.

Everything shown passes through `cmrunbook.text.printable`: much of it comes from hosts or from
an inventory.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from typing import TextIO

from cmrunbook.text import printable

PROGRESS_EVERY = 30.0


class TextConsole:
    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self._status: dict[str, str] = {}
        self._last_progress: dict[str, float] = {}

    def step(self, host: str, text: str) -> None:
        with self._lock:
            self._clear()
            stamp = datetime.now().strftime("%H:%M:%S")
            print(f"{stamp} {printable(host, lines=False):<16} {printable(text)}",
                  file=self.stream, flush=True)  # fmt: skip
            self._status.pop(host, None)
            self._draw()

    def progress(self, host: str, text: str) -> None:
        with self._lock:
            host, text = printable(host, lines=False), printable(text, lines=False)
            if self.tty:
                self._status[host] = text
                self._clear()
                self._draw()
                return
            now = time.monotonic()
            if now - self._last_progress.get(host, 0.0) >= PROGRESS_EVERY:
                self._last_progress[host] = now
                stamp = datetime.now().strftime("%H:%M:%S")
                print(f"{stamp} {host:<16} ... {text}", file=self.stream, flush=True)

    def confirm(self, question: str) -> bool:
        with self._lock:
            self._clear()
            print(printable(question) + " [y/N] ", end="", file=self.stream, flush=True)
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    def _clear(self) -> None:
        if self.tty and self._status:
            self.stream.write("\r\033[K")

    def _draw(self) -> None:
        if self.tty and self._status:
            line = " | ".join(f"{h}: {t}" for h, t in sorted(self._status.items()))
            self.stream.write(line[:200])
            self.stream.flush()

    def print(self, text: str = "") -> None:
        with self._lock:
            self._clear()
            print(printable(text), file=self.stream, flush=True)
            self._draw()
