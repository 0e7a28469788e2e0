"""Turn PowerShell's CLIXML stderr (``#< CLIXML``) into text a person can read.

When powershell.exe runs with redirected output (as it does under WinRM), it writes its error,
warning, verbose and progress streams to stderr as serialized objects::

    #< CLIXML
    <Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">
      <Obj S="progress" RefId="0">...</Obj>
      <S S="Error">boom_x000D__x000A_</S><S S="Error">At line:3 char:1_x000D__x000A_</S>...

Shown raw, that hides the one line that matters. This module keeps each error record's message
(one record per line, with its script position when PowerShell gave one), prefixes warnings and
verbose/debug messages as the console would, drops progress records, and undoes the ``_xHHHH_``
escapes PowerShell uses for characters XML cannot carry (``_x000D__x000A_`` is CRLF).
Anything that is not CLIXML, or does not parse, is returned unchanged: a decoder must never
lose an error message.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

__all__ = ["MARKER", "Message", "is_clixml", "messages", "to_text", "unescape"]

MARKER = "#< CLIXML"
_MARKER_LINE = re.compile(r"#< CLIXML\r?\n?")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_POSITION = re.compile(r"^At (?:line:(?P<line>\d+)|.*:(?P<fileline>\d+)) char:(?P<char>\d+)\s*$")
_PREFIXES = {"warning": "WARNING: ", "verbose": "VERBOSE: ", "debug": "DEBUG: "}


@dataclass(frozen=True)
class Message:
    """One message from a PowerShell stream: ``stream`` is error, warning, verbose, debug,
    information or text (stderr that was not CLIXML at all)."""

    stream: str
    text: str


def is_clixml(data: str) -> bool:
    """True if stderr holds CLIXML (PowerShell puts the marker first)."""
    return data.lstrip().startswith(MARKER)


def unescape(text: str) -> str:
    """Undo PowerShell's XML escapes (``_x000D__x000A_`` -> CRLF, ``_x005F_`` -> ``_``, and
    surrogate pairs written as two escapes)."""
    if "_x" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def to_text(data: str) -> str:
    """Readable text for stderr: CLIXML decoded, anything else returned as it is."""
    if not is_clixml(data):
        return data
    decoded = messages(data)
    if decoded is None:
        return data
    return "\n".join(
        _PREFIXES.get(message.stream, "") + message.text for message in decoded if message.text
    )


def messages(data: str) -> list[Message] | None:
    """The messages in CLIXML stderr, in order; None if it is not CLIXML or does not parse.

    stderr can hold several CLIXML documents (one per PowerShell process that wrote to it) and
    plain text between them (a native command's own stderr); both are kept in order.
    """
    if not is_clixml(data):
        return None
    result: list[Message] = []
    for index, chunk in enumerate(_MARKER_LINE.split(data)):
        if index == 0:
            _plain(chunk, result)
            continue
        end = chunk.find("</Objs>")
        if end < 0:
            return None
        try:
            root = ET.fromstring(chunk[: end + len("</Objs>")])
        except ET.ParseError:
            return None
        result.extend(_from_objects(root))
        _plain(chunk[end + len("</Objs>") :], result)
    return result


def _plain(text: str, into: list[Message]) -> None:
    for line in text.splitlines():
        if line.strip():
            into.append(Message("text", line.rstrip()))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _from_objects(root: ET.Element) -> list[Message]:
    """Walk ``<Objs>``: gather consecutive strings of one stream, then split them into messages."""
    result: list[Message] = []
    stream: str | None = None
    pending: list[str] = []

    def flush() -> None:
        if stream is not None and pending:
            result.extend(_split(stream, unescape("".join(pending))))
        pending.clear()

    for element in root:
        kind = (element.get("S") or "").lower()
        tag = _local(element.tag)
        if tag == "S" and kind and kind != "progress":
            if kind != stream:
                flush()
                stream = kind
            pending.append(element.text or "")
        elif tag == "Obj" and kind == "error":
            flush()
            stream = None
            text = _error_object_text(element)
            if text:
                result.append(Message("error", text))
    flush()
    return result


def _split(stream: str, text: str) -> list[Message]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if stream != "error":
        return [Message(stream, line.rstrip()) for line in lines if line.strip()]
    # The console's error view: message lines, "At line:N char:M", "+ code", "+ ~~~",
    # "    + CategoryInfo ...", "    + FullyQualifiedErrorId ...", then a blank line.
    records: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            records[-1].append(line.rstrip())
        elif records[-1]:
            records.append([])
    return [Message("error", _error_record(record)) for record in records if record]


def _error_record(lines: list[str]) -> str:
    message: list[str] = []
    location = ""
    for line in lines:
        position = _POSITION.match(line)
        if position:
            row = position.group("line") or position.group("fileline")
            location = f" (line {row}, char {position.group('char')})"
            break
        if line.lstrip().startswith("+ "):
            break
        message.append(line.strip())
    if not message:
        return lines[0].strip()
    return " ".join(message) + location


def _error_object_text(element: ET.Element) -> str:
    """A serialized ErrorRecord (``<Obj S="Error">``): its ToString, else its exception message."""
    for child in element.iter():
        if _local(child.tag) == "ToString" and child.text:
            return unescape(child.text).strip()
    for child in element.iter():
        if child.get("N") in ("Message", "ErrorDetails_Message") and child.text:
            return unescape(child.text).strip()
    return ""
