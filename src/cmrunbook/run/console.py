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
import select
import shlex
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
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


def resume_command(runbook: str, run_dir: Path, *flags: str) -> str:
    """The command that continues a run, quoted so that it works as printed (a run folder
    under a path with spaces or quotes stays one argument)."""
    return shlex.join(["invoke", "remediate", runbook, *flags, "--resume", str(run_dir)])


class TextConsole:
    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if interactive is None else interactive
        #: Set when the run is being stopped (Ctrl-C): a question waiting for its answer in a
        #: host's thread gives up, so that the host can stop rather than hold the run open.
        self.stopping = threading.Event()
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
        """Ask on the terminal; only "y" or "yes" is a yes. No answer (end of input, or the
        run stopped while it waited) is a no: the caller checks whether the run is stopping."""
        with self._lock:
            self._clear()
            print(printable(question) + " [y/N] ", end="", file=self.stream, flush=True)
        answer = self._answer()
        if answer is None:
            print(file=self.stream, flush=True)  # end the question's line
            return False
        return answer.strip().lower() in ("y", "yes")

    def _answer(self) -> str | None:
        """A line from stdin, or None once `stopping` is set. On a terminal it waits in short
        slices, so that Ctrl-C reaches the main thread at once and a host's thread sees the
        stop; a terminal hands over one line per read, so none waits unseen in stdin's buffer.
        Piped answers (several lines may be buffered at once) are read as they come."""
        if not sys.stdin.isatty():
            return sys.stdin.readline()
        while not self.stopping.is_set():
            if select.select([sys.stdin], [], [], 0.1)[0]:
                return sys.stdin.readline()
        return None

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
