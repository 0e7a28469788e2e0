"""The lab's side of WinRM message encryption: [MS-WSMV] 2.2.9.1.1 over an NTLM acceptor.

After NTLM authenticates a connection, every SOAP message on it travels sealed in a
``multipart/encrypted`` body of two MIME parts separated by the boundary the Content-Type names:

* a part of type ``application/HTTP-SPNEGO-session-encrypted`` whose ``OriginalContent`` header
  gives the plain message's type and ``Length``;
* a part of type ``application/octet-stream``: a 32-bit little-endian signature length, the
  signature (16 bytes for NTLM), then the sealed message;

and the body ends with the closing boundary. This module is written from the specification and
from the acceptor's ``wrap_winrm``/``unwrap_winrm`` (signature and sealed bytes apart), not from
the engine's channel, so a framing mistake on one end of the lab's wire cannot hide behind the
same mistake on the other; tests check both sides against pywinrm's own ``Encryption``.
NTLM sealing is an RC4 stream with sequence numbers: messages must be sealed and unsealed in the
order they travel on the connection.
"""

from __future__ import annotations

import re
import struct

import spnego
import spnego.exceptions

__all__ = ["REPLY_CONTENT_TYPE", "SealingError", "is_encrypted", "seal_reply", "unseal_request"]

_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
_BOUNDARY = "Encrypted Boundary"  # what Windows and pywinrm use
REPLY_CONTENT_TYPE = f'multipart/encrypted;protocol="{_PROTOCOL}";boundary="{_BOUNDARY}"'
_PARAMETER = re.compile(r';\s*(?P<name>[A-Za-z]+)\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^;]*))')
_LENGTH = re.compile(rb"(?:^|;)\s*Length=(?P<length>\d+)\s*(?:;|$)", re.IGNORECASE)


class SealingError(Exception):
    """A request body is not a well-formed sealed message, or it fails its signature."""


def _parameters(content_type: str) -> dict[str, str]:
    """The ``name=value`` parameters of a Content-Type, names in lower case."""
    return {
        m["name"].lower(): (m["quoted"] if m["quoted"] is not None else m["bare"].strip())
        for m in _PARAMETER.finditer(content_type)
    }


def is_encrypted(content_type: str) -> bool:
    """True when a Content-Type announces a body sealed by an SPNEGO/NTLM session."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "multipart/encrypted" and _parameters(content_type).get("protocol") == (
        _PROTOCOL
    )


def _headers(block: bytes) -> tuple[dict[str, bytes], bytes]:
    """A MIME part's headers (names in lower case) and what follows the last header line.

    In WinRM's framing each header line is indented by a tab and ends in CRLF; the content of the
    octet-stream part follows its header line directly, with no blank line.
    """
    headers: dict[str, bytes] = {}
    rest = block
    while rest[:1] in (b"\t", b" "):
        line, sep, after = rest.partition(b"\r\n")
        if not sep:
            raise SealingError("a MIME part header does not end in CRLF")
        name, colon, value = line.strip().partition(b":")
        if not colon:
            raise SealingError(f"not a MIME header: {line[:40]!r}")
        headers[name.decode("ascii", "replace").lower()] = value.strip()
        rest = after
        if name.lower() == b"content-type" and value.strip() == b"application/octet-stream":
            break  # the sealed bytes follow, and may start with any byte
    return headers, rest


def unseal_request(context: spnego.ContextProxy, body: bytes, content_type: str) -> bytes:
    """The plain SOAP message of a sealed request; SealingError if it is none or was altered."""
    if not is_encrypted(content_type):
        raise SealingError(f"expected an encrypted body, got Content-Type {content_type!r}")
    boundary = _parameters(content_type).get("boundary", "").encode("ascii", "replace")
    if not boundary:
        raise SealingError("the Content-Type names no MIME boundary")
    delimiter = b"--" + boundary + b"\r\n"
    closing = b"--" + boundary + b"--\r\n"
    if not body.startswith(delimiter) or not body.endswith(closing):
        raise SealingError("the body does not open and close with the MIME boundary")
    inner = body[len(delimiter) : -len(closing)]
    head_part, sep, data_part = inner.partition(delimiter)
    if not sep:
        raise SealingError("expected 2 MIME parts, found 1")
    head, _ = _headers(head_part)
    if head.get("content-type") != _PROTOCOL.encode():
        raise SealingError("the first MIME part is not the session-encrypted header part")
    declared = _LENGTH.search(head.get("originalcontent", b""))
    if declared is None:
        raise SealingError("OriginalContent has no Length")
    octets, payload = _headers(data_part)
    if octets.get("content-type") != b"application/octet-stream":
        raise SealingError("the second MIME part is not application/octet-stream")
    if len(payload) < 4:
        raise SealingError("the sealed payload is shorter than its signature length")
    (signature_length,) = struct.unpack("<I", payload[:4])
    if not 0 < signature_length <= len(payload) - 4:
        raise SealingError(f"signature length {signature_length} does not fit the payload")
    signature = payload[4 : 4 + signature_length]
    try:
        message = context.unwrap_winrm(signature, payload[4 + signature_length :])
    except spnego.exceptions.SpnegoError as exc:
        raise SealingError(f"the message could not be unsealed: {exc}") from exc
    length = int(declared["length"])
    if len(message) != length:
        raise SealingError(f"the message is {len(message)} bytes, OriginalContent says {length}")
    return message


def seal_reply(context: spnego.ContextProxy, message: bytes) -> bytes:
    """``message`` sealed with the connection's keys, framed as a reply (REPLY_CONTENT_TYPE)."""
    wrapped = context.wrap_winrm(message)
    delimiter = f"--{_BOUNDARY}\r\n".encode()
    return b"".join(
        [
            delimiter,
            f"\tContent-Type: {_PROTOCOL}\r\n".encode(),
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;"
            + f"Length={len(message)}\r\n".encode(),
            delimiter,
            b"\tContent-Type: application/octet-stream\r\n",
            struct.pack("<I", len(wrapped.header)),
            wrapped.header,
            wrapped.data,
            f"--{_BOUNDARY}--\r\n".encode(),
        ]
    )
