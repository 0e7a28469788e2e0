"""Reading ConfigMgr logs as records, whatever shape they come in, without loading them whole.

A ConfigMgr log reaches an operator in one of four shapes, and `diagnose` and the log monitor
must read all of them the same way:

* ``cmtrace``: the CMTrace format of ConfigMgr 2007 clients and every later version,
  ``<![LOG[message]LOG]!><time="09:33:52.353+420" date="10-31-2013" component="TSManager"
  context="" type="1" thread="4856" file="bootimage.cpp:621">``, where the message may span
  several physical lines (only ``]LOG]!>`` closes it);
* ``sms2007``: the older site-server format, ``message  $$<component><date time><thread=N (0xN)>``;
* ``viewer``: lines copied out of the CMTrace viewer, as KB articles and forum posts quote them,
  ``message TSManager 10/31/2013 9:49:27 AM 3000 (0x0BB8)`` (tab- or space-separated);
* ``plain``: anything else that is text, one record per line.

In the two trailer formats (``sms2007``, ``viewer``) a message spanning several lines shows its
component, time and thread only on its last line, so lines without a trailer are held until the
line that closes them. Every record keeps the first and last physical line it came from, so a
person can find it in the file.

:class:`CMTraceStream` is the incremental core (feed text, get complete records, keep the partial
tail): the engine's log monitor feeds it appended text. :class:`LogReader` wraps it around a
binary file: it detects the encoding (UTF-8 with or without BOM, UTF-16 LE/BE, ANSI as a
fallback) and reads in chunks, so a 200 MB log costs a few megabytes of memory.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = [
    "FORMATS",
    "CMTraceStream",
    "LogFormat",
    "LogFormatError",
    "LogReader",
    "Record",
    "detect_encoding",
    "detect_format",
    "open_log",
    "parse_timestamp",
    "read_bytes",
    "read_text",
]

LogFormat = Literal["cmtrace", "sms2007", "viewer", "plain"]
FORMATS: tuple[LogFormat, ...] = ("cmtrace", "sms2007", "viewer", "plain")

#: Bytes read per chunk from a file.
CHUNK_BYTES = 1 << 20
#: Text looked at before the format is decided (or all of it, if the file is shorter).
DETECT_CHARS = 64 * 1024
#: A CMTrace record still open after this much text is not a record: it is emitted as text,
#: so that a file with a stray ``<![LOG[`` cannot make the reader hold the whole file.
MAX_RECORD_CHARS = 4 << 20
#: Lines held while waiting for a trailer line, before they are given up as plain lines.
MAX_PENDING_LINES = 500

_OPEN = "<![LOG["
_CLOSE = "]LOG]!>"
_ATTRS = re.compile(r'\s*<([^>"]*(?:"[^"]*"[^>"]*)*)>')
_ATTR = re.compile(r'(\w+)="([^"]*)"')

# sms2007: 'message  $$<SMS_EXECUTIVE><Thu Jan 15 13:22:45.078 2009 Eastern Standard Time>
#           <thread=3316 (0xCF4)>' (one line)
_SMS2007 = re.compile(
    r"^(?P<msg>.*?)\s*\$\$<(?P<comp>[^<>]*)><(?P<dt>[^<>]*)>"
    r"<thread=(?P<thread>\d+)(?: \(0x[0-9A-Fa-f]+\))?>\s*$"
)
# viewer: 'message<TAB or spaces>component<...>date time<...>3048 (0x0BE8)'
_THREAD_TAIL = re.compile(r"[ \t]+(?P<thread>\d+) \(0x(?P<hex>[0-9A-Fa-f]+)\)[ \t]*$")
_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:[ \t]*[AaPp]\.?[Mm]\.?)?(?:[+-]\d+)?"
# "datetime" is the placeholder KB articles print instead of a real date and time.
_DT = rf"(?:(?:{_DATE}[ \t]+)?{_TIME}|{_DATE}|datetime|date[ \t]+time)"
_VIEWER_TAB = re.compile(r"^(?P<msg>.*)\t(?P<comp>[^\t]*)\t(?P<dt>[^\t]*)$")
_VIEWER_SPACE = re.compile(
    rf"^(?P<msg>.*?)[ \t]+(?P<comp>[^\s]+)[ \t]+(?P<dt>{_DT})$", re.IGNORECASE
)
_ERROR_WORDS = re.compile(r"error|fail", re.IGNORECASE)
_WARNING_WORDS = re.compile(r"warn", re.IGNORECASE)


class LogFormatError(Exception):
    """The content is not a log this reader understands (binary, or not text at all)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One log entry: a message and what the log says about it.

    ``date`` and ``time`` are kept as written (``time`` may carry the CMTrace bias in minutes,
    ``+420``); :attr:`timestamp` parses them only when someone asks, because parsing every
    record of a 200 MB log would cost seconds for nothing. ``type`` is 1 (information),
    2 (warning) or 3 (error): written by CMTrace logs, and for the other formats inferred from the
    words "error"/"fail" and "warn" as the CMTrace viewer highlights them.
    """

    message: str
    component: str | None
    date: str | None
    time: str | None
    thread: int | None
    type: int
    first_line: int
    last_line: int
    source: str | None = None

    @property
    def when(self) -> str:
        """Date and time as the log wrote them, for display; empty when the log has none."""
        return " ".join(p for p in (self.date, self.time) if p)

    @property
    def timestamp(self) -> datetime | None:
        """The record's time, timezone-aware when the log gives a bias; None when unparsable."""
        return parse_timestamp(self.date, self.time)


def parse_timestamp(date: str | None, time: str | None) -> datetime | None:
    """Parse the date and time spellings the four formats use; None for placeholders."""
    if not time and not date:
        return None
    if date is None:
        # sms2007 and viewer give one field; split it back into date and time where possible.
        text = (time or "").strip()
    else:
        text = f"{date.strip()} {(time or '').strip()}".strip()
    tz: timezone | None = None
    bias = re.search(r"([+-])(\d{1,4})$", text)
    if bias and ":" in text:
        # CMTrace writes the bias in minutes with the sign of (UTC - local): +420 is UTC-7.
        minutes = int(bias.group(2)) * (1 if bias.group(1) == "+" else -1)
        tz = timezone(-timedelta(minutes=minutes))
        text = text[: bias.start()]
    # sms2007 ends with a time-zone name ("Eastern Standard Time"): no offset can be derived.
    text = re.sub(r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+", "", text)
    text = re.sub(r"(\d{4})\s+[A-Za-z][A-Za-z .()-]*$", r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"([.,]\d{6})\d+", r"\1", text)
    for fmt in _TIMESTAMP_FORMATS:
        try:
            value = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return value.replace(tzinfo=tz) if tz else value
    return None


_TIMESTAMP_FORMATS = (
    "%m-%d-%Y %H:%M:%S.%f",
    "%m-%d-%Y %H:%M:%S",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M:%S.%f %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S.%f",
    "%b %d %H:%M:%S.%f %Y",
    "%b %d %H:%M:%S %Y",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S.%f",
)


def _inferred_type(message: str) -> int:
    if _ERROR_WORDS.search(message):
        return 3
    if _WARNING_WORDS.search(message):
        return 2
    return 1


def _split_dt(dt: str) -> tuple[str | None, str | None]:
    """'10/31/2013 9:49:27 AM' -> ('10/31/2013', '9:49:27 AM'); a placeholder stays as time."""
    m = re.match(rf"^({_DATE})[ \t]+(.+)$", dt.strip())
    if m:
        return m.group(1), m.group(2)
    return None, dt.strip() or None


def _trailer(line: str) -> tuple[str, str, str | None, str | None, int] | None:
    """(message, component, date, time, thread) when `line` ends with a trailer, else None."""
    if "$$<" in line:
        m = _SMS2007.match(line)
        if m:
            msg = m.group("msg")
            # 2007 server logs end each message with '~' and write line breaks inside it as '~'.
            msg = msg.rstrip().removesuffix("~").replace("~", "\n").rstrip()
            return msg, m.group("comp"), None, m.group("dt").strip() or None, int(m.group("thread"))
    tail = _THREAD_TAIL.search(line)
    if tail is None or int(tail.group("thread")) != int(tail.group("hex"), 16):
        # The thread is written twice, decimal and hex: the two must agree, which keeps an
        # ordinary sentence ending in "12 (0x1)" from being taken for a trailer.
        return None
    head = line[: tail.start()]
    m = _VIEWER_TAB.match(head)
    if m is None or "\t" not in head:
        m = _VIEWER_SPACE.match(head)
    if m is None:
        return None
    date, time = _split_dt(m.group("dt"))
    return m.group("msg").rstrip(), m.group("comp"), date, time, int(tail.group("thread"))


def detect_format(sample: str) -> LogFormat:
    """The format of a log from its first lines (a few kilobytes are enough)."""
    if _OPEN in sample:
        return "cmtrace"
    lines = sample.splitlines()[:200]
    if any("$$<" in ln and _SMS2007.match(ln) for ln in lines):
        return "sms2007"
    if any(_trailer(ln) for ln in lines):
        return "viewer"
    return "plain"


def _looks_binary(sample: str) -> bool:
    """NULs or many control characters: not a log, whatever its name says."""
    if not sample:
        return False
    if "\x00" in sample:
        return True
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b")
    replaced = sample.count("\ufffd")
    return (controls + replaced) / len(sample) > 0.05


class CMTraceStream:
    """Split log text into records incrementally: feed text, get the records it completed.

    Text that may still grow (an open CMTrace record, a line without its newline, lines waiting
    for their trailer) is kept until the next :meth:`feed`, and given up by :meth:`flush` at the
    end of the input. With ``fmt=None`` the format is detected from the first text fed (up to
    64 KB are gathered first). Line numbers count from ``first_line`` (1 for a whole file; the
    log monitor passes the line where its appended text begins, if it knows it).

    ``feed_bytes`` accepts raw bytes instead and decodes them incrementally (a multi-byte
    character split between two reads is kept), with the encoding detected from the first bytes
    unless given.
    """

    def __init__(
        self, fmt: LogFormat | None = None, *, first_line: int = 1, encoding: str | None = None
    ) -> None:
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.format: LogFormat | None = fmt
        self.encoding = encoding
        self._buf = ""
        self._line = first_line  # physical line number of the first character of _buf
        self._cr = False  # the last text fed ended with '\r' (a '\n' may follow)
        self._pending: list[tuple[int, str]] = []  # trailer formats: lines awaiting their trailer
        self._decoder: codecs.IncrementalDecoder | None = None
        self._head = b""
        self.records = 0

    # -- public ------------------------------------------------------------------------------

    def feed(self, text: str, *, detect_now: bool = False) -> list[Record]:
        """Add text; return every record it completed, in order.

        ``detect_now`` decides the format from what has arrived, without waiting for 64 KB: a
        log monitor reads a few appended lines per poll and cannot wait for more.
        """
        if not text:
            return []
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        self._buf += text.replace("\r\n", "\n").replace("\r", "\n")
        if self.format is None:
            if len(self._buf) < DETECT_CHARS and not detect_now:
                return []
            self._detect()
        return self._drain(final=False)

    def feed_bytes(self, data: bytes, *, detect_now: bool = False) -> list[Record]:
        """Add raw bytes of the log; the encoding is detected from the first bytes if not given.

        ``detect_now`` is passed on to :meth:`feed` (for the format; the encoding still needs
        the first 4 bytes).
        """
        if self._decoder is None:
            self._head += data
            if self.encoding is None and len(self._head) < 4:
                return []
            if self.encoding is None:
                self.encoding = detect_encoding(self._head)
            self._decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
            data, self._head = self._head, b""
        return self.feed(self._decoder.decode(data), detect_now=detect_now)

    def flush(self) -> list[Record]:
        """End of input: everything still held becomes records (an unclosed record as text)."""
        out: list[Record] = []
        if self._decoder is None and self._head:
            self.encoding = self.encoding or detect_encoding(self._head)
            self._decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
            out += self.feed(self._decoder.decode(self._head))
            self._head = b""
        if self._decoder is not None:
            out += self.feed(self._decoder.decode(b"", final=True))
        if self.format is None:
            self._detect()
        out += self._drain(final=True)
        return out

    @property
    def line(self) -> int:
        """The physical line the next text fed continues (lines read so far + 1)."""
        return self._line + self._buf.count("\n")

    # -- internals ---------------------------------------------------------------------------

    def decide_format(self) -> None:
        """Decide the format now, from the text fed so far (for input shorter than 64 KB)."""
        self._detect()

    def _detect(self) -> None:
        sample = self._buf[:DETECT_CHARS]
        if _looks_binary(sample):
            raise LogFormatError("content is binary (NUL or control characters), not a log")
        self.format = detect_format(sample)

    def _drain(self, *, final: bool) -> list[Record]:
        out: list[Record] = []
        if self.format == "cmtrace":
            self._drain_cmtrace(out, final)
        else:
            self._drain_lines(out, final)
        self.records += len(out)
        return out

    def _drain_cmtrace(self, out: list[Record], final: bool) -> None:
        buf = self._buf
        pos = 0
        line = self._line
        while True:
            start = buf.find(_OPEN, pos)
            if start < 0:
                # No record starts in what is left: keep at most a partial '<![LOG[' at the end.
                keep = len(buf) if final else max(pos, len(buf) - len(_OPEN) + 1)
                if not final:
                    nl = buf.rfind("\n", pos, keep)
                    keep = nl + 1 if nl >= 0 else pos
                line = self._stray(out, buf, pos, keep, line)
                pos = keep
                break
            line = self._stray(out, buf, pos, start, line)
            close = buf.find(_CLOSE, start + len(_OPEN))
            if close < 0:
                if not final and len(buf) - start < MAX_RECORD_CHARS:
                    pos = start  # the record is still being written: wait for more text
                    break
                # Never closed (end of input, or larger than any real record): its first line
                # is text, and scanning goes on after it.
                end = buf.find("\n", start)
                end = len(buf) if end < 0 else end + 1
                line = self._stray(out, buf, start, end, line, force=True)
                pos = end
                continue
            attrs = _ATTRS.match(buf, close + len(_CLOSE))
            if attrs is None and not final and buf.find(">", close + len(_CLOSE)) < 0:
                pos = start  # the attributes are still being written
                break
            message = buf[start + len(_OPEN) : close]
            stop = attrs.end() if attrs else close + len(_CLOSE)
            fields = dict(_ATTR.findall(attrs.group(1))) if attrs else {}
            first = line
            last = line + buf.count("\n", start, stop)
            try:
                kind = int(fields.get("type", "1") or 1)
            except ValueError:
                kind = 1
            thread = fields.get("thread", "")
            out.append(
                Record(
                    message=message,
                    component=fields.get("component") or None,
                    date=fields.get("date") or None,
                    time=fields.get("time") or None,
                    thread=int(thread) if thread.isdigit() else None,
                    type=kind if kind in (1, 2, 3) else 1,
                    first_line=first,
                    last_line=last,
                    source=fields.get("file") or None,
                )
            )
            line = last
            pos = stop
        self._buf = buf[pos:]
        self._line = line

    def _stray(
        self, out: list[Record], buf: str, start: int, end: int, line: int, *, force: bool = False
    ) -> int:
        """Text between CMTrace records: blank in a healthy log; otherwise one record per line."""
        if start >= end:
            return line
        chunk = buf[start:end]
        if not force and not chunk.strip():
            return line + chunk.count("\n")
        for i, text in enumerate(chunk.split("\n")):
            if text.strip():
                out.append(_plain(text, line + i))
        return line + chunk.count("\n")

    def _drain_lines(self, out: list[Record], final: bool) -> None:
        buf = self._buf
        end = len(buf) if final else buf.rfind("\n") + 1
        if end <= 0 and not final:
            return
        complete = buf[:end]
        self._buf = buf[end:]
        lines = complete.split("\n")
        if complete.endswith("\n"):
            lines.pop()
        line = self._line
        for i, text in enumerate(lines):
            number = line + i
            if _OPEN in text and self.format != "cmtrace":
                # A CMTrace record in a line-based file (e.g. lines appended by a newer
                # component): from here on the text is read as CMTrace.
                self._give_up_pending(out)
                self.format = "cmtrace"
                rest = "\n".join(lines[i:]) + ("\n" if complete.endswith("\n") else "")
                self._buf = rest + self._buf
                self._line = number
                self._drain_cmtrace(out, final)
                return
            self._line_record(out, text, number)
        self._line = line + complete.count("\n")
        if final:
            self._give_up_pending(out)

    def _line_record(self, out: list[Record], text: str, number: int) -> None:
        if self.format == "plain":
            if text.strip():
                out.append(_plain(text, number))
            return
        parsed = _trailer(text)
        if parsed is None:
            if not text.strip():
                self._give_up_pending(out)
                return
            self._pending.append((number, text))
            if len(self._pending) > MAX_PENDING_LINES:
                self._give_up_pending(out)
            return
        msg, comp, date, time, thread = parsed
        first = number
        if self._pending:
            first = self._pending[0][0]
            msg = "\n".join([*(t for _, t in self._pending), msg])
            self._pending = []
        out.append(
            Record(
                message=msg,
                component=comp or None,
                date=date,
                time=time,
                thread=thread,
                type=_inferred_type(msg),
                first_line=first,
                last_line=number,
            )
        )

    def _give_up_pending(self, out: list[Record]) -> None:
        """Lines that never got a trailer are plain lines after all."""
        out.extend(_plain(text, number) for number, text in self._pending)
        self._pending = []


def _plain(text: str, number: int) -> Record:
    message = text.rstrip()
    return Record(
        message=message,
        component=None,
        date=None,
        time=None,
        thread=None,
        type=_inferred_type(message),
        first_line=number,
        last_line=number,
    )


def detect_encoding(head: bytes) -> str:
    """The encoding of a log from its first bytes: BOM, else the NUL pattern of UTF-16, else UTF-8.

    Logs fetched as a tail (no BOM) are UTF-16 when every other byte is NUL; ConfigMgr writes
    some logs (and a few 2007 ones) that way.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16"
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 4:
        even = sample[0::2]
        odd = sample[1::2]
        if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.1 * len(even):
            return "utf-16-le"
        if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.1 * len(odd):
            return "utf-16-be"
    return "utf-8"


class LogReader:
    """A log file (or any binary stream) read as records, in chunks.

    The format and encoding are known once the first chunk is read (:meth:`open` does that
    eagerly, so that a binary file fails before any output). Iterating yields
    :class:`Record` objects; :attr:`lines` is the count of physical lines read so far.
    """

    def __init__(self, stream: BinaryIO, name: str, *, fmt: LogFormat | None = None) -> None:
        self.name = name
        self._raw = stream
        head = stream.read(CHUNK_BYTES)
        self.encoding = detect_encoding(head)
        if self.encoding == "utf-8" and not _decodes(head, "utf-8"):
            # Not UTF-8: an ANSI (Windows-1252) log from an older or localised system.
            self.encoding = "cp1252"
        self._stream = CMTraceStream(fmt, encoding=self.encoding)
        self._first = self._stream.feed_bytes(head)
        if self._stream.format is None:
            # Shorter than the detection window: decide now, from all there is.
            self._stream.decide_format()
        self.format: LogFormat = self._stream.format or "plain"
        self.bytes_read = len(head)
        self._done = not head

    @property
    def lines(self) -> int:
        """Physical lines read so far (the whole file's count once iteration has ended)."""
        return max(0, self._stream.line - 1)

    @property
    def records(self) -> int:
        return self._stream.records

    def __iter__(self) -> Iterator[Record]:
        yield from self._first
        self._first = []
        while not self._done:
            data = self._raw.read(CHUNK_BYTES)
            if not data:
                break
            self.bytes_read += len(data)
            yield from self._stream.feed_bytes(data)
        self._done = True
        yield from self._stream.flush()


def _decodes(data: bytes, encoding: str) -> bool:
    """Whether `data` is valid in `encoding`, forgiving a character cut at the end."""
    try:
        codecs.getincrementaldecoder(encoding)().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def open_log(path: str | Path, *, fmt: LogFormat | None = None) -> LogReader:
    """Open a log file for reading as records; raises LogFormatError for binary content and
    OSError when the file cannot be read."""
    p = Path(path)
    f = p.open("rb")
    try:
        return LogReader(f, str(p), fmt=fmt)
    except BaseException:
        f.close()
        raise


def read_text(text: str, fmt: LogFormat | None = None) -> list[Record]:
    """All records of a string (for tests and short snippets)."""
    stream = CMTraceStream(fmt)
    return stream.feed(text) + stream.flush()


def read_bytes(data: bytes, name: str = "<bytes>") -> LogReader:
    """A reader over bytes already in memory, e.g. a log fetched over WinRM."""
    return LogReader(io.BytesIO(data), name)
