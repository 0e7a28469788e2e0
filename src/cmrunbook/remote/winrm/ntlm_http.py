"""WS-Man over plain HTTP with NTLM and message encryption, on one keep-alive connection.

This is the default way to a Windows host (``auth: ntlm`` on http) and the one every host of a
fan-out takes, so it is written on a small HTTP/1.1 client of its own
(:mod:`~cmrunbook.remote.winrm.http11`) and pyspnego directly rather than through pywinrm's
requests-based transport. Through requests, each message passed request preparation,
cookie handling, proxy lookups in the environment and the auth handler's response hooks: in a
profiled 1,000-host fan-out that stack, not the exchange, was most of the engine's CPU per host.
The other auth methods and https keep pywinrm's transport.

The channel is a drop-in ``transport`` for pywinrm's :class:`~winrm.protocol.Protocol`: it has
``send_message``, ``close_session`` and ``read_timeout_sec``, and it reports an HTTP error as
:class:`~winrm.exceptions.WinRMTransportError` with the opened body, from which the Protocol
reads WS-Man faults. Connection failures reach the caller as the socket exception or the
http.client exception named for the same failure, which :mod:`cmrunbook.remote.winrm.host` names.

Two things differ from pywinrm, on purpose:

* the NEGOTIATE token goes with the first request (RFC 4559 allows it; curl does the same),
  which saves the anonymous round trip that only fetches the offer of ``Negotiate``;
* NTLM keys belong to a TCP connection, so a connection the host closed (after a reply that said
  so, or while idle) is replaced and authenticated again *before* the next message is sealed.

And three things pywinrm does not do, because the peer may be hostile (attack 4d, 4e, 4f):

* a reply that is not sealed, or whose signature does not verify, is refused: NTLM never
  authenticates the server, only the keys derived from the password do, so a plain reply is
  exactly what someone on the path who lacks the password would send;
* ``read_timeout_sec`` bounds a whole :meth:`NtlmChannel.send_message`, handshake included, not
  each read: a peer that trickles one byte every few seconds is cut off at the deadline;
* a reply body is read up to a cap (``max_reply``; far less during the handshake, before the
  host has proven anything), so no peer can make the engine hold more than that in memory.
"""

from __future__ import annotations

import base64
import functools
import socket
import time

import spnego
import spnego.exceptions
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1  # the functions NTLM itself uses
from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError

from cmrunbook.remote.winrm import sealing
from cmrunbook.remote.winrm.http11 import (
    Connection,
    DeadlineError,
    Reply,
    ReplyTooLargeError,
    header_lines,
)

__all__ = [
    "HANDSHAKE_REPLY_LIMIT",
    "MAX_REPLY",
    "ConnectTimeoutError",
    "DeadlineError",
    "NtlmChannel",
    "ReplyTooLargeError",
    "ntlm_hashes",
]

#: The header lines of a sealed message and of a handshake leg (which adds its Authorization):
#: what http.client sent besides Host and Content-Length, so the wire stays as it was.
_COMMON = (("Accept-Encoding", "identity"), ("User-Agent", "cmrunbook"))
_SEALED = header_lines(("Content-Type", sealing.ENCRYPTED_CONTENT_TYPE), *_COMMON)
_PLAIN = header_lines(("Content-Type", "application/soap+xml;charset=UTF-8"), *_COMMON)

#: Default cap on one reply body. A Receive carries at most one MaxEnvelopeSize (150 KB on WMF
#: 2.0, 500 KB from WMF 3.0 on) of output, so 64 MB is far beyond any honest reply.
MAX_REPLY = 64 * 1024 * 1024
#: Cap on a reply before authentication is complete: a handshake leg's answer has an empty body.
HANDSHAKE_REPLY_LIMIT = 64 * 1024


class ConnectTimeoutError(TimeoutError):
    """The TCP connection was not accepted within the timeout (as opposed to a slow answer)."""


class NtlmChannel:
    """Sealed WS-Man messages to one host, over one NTLM-authenticated HTTP connection.

    Not thread-safe: one host, one worker. ``read_timeout_sec`` may be changed between messages
    (the caller fits it into a script's deadline); it bounds each whole :meth:`send_message`:
    connect, handshake, request and reply.
    """

    def __init__(
        self,
        *,
        address: str,
        port: int,
        path: str,
        username: str,
        secret: str,
        read_timeout: int,
        max_reply: int = MAX_REPLY,
    ) -> None:
        self._address = address
        self._port = port
        self._path = path
        self._username = username
        self._secret = secret  # the password or its LM:NT hash pair; never logged
        self.read_timeout_sec = read_timeout
        self.max_reply = max_reply
        self._connection: Connection | None = None
        self._context: sealing.Sealer | None = None
        self._deadline = 0.0

    def send_message(self, message: str | bytes) -> bytes:
        """Send one SOAP message sealed and return the reply opened; a fault raises.

        A 200 or 500 reply (data or WS-Man fault) must be sealed with this connection's keys:
        anything else raises :class:`~cmrunbook.remote.winrm.sealing.EncryptionError`, never data.
        """
        data = message.encode("utf-8") if isinstance(message, str) else message
        self._deadline = time.monotonic() + self.read_timeout_sec
        connection, context = self._authenticated()
        response = self._post(connection, sealing.seal(context, data), _SEALED)
        content_type = response.header("content-type")
        reply = response.body
        if sealing.is_sealed(content_type):
            reply = sealing.unseal(context, reply, content_type)
        elif response.status in (200, 500):
            self.close_session()  # the RC4 streams no longer match what the host would expect
            raise sealing.EncryptionError(
                f"reply not encrypted: refusing it (HTTP {response.status}, "
                f"Content-Type {content_type[:80]!r})"
            )
        if response.status == 200:
            return reply
        if response.status == 401:  # the connection lost its authentication
            self.close_session()
        raise _refusal(response.status, reply)

    def close_session(self) -> None:
        """Close the connection; the next message authenticates a new one."""
        connection, self._connection, self._context = self._connection, None, None
        if connection is not None:
            connection.close()

    # -- connection and handshake ------------------------------------------------------------

    def _authenticated(self) -> tuple[Connection, sealing.Sealer]:
        """The open, authenticated connection and its sealing, made anew if the host closed it."""
        connection, context = self._connection, self._context
        if connection is None or context is None or _closed(connection):
            self.close_session()
            connection, context = self._handshake()
            self._connection, self._context = connection, context
        return connection, context

    def _handshake(self) -> tuple[Connection, sealing.Sealer]:
        """Connect and run NTLM's NEGOTIATE / CHALLENGE / AUTHENTICATE on empty POSTs."""
        timeout = max(0.001, self._deadline - time.monotonic())
        try:
            sock = socket.create_connection((self._address, self._port), timeout=timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(f"connecting took over {self.read_timeout_sec} s") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection = Connection(sock, self._address, self._port, self._path)
        except BaseException:
            sock.close()
            raise
        try:
            context = spnego.client(self._username, self._secret, protocol="ntlm")
            response = self._leg(connection, context.step())
            challenge = _offered_token(response)
            if response.status == 401 and challenge is None:
                offers = response.header("www-authenticate", "none")
                raise WinRMError(
                    f"the host answered NTLM's NEGOTIATE without a challenge (it offers: "
                    f"{offers}); NTLM may be disabled there: try auth: kerberos"
                )
            if response.status == 401:
                try:
                    token = context.step(challenge)
                except spnego.exceptions.SpnegoError as exc:
                    raise WinRMError(f"the host's NTLM challenge is not usable: {exc}") from exc
                response = self._leg(connection, token)
            if response.status == 200 and context.complete:
                return connection, sealing.sealer(context)
        except BaseException:
            connection.close()
            raise
        connection.close()
        raise _refusal(response.status, response.body)

    def _leg(self, connection: Connection, token: bytes | None) -> Reply:
        """One handshake request: an empty POST that carries the client's NTLM token."""
        auth = b"Authorization: Negotiate %s\r\n" % base64.b64encode(token or b"")
        return self._post(connection, b"", _PLAIN + auth, limit=HANDSHAKE_REPLY_LIMIT)

    def _post(
        self,
        connection: Connection,
        body: bytes,
        headers: bytes,
        *,
        limit: int | None = None,
    ) -> Reply:
        """POST ``body`` before the deadline; the reply, its body read up to the cap."""
        try:
            return connection.exchange(
                headers,
                body,
                deadline=self._deadline,
                limit=self.max_reply if limit is None else limit,
            )
        except ReplyTooLargeError:
            self.close_session()
            connection.close()
            raise


@functools.lru_cache(maxsize=4)
def ntlm_hashes(password: str) -> str:
    """The password as the ``LM:NT`` hash pair pyspnego accepts in its place.

    NTLM derives both one-way hashes from the password for every new authentication, and the
    LM one is DES in pure Python: about a tenth of the client's CPU per host in a 1,000-host
    fan-out, for a value that is the same for every host. The pair is as secret as the
    password: the engine never logs it nor writes it anywhere.
    """
    return f"{lmowfv1(password).hex()}:{ntowfv1(password).hex()}"


def _refusal(status: int, reply: bytes) -> Exception:
    """What pywinrm raises for a non-200 answer: 401 is the credentials, else the status and
    body (a WS-Man fault's XML, which the Protocol turns into a WSManFaultError)."""
    if status == 401:
        return InvalidCredentialsError("the specified credentials were rejected by the server")
    return WinRMTransportError("http", status, reply.decode("utf-8", "replace"))


def _offered_token(response: Reply) -> bytes | None:
    """The token in ``WWW-Authenticate: Negotiate <base64>``; None for a bare offer.

    Several offers arrive joined by commas, which base64 never contains."""
    for offer in response.header("www-authenticate").split(","):
        scheme, _, value = offer.strip().partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and value.strip():
            try:
                return base64.b64decode(value.strip(), validate=True)
            except ValueError:
                return None
    return None


def _closed(connection: Connection) -> bool:
    """True if the host closed the connection, or it holds bytes nobody asked for.

    A reply that said ``Connection: close`` marks the connection closed; an idle keep-alive
    socket that reads as ready has been closed (or broken) by the host. A peek that would block
    is the healthy case. This works the same on Windows jump hosts (no poll()).
    """
    if connection.closed or connection.idle_bytes():
        return True
    sock = connection.sock
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"": closed; data: out of turn
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
