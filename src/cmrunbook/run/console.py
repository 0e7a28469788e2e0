"""What a run prints: one line per step event; on a terminal, a live status line per host.

Unattended runs (no TTY) get plain, timestamped lines only, with wait progress throttled so a
30-minute log wait does not flood the scheduler's mail.

Much of what is printed comes from hosts (messages, log lines, status lines) or from an
inventory (host names): `printable` is the one place where their control characters are made
visible, for the terminal and for every plain-text file (summary.txt, cmrunbook.log); the HTML,
XML and Markdown writers apply it before their own escaping.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from datetime import datetime
from typing import TextIO

PROGRESS_EVERY = 30.0

#: What a terminal or a viewer would act on rather than show: C0 controls (ESC starts colour,
#: cursor and title sequences, CR returns over a line), DEL, C1 controls (0x9B is a one-byte
#: CSI), and the Unicode bidirectional controls that reorder what is shown.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, lines: bool = True) -> str:
    """`text` with each control character shown as its escape (ESC as `\\x1b`), so that
    host output or an inventory value can neither move the cursor, recolour, retitle nor hide
    anything. Tabs stay; newlines stay when `lines` (multi-line text), else are escaped too."""

    def escape(m: re.Match[str]) -> str:
        ch = m.group()
        if ch == "\n" and lines:
            return ch
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"

    return _CONTROLS.sub(escape, text)


class PrintableStream(io.TextIOBase):
    """A text stream that passes everything through `printable`: for writers that print many
    host- or inventory-derived values line by line (the dry run, diagnose)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


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
