"""Server side of NTLM for the lab: the acceptor, its credential file, and WinRM message encryption.

pywinrm's default on plain HTTP is NTLM with *message encryption* ([MS-WSMV] 2.2.9.1.1): after a
three-leg handshake on one TCP connection, every SOAP body travels sealed inside a
``multipart/encrypted`` MIME body. The lab has to speak exactly that, or a test would exercise a
path (Basic, unencrypted) that no production run takes.

pyspnego provides the NTLM acceptor. Its only way of learning passwords is a flat file named by the
environment variable ``NTLM_USER_FILE``, read when the acceptor is created *and again* when the
client's AUTHENTICATE message arrives. The environment is process-wide while several lab servers
(each with its own users) may live in one process, so :class:`CredentialFile` owns one temporary
file per server and points the variable at it, under a module lock, only for the duration of each
acceptor call. The variable is set once and afterwards only changes value (no unset/re-add while
servers run), and is restored to what it was when the last credential file closes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping

import spnego
import spnego.exceptions

__all__ = [
    "ENCRYPTED_CONTENT_TYPE",
    "PROTOCOL_STRING",
    "AuthenticationFailed",
    "CredentialFile",
    "EncryptionError",
    "NTLMAcceptor",
    "decrypt_message",
    "encrypt_message",
    "parse_authorization",
]

ENV_VAR = "NTLM_USER_FILE"
PROTOCOL_STRING = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = (
    f'multipart/encrypted;protocol="{PROTOCOL_STRING}";boundary="Encrypted Boundary"'
)
_BOUNDARY = b"--Encrypted Boundary"
_SIGNATURE_LENGTH = 16  # an NTLMv2 sealing signature is always 16 bytes

_ENV_LOCK = threading.RLock()
_UNSET = object()
_saved_env: object = _UNSET  # NTLM_USER_FILE as it was before the first CredentialFile
_open_files: list[CredentialFile] = []


class AuthenticationFailed(Exception):
    """The client's NTLM token was malformed or its proof of the password was wrong."""


class EncryptionError(Exception):
    """A ``multipart/encrypted`` body could not be parsed, unsealed or verified."""


class CredentialFile:
    """A private ``NTLM_USER_FILE`` holding one lab server's users, deleted by :meth:`close`.

    ``users`` maps a user name (``user`` or ``DOMAIN\\user``) to its password. pyspnego matches
    domain and user case-insensitively, and a user without a domain only matches a client that
    sends no domain.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        lines = []
        for name, password in users.items():
            domain, _, user = name.rpartition("\\")
            for field in (domain, user, password):
                if ":" in field or "\n" in field or "\r" in field:
                    raise ValueError(
                        f"user {name!r}: ':' and line breaks cannot be stored in an NTLM user file"
                    )
            lines.append(f"{domain}:{user}:{password}\n")
        fd, self.path = tempfile.mkstemp(prefix="cmrunbook-lab-ntlm-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        self._closed = False
        global _saved_env
        with _ENV_LOCK:
            if not _open_files:
                _saved_env = os.environ.get(ENV_VAR, _UNSET)
            _open_files.append(self)
            os.environ[ENV_VAR] = self.path

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this file the one pyspnego reads, for the duration of one acceptor call."""
        with _ENV_LOCK:
            if os.environ.get(ENV_VAR) != self.path:
                os.environ[ENV_VAR] = self.path
            yield

    def close(self) -> None:
        """Delete the file and hand the environment variable back (idempotent)."""
        global _saved_env
        with _ENV_LOCK:
            if self._closed:
                return
            self._closed = True
            _open_files.remove(self)
            if _open_files:
                os.environ[ENV_VAR] = _open_files[-1].path
            else:
                if _saved_env is _UNSET:
                    os.environ.pop(ENV_VAR, None)
                else:
                    os.environ[ENV_VAR] = str(_saved_env)
                _saved_env = _UNSET
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class NTLMAcceptor:
    """One NTLM security context: the server's half of one authenticated TCP connection.

    NTLM authenticates a connection, not a request, so the HTTP handler keeps one of these per
    connection and uses it to unseal requests and seal replies in order (the RC4 stream and the
    sequence numbers make the order significant).
    """

    def __init__(self, credentials: CredentialFile) -> None:
        self._credentials = credentials
        with credentials.active():
            self._context = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)

    @property
    def complete(self) -> bool:
        """True once the client has proven it knows the password."""
        return bool(self._context.complete)

    @property
    def username(self) -> str | None:
        """The authenticated user, as ``DOMAIN\\user`` or ``user``."""
        return self._context.client_principal if self.complete else None

    def step(self, token: bytes) -> bytes | None:
        """Consume a NEGOTIATE or AUTHENTICATE token; return the CHALLENGE to send, if any."""
        if not token.startswith(b"NTLMSSP\x00"):
            raise AuthenticationFailed("not an NTLM token (the lab offers no SPNEGO/Kerberos)")
        try:
            with self._credentials.active():
                return self._context.step(token)
        except (spnego.exceptions.SpnegoError, ValueError, struct.error) as exc:
            raise AuthenticationFailed(str(exc)) from exc

    def seal(self, data: bytes) -> bytes:
        """Encrypt and sign ``data``: pywinrm's framing is signature length, signature, payload."""
        wrapped = self._context.wrap(data, encrypt=True).data
        return struct.pack("<i", _SIGNATURE_LENGTH) + wrapped

    def unseal(self, data: bytes) -> bytes:
        """Reverse of :meth:`seal` for a client's message; raises if the signature is wrong."""
        if len(data) < 4:
            raise EncryptionError("sealed payload shorter than its length prefix")
        (signature_length,) = struct.unpack("<i", data[:4])
        if signature_length != _SIGNATURE_LENGTH:
            raise EncryptionError(f"unexpected signature length {signature_length}")
        try:
            return self._context.unwrap(data[4:]).data
        except spnego.exceptions.SpnegoError as exc:
            raise EncryptionError(f"message could not be unsealed: {exc}") from exc


def parse_authorization(header: str) -> tuple[str, bytes] | None:
    """Split an ``Authorization`` header into (scheme, decoded token); None if it is not base64."""
    scheme, _, value = header.strip().partition(" ")
    try:
        return scheme.lower(), base64.b64decode(value.strip(), validate=True)
    except (ValueError, TypeError):
        return None


def encrypt_message(acceptor: NTLMAcceptor, message: bytes) -> bytes:
    """Build a ``multipart/encrypted`` body as Windows sends it (and pywinrm parses it)."""
    return (
        _BOUNDARY + b"\r\n"
        b"\tContent-Type: " + PROTOCOL_STRING.encode() + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(message)).encode()
        + b"\r\n"
        + _BOUNDARY
        + b"\r\n"
        b"\tContent-Type: application/octet-stream\r\n"
        + acceptor.seal(message)
        + _BOUNDARY
        + b"--\r\n"
    )


def decrypt_message(acceptor: NTLMAcceptor, body: bytes, content_type: str) -> bytes:
    """Unseal a client's ``multipart/encrypted`` body and check its declared length."""
    if "multipart/encrypted" not in content_type.lower() or PROTOCOL_STRING not in content_type:
        raise EncryptionError(f"expected an encrypted body, got Content-Type {content_type!r}")
    end_marker = _BOUNDARY + b"--\r\n"
    if body.endswith(end_marker):
        body = body[: -len(end_marker)]
    parts = [part for part in body.split(_BOUNDARY + b"\r\n") if part]
    if len(parts) != 2:
        raise EncryptionError(f"expected 2 MIME parts, found {len(parts)}")
    header, payload = parts
    try:
        expected_length = int(header.split(b"Length=")[1].split(b"\r\n")[0])
    except (IndexError, ValueError) as exc:
        raise EncryptionError("OriginalContent has no Length") from exc
    prefix = b"\tContent-Type: application/octet-stream\r\n"
    if not payload.startswith(prefix):
        raise EncryptionError("second MIME part is not application/octet-stream")
    message = acceptor.unseal(payload[len(prefix) :])
    if len(message) != expected_length:
        raise EncryptionError(f"length {len(message)} differs from the declared {expected_length}")
    return message
