"""WinRM message encryption over HTTP: the ``multipart/encrypted`` body of [MS-WSMV] 2.2.9.1.1.

After NTLM authenticates a TCP connection, each SOAP message on it travels sealed with that
connection's keys, in a two-part MIME body: a header part that declares the plain length, and an
octet-stream part holding the signature length, the 16-byte signature and the sealed bytes. The
engine's channel uses these functions; the lab frames its side of the wire with its own code, and
both are checked against pywinrm's own ``Encryption`` class in the tests.

The order of messages matters: NTLM sealing is an RC4 stream with sequence numbers, so each
side must seal and unseal in the order the messages travel.

The sealing itself ([MS-NLMP] 3.4.4.2, "MAC with Extended Session Security" and key exchange:
learn.microsoft.com/openspecs/windows_protocols/ms-nlmp/a92716d5-d164-4960-9e15-300f4eef44a8)
is done here by :class:`NtlmSeal` with the keys pyspnego derived once for the connection:
pyspnego's own ``wrap``/``unwrap`` test the negotiated flags as ``IntFlag`` enums and pass
through several layers per message, which cost the engine more than the cryptography did. The
primitives are the ones pyspnego uses: RC4 from ``cryptography`` (the cipher contexts pyspnego
opened) and HMAC-MD5 from ``hmac.digest`` (OpenSSL through hashlib), so no cipher is written in
Python. A context that did not negotiate extended session security with key exchange (which
every NTLMv2 logon does) is sealed by pyspnego itself (:class:`SpnegoSeal`).
"""

from __future__ import annotations

import hmac
import struct
from typing import Protocol

import spnego
import spnego.exceptions
from spnego._ntlm import NTLMProxy  # the context pyspnego returns for protocol="ntlm"
from spnego._ntlm_raw.crypto import RC4Handle

__all__ = [
    "ENCRYPTED_CONTENT_TYPE",
    "PROTOCOL_STRING",
    "EncryptionError",
    "NtlmSeal",
    "Sealer",
    "SpnegoSeal",
    "is_sealed",
    "seal",
    "sealer",
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
_VERSION = b"\x01\x00\x00\x00"  # NTLMSSP_MESSAGE_SIGNATURE.Version
#: NTLMSSP_NEGOTIATE_EXTENDED_SESSION_SECURITY | NTLMSSP_NEGOTIATE_KEY_EXCH | _SEAL | _SIGN
#: ([MS-NLMP] 2.2.2.5): the flags under which NtlmSeal computes what pyspnego would.
_FAST_FLAGS = 0x00080000 | 0x40000000 | 0x20 | 0x10


class EncryptionError(Exception):
    """A ``multipart/encrypted`` body could not be parsed, unsealed or verified."""


class Sealer(Protocol):
    """One authenticated connection's sealing: each call advances its RC4 stream and sequence
    number, so messages are sealed and opened in the order they travel."""

    def wrap(self, message: bytes) -> bytes:
        """The signature followed by the sealed message."""
        ...

    def unwrap(self, data: bytes) -> bytes:
        """The message in signature + sealed bytes; EncryptionError if it does not verify."""
        ...


class NtlmSeal:
    """[MS-NLMP] 3.4.4.2 sealing with extended session security and key exchange, on the keys
    and RC4 streams of a completed pyspnego context (which must not seal anything itself after
    this takes over: the streams are shared)."""

    def __init__(self, sign_out: bytes, sign_in: bytes, rc4_out: RC4Handle, rc4_in: RC4Handle):
        self._sign_out = sign_out
        self._sign_in = sign_in
        self._rc4_out = rc4_out._handle  # cryptography's ARC4 cipher contexts
        self._rc4_in = rc4_in._handle
        self._seq_out = self._seq_in = 0

    def wrap(self, message: bytes) -> bytes:
        seq = struct.pack("<I", self._seq_out)
        self._seq_out += 1
        sealed = self._rc4_out.update(message)
        checksum = self._rc4_out.update(hmac.digest(self._sign_out, seq + message, "md5")[:8])
        return _VERSION + checksum + seq + sealed

    def unwrap(self, data: bytes) -> bytes:
        if len(data) < _SIGNATURE_LENGTH:
            raise EncryptionError("message could not be unsealed: shorter than its signature")
        seq = struct.pack("<I", self._seq_in)
        self._seq_in += 1
        message = self._rc4_in.update(data[_SIGNATURE_LENGTH:])
        checksum = self._rc4_in.update(hmac.digest(self._sign_in, seq + message, "md5")[:8])
        if not hmac.compare_digest(_VERSION + checksum + seq, data[:_SIGNATURE_LENGTH]):
            raise EncryptionError("message could not be unsealed: the signature does not match")
        return message


class SpnegoSeal:
    """pyspnego's own wrap and unwrap, for a context NtlmSeal does not cover."""

    def __init__(self, context: spnego.ContextProxy) -> None:
        self._context = context

    def wrap(self, message: bytes) -> bytes:
        return self._context.wrap(message, encrypt=True).data

    def unwrap(self, data: bytes) -> bytes:
        try:
            return self._context.unwrap(data).data
        except spnego.exceptions.SpnegoError as exc:
            raise EncryptionError(f"message could not be unsealed: {exc}") from exc


def sealer(context: spnego.ContextProxy) -> Sealer:
    """The sealing of a context whose handshake is complete: NtlmSeal where it applies."""
    if isinstance(context, NTLMProxy) and context._context_attr & _FAST_FLAGS == _FAST_FLAGS:
        sign_out, sign_in = context._sign_key_out, context._sign_key_in
        rc4_out, rc4_in = context._handle_out, context._handle_in
        if sign_out and sign_in and rc4_out and rc4_in:
            return NtlmSeal(sign_out, sign_in, rc4_out, rc4_in)
    return SpnegoSeal(context)


def is_sealed(content_type: str) -> bool:
    """True when a Content-Type announces an NTLM-sealed body."""
    return "multipart/encrypted" in content_type.lower() and PROTOCOL_STRING in content_type


def seal(context: Sealer, message: bytes) -> bytes:
    """``message`` sealed with the connection's keys, framed as the body of one request or reply."""
    wrapped = context.wrap(message)  # signature, then the sealed bytes
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


def unseal(context: Sealer, body: bytes, content_type: str) -> bytes:
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
    message = context.unwrap(sealed[4:])
    if len(message) != expected_length:
        raise EncryptionError(f"length {len(message)} differs from the declared {expected_length}")
    return message
