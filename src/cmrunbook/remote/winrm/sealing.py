"""WinRM message encryption over HTTP: the ``multipart/encrypted`` body of [MS-WSMV] 2.2.9.1.1.

After NTLM authenticates a TCP connection, each SOAP message on it travels sealed with that
connection's keys, in a two-part MIME body: a header part that declares the plain length, and an
octet-stream part holding the signature length, the 16-byte signature and the sealed bytes. The
engine's channel uses these functions; the lab frames its side of the wire with its own code, and
both are checked against pywinrm's own ``Encryption`` class in the tests.

The order of messages matters: NTLM sealing is an RC4 stream with sequence numbers, so each
side must seal and unseal in the order the messages travel.
"""

from __future__ import annotations

import struct

import spnego
import spnego.exceptions

__all__ = [
    "ENCRYPTED_CONTENT_TYPE",
    "PROTOCOL_STRING",
    "EncryptionError",
    "is_sealed",
    "seal",
    "unseal",
]

PROTOCOL_STRING = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = (
    f'multipart/encrypted;protocol="{PROTOCOL_STRING}";boundary="Encrypted Boundary"'
)
_BOUNDARY = b"--Encrypted Boundary"
_END = _BOUNDARY + b"--\r\n"
_OCTETS = b"\tContent-Type: application/octet-stream\r\n"
_SIGNATURE_LENGTH = 16  # an NTLMv2 sealing signature is always 16 bytes


class EncryptionError(Exception):
    """A ``multipart/encrypted`` body could not be parsed, unsealed or verified."""


def is_sealed(content_type: str) -> bool:
    """True when a Content-Type announces an NTLM-sealed body."""
    return "multipart/encrypted" in content_type.lower() and PROTOCOL_STRING in content_type


def seal(context: spnego.ContextProxy, message: bytes) -> bytes:
    """``message`` sealed with the context's keys, framed as the body of one request or reply."""
    wrapped = context.wrap(message, encrypt=True).data  # signature, then the sealed bytes
    return (
        _BOUNDARY + b"\r\n"
        b"\tContent-Type: " + PROTOCOL_STRING.encode() + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(message)).encode()
        + b"\r\n"
        + _BOUNDARY
        + b"\r\n"
        + _OCTETS
        + struct.pack("<i", _SIGNATURE_LENGTH)
        + wrapped
        + _END
    )


def unseal(context: spnego.ContextProxy, body: bytes, content_type: str) -> bytes:
    """The plain message in a sealed body; EncryptionError if it is none or was altered."""
    if not is_sealed(content_type):
        raise EncryptionError(f"expected an encrypted body, got Content-Type {content_type!r}")
    body = body.removesuffix(_END)
    parts = [part for part in body.split(_BOUNDARY + b"\r\n") if part]
    if len(parts) != 2:
        raise EncryptionError(f"expected 2 MIME parts, found {len(parts)}")
    header, payload = parts
    try:
        expected_length = int(header.split(b"Length=")[1].split(b"\r\n")[0])
    except (IndexError, ValueError) as exc:
        raise EncryptionError("OriginalContent has no Length") from exc
    if not payload.startswith(_OCTETS):
        raise EncryptionError("second MIME part is not application/octet-stream")
    sealed = payload[len(_OCTETS) :]
    if len(sealed) < 4:
        raise EncryptionError("sealed payload shorter than its length prefix")
    (signature_length,) = struct.unpack("<i", sealed[:4])
    if signature_length != _SIGNATURE_LENGTH:
        raise EncryptionError(f"unexpected signature length {signature_length}")
    try:
        message = context.unwrap(sealed[4:]).data
    except spnego.exceptions.SpnegoError as exc:
        raise EncryptionError(f"message could not be unsealed: {exc}") from exc
    if len(message) != expected_length:
        raise EncryptionError(f"length {len(message)} differs from the declared {expected_length}")
    return message
