"""Server side of NTLM for the lab: the acceptor and its credential file.

WinRM's default on plain HTTP is NTLM with *message encryption* ([MS-WSMV] 2.2.9.1.1): after a
three-leg handshake on one TCP connection, every SOAP body travels sealed inside a
``multipart/encrypted`` MIME body (:mod:`cmrunbook_lab.winrm.encryption`, with the acceptor's
:attr:`~NTLMAcceptor.context`). The lab has to speak exactly that, or a test would exercise a
path (Basic, unencrypted) that no production run takes. Nothing here comes from the engine's
client (``cmrunbook.remote``): a mistake shared by both ends of the wire could not fail a test.

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
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1  # the one-way functions NTLM itself uses

__all__ = [
    "AuthenticationFailed",
    "CredentialFile",
    "NTLMAcceptor",
    "parse_authorization",
]

ENV_VAR = "NTLM_USER_FILE"

_ENV_LOCK = threading.RLock()
_UNSET = object()
_saved_env: object = _UNSET  # NTLM_USER_FILE as it was before the first CredentialFile
_open_files: list[CredentialFile] = []


def _password_hashes(password: str) -> str:
    """``LM:NT`` in hex, the smbpasswd-style form pyspnego's user file accepts for a password."""
    return f"{lmowfv1(password).hex()}:{ntowfv1(password).hex()}"


class AuthenticationFailed(Exception):
    """The client's NTLM token was malformed or its proof of the password was wrong."""


class CredentialFile:
    """A private ``NTLM_USER_FILE`` holding one lab server's users, deleted by :meth:`close`.

    ``users`` maps a user name (``user`` or ``DOMAIN\\user``) to its password. pyspnego matches
    domain and user case-insensitively, and a user without a domain only matches a client that
    sends no domain.

    The file holds each password's LM and NT hashes (the smbpasswd form pyspnego also reads), not
    the password: given a password, pyspnego derives the LM hash with pure-Python DES at every
    authentication, which made it a quarter of the lab's CPU when it plays a thousand hosts.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        lines = []
        for name, password in users.items():
            if ":" in name or "\n" in name or "\r" in name:
                raise ValueError(
                    f"user {name!r}: ':' and line breaks cannot be stored in an NTLM user file"
                )
            lines.append(f"{name}:0:{_password_hashes(password)}:[U]:LCT-00000000\n")
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

    @property
    def context(self) -> spnego.ContextProxy:
        """The security context, whose keys seal and unseal this connection's messages."""
        return self._context


def parse_authorization(header: str) -> tuple[str, bytes] | None:
    """Split an ``Authorization`` header into (scheme, decoded token); None if it is not base64."""
    scheme, _, value = header.strip().partition(" ")
    try:
        return scheme.lower(), base64.b64decode(value.strip(), validate=True)
    except (ValueError, TypeError):
        return None
