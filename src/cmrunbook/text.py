"""Text made safe to show: the one place where control characters from hosts and inventories
are made visible.

Much of what is printed or written comes from hosts (messages, log lines, status lines) or from
an inventory (host names): `printable` is applied for the terminal and for every plain-text file
(summary.txt, cmrunbook.log); the HTML, XML and Markdown writers apply it before their own
escaping. It is a base module because every layer that writes text uses it.
"""

from __future__ import annotations

import io
import re
from typing import TextIO, cast

#: What a terminal or a viewer would act on rather than show: C0 controls (ESC starts colour,
#: cursor and title sequences, CR returns over a line), DEL, C1 controls (0x9B is a one-byte
#: CSI), and the Unicode bidirectional controls that reorder what is shown.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: The same without the newline, for multi-line text: matching each line end only to put it
#: back cost more than the rest of a 10-MB dry run's escaping.
_CONTROLS_BUT_NEWLINE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str, *, lines: bool = True) -> str:
    """`text` with each control character shown as its escape (ESC as `\\x1b`), so that
    host output or an inventory value can neither move the cursor, recolour, retitle nor hide
    anything. Tabs stay; newlines stay when `lines` (multi-line text), else are escaped too."""

    return (_CONTROLS_BUT_NEWLINE if lines else _CONTROLS).sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    """A control character as its escape."""
    ch = m.group()
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


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


def printable_stream(stream: TextIO) -> TextIO:
    """`stream` behind a :class:`PrintableStream`, typed as the text stream it stands in for
    (a TextIOBase is one at run time; the typing module's TextIO is a separate nominal type)."""
    return cast(TextIO, PrintableStream(stream))
