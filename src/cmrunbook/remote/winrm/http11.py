"""A small, strict HTTP/1.1 client for one keep-alive connection: what the NTLM channel needs.

http.client parses every reply's headers through the ``email`` package (a feed parser, a
``Message`` and its parameter lookups) and sends each header through its own checks: in a
profiled 1,000-host fan-out that was about a quarter of the engine's CPU per host, for replies
that carry four headers. This module writes a request in one piece and reads a reply with a few
``bytes`` operations, under the same bounds the channel set on http.client:

* one deadline for the whole reply: each read gets only the time left, so a peer that trickles
  a byte every few seconds is cut off (attack 4d);
* the status line and headers together at most ``MAX_HEAD`` bytes and ``MAX_HEADERS`` lines
  (http.client's limits: 64 KiB a line, 100 headers);
* a body at most ``limit`` bytes: a declared Content-Length or chunk size over it is refused
  before it is read, a body without a length is read up to it (attack 4e).

It is strict where a lenient reader would guess (RFC 9112): a status line that is not
``HTTP/1.x NNN``, a header line without a colon, a folded header, a transfer coding other than
``chunked``, a Content-Length that is not one number, or both framings at once, are refused.
Failures are the exceptions http.client raises in the same cases (``RemoteDisconnected``,
``BadStatusLine``, ``IncompleteRead``, ``HTTPException``), so the callers name them as before.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "Connection",
    "DeadlineError",
    "Reply",
    "ReplyTooLargeError",
    "header_lines",
]

#: Bytes of a reply's status line and headers, and the number of header lines, accepted.
MAX_HEAD = 64 * 1024
MAX_HEADERS = 100
#: Largest read from the socket at a time.
_READ = 256 * 1024
#: Interim (1xx) replies skipped before the final one; a peer sending more is refused.
_MAX_INTERIM = 8
_FORBIDDEN_IN_TARGET = bytes([*range(0x21), 0x7F])
_HEX = b"0123456789abcdefABCDEF"


class DeadlineError(TimeoutError):
    """A request and its reply, handshake included, took longer than the read timeout allows
    (the peer kept the connection busy, e.g. sending a byte every few seconds)."""


class ReplyTooLargeError(Exception):
    """A reply body over the cap: refused before it is held in memory."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One final reply: status, headers (names in lower case, repeats joined by ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        """A header's value by its lower-case name."""
        return self.headers.get(name, default)


class Connection:
    """One TCP connection, one request at a time. ``closed`` turns true when the reply said
    the connection ends (``Connection: close``, HTTP/1.0, or a body that runs to the end)."""

    def __init__(self, sock: socket.socket, host: str, port: int, target: str) -> None:
        """``target`` is the URL path every request names. It comes from the inventory, so a
        space or control character in it is refused here, as http.client refuses it: it would
        end the request line early and let the rest pass for headers."""
        raw = target.encode("ascii")
        if not raw.startswith(b"/") or raw.translate(None, _FORBIDDEN_IN_TARGET) != raw:
            raise http.client.InvalidURL(f"URL path {target!r} has a space or control character")
        self.sock = sock
        self.closed = False
        bracketed = f"[{host}]" if ":" in host else host
        self._start = b"POST %s HTTP/1.1\r\nHost: %s:%d\r\n" % (raw, bracketed.encode(), port)
        self._buffer = bytearray()
        self._deadline = 0.0
        self._received = 0

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def idle_bytes(self) -> bool:
        """True if bytes came that no request asked for (left over after the last reply)."""
        return bool(self._buffer)

    def exchange(self, headers: bytes, body: bytes, *, deadline: float, limit: int) -> Reply:
        """POST ``body`` and read the reply, all before ``deadline`` (monotonic time).

        ``headers`` are the request's header lines, each ending in CRLF, besides Host and
        Content-Length: the engine's own (see `header_lines`), never a peer's.
        """
        self._deadline, self._received = deadline, 0
        request = b"%s%sContent-Length: %d\r\n\r\n" % (self._start, headers, len(body))
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))  # bounds the send too
        self.sock.sendall(request + body)
        for _ in range(_MAX_INTERIM):
            status, version, fields = self._head()
            if not 100 <= status < 200:
                break
        else:
            raise http.client.HTTPException(f"over {_MAX_INTERIM} interim replies")
        if version == "HTTP/1.0" or "close" in _tokens(fields.get("connection", "")):
            self.closed = True
        return Reply(status, fields, self._body(status, fields, limit))

    # -- reading -----------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read what the peer sent next into the buffer, within the deadline; False at EOF."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineError("the reply was still incomplete at the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(_READ)
        except TimeoutError as exc:
            if self._received:
                raise DeadlineError("the reply was still incomplete at the deadline") from exc
            raise
        self._received += len(data)
        self._buffer += data
        return bool(data)

    def _take(self, count: int) -> bytes:
        """Exactly ``count`` bytes (the caller has checked ``count`` against the cap)."""
        while len(self._buffer) < count:
            if not self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise http.client.IncompleteRead(partial, count - len(partial))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _line(self, limit: int, what: str) -> bytes:
        """One CRLF-terminated line without its CRLF, at most ``limit`` bytes."""
        start = 0
        while (end := self._buffer.find(b"\r\n", start)) < 0:
            if len(self._buffer) > limit:
                raise http.client.LineTooLong(what)
            start = max(0, len(self._buffer) - 1)
            if not self._fill():
                raise http.client.IncompleteRead(bytes(self._buffer))
        if end > limit:
            raise http.client.LineTooLong(what)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _head(self) -> tuple[int, str, dict[str, str]]:
        """The status line and headers of one reply."""
        start = 0
        while (end := self._buffer.find(b"\r\n\r\n", start)) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise http.client.LineTooLong(f"reply head over {MAX_HEAD} bytes")
            start = max(0, len(self._buffer) - 3)
            if not self._fill():
                if not self._buffer:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response"
                    )
                raise http.client.IncompleteRead(bytes(self._buffer))
        if end > MAX_HEAD:
            raise http.client.LineTooLong(f"reply head over {MAX_HEAD} bytes")
        head = self._buffer[:end].decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or len(code) != 3
            or not code.isdigit()
            or not code.isascii()
            or rest[3:4] not in ("", " ")
        ):
            raise http.client.BadStatusLine(repr(status_line[:200]))
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        fields: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or line[0] in " \t":
                raise http.client.HTTPException(f"malformed header line {line[:80]!r}")
            key = name.lower()
            text = value.strip(" \t")
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        return int(code), version, fields

    def _body(self, status: int, fields: dict[str, str], limit: int) -> bytes:
        """The body as the headers frame it (RFC 9112 6.3), never more than ``limit`` bytes."""
        if status in (204, 304):
            return b""
        coding = fields.get("transfer-encoding")
        length = fields.get("content-length")
        if coding is not None:
            if length is not None or _tokens(coding) != ["chunked"]:
                raise http.client.HTTPException(
                    f"unsupported framing (Transfer-Encoding {coding[:40]!r}"
                    f"{', with a Content-Length' if length is not None else ''})"
                )
            return self._chunked(limit)
        if length is not None:
            if not length.isdigit() or not length.isascii():
                raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
            size = int(length)
            if size > limit:
                raise ReplyTooLargeError(f"the reply declares {size} bytes")
            return self._take(size)
        self.closed = True  # the body runs until the peer closes
        while len(self._buffer) <= limit:
            if not self._fill():
                break
        else:
            raise ReplyTooLargeError(f"the reply went on past {limit} bytes")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _chunked(self, limit: int) -> bytes:
        pieces: list[bytes] = []
        total = 0
        while True:
            size_text = self._line(1024, "chunk size line").split(b";", 1)[0].strip(b" \t")
            if not 0 < len(size_text) <= 16 or size_text.strip(_HEX):
                raise http.client.HTTPException(f"bad chunk size {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise ReplyTooLargeError(f"the reply went on past {limit} bytes")
            pieces.append(self._take(size))
            if self._take(2) != b"\r\n":
                raise http.client.HTTPException("chunk not followed by CRLF")
        trailer = 0
        while line := self._line(
            MAX_HEAD, "chunked trailer"
        ):  # trailers, ignored, bounded like a head
            trailer += len(line) + 2
            if trailer > MAX_HEAD:
                raise http.client.LineTooLong("chunked trailer")
        return b"".join(pieces)


def header_lines(*headers: tuple[str, str]) -> bytes:
    """Request header lines, encoded once: a channel sends the same few on every request."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")


def _tokens(value: str) -> list[str]:
    """A comma-separated header value as lower-case tokens."""
    return [token.strip().lower() for token in value.split(",") if token.strip()]
