"""WS-Man over plain HTTP with NTLM and message encryption, on one keep-alive connection.

This is the default way to a Windows host (``auth: ntlm`` on http) and the one every host of a
fan-out takes, so it is written on http.client and pyspnego directly rather than through
pywinrm's requests-based transport. Through requests, each message passed request preparation,
cookie handling, proxy lookups in the environment and the auth handler's response hooks: in a
profiled 1,000-host fan-out that stack, not the exchange, was most of the engine's CPU per host.
The other auth methods and https keep pywinrm's transport.

The channel is a drop-in ``transport`` for pywinrm's :class:`~winrm.protocol.Protocol`: it has
``send_message``, ``close_session`` and ``read_timeout_sec``, and it reports an HTTP error as
:class:`~winrm.exceptions.WinRMTransportError` with the opened body, from which the Protocol
reads WS-Man faults. Connection failures reach the caller as the socket or http.client
exception, which :mod:`cmrunbook.transport` names.

Two things differ from pywinrm, on purpose:

* the NEGOTIATE token goes with the first request (RFC 4559 allows it; curl does the same),
  which saves the anonymous round trip that only fetches the offer of ``Negotiate``;
* NTLM keys belong to a TCP connection, so a connection the host closed (after a reply that said
  so, or while idle) is replaced and authenticated again *before* the next message is sealed.
"""

from __future__ import annotations

import base64
import functools
import http.client
import socket

import spnego
import spnego.exceptions
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1  # the functions NTLM itself uses
from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError

from cmrunbook import sealing

__all__ = ["ConnectTimeoutError", "NtlmChannel", "ntlm_hashes"]

_USER_AGENT = "cmrunbook"
_PLAIN = "application/soap+xml;charset=UTF-8"


class ConnectTimeoutError(TimeoutError):
    """The TCP connection was not accepted within the timeout (as opposed to a slow answer)."""


class NtlmChannel:
    """Sealed WS-Man messages to one host, over one NTLM-authenticated HTTP connection.

    Not thread-safe: one host, one worker. ``read_timeout_sec`` may be changed between messages
    (the caller fits it into a script's deadline); it bounds the connect and every read.
    """

    def __init__(
        self, *, address: str, port: int, path: str, username: str, secret: str, read_timeout: int
    ) -> None:
        self._address = address
        self._port = port
        self._path = path
        self._username = username
        self._secret = secret  # the password or its LM:NT hash pair; never logged
        self.read_timeout_sec = read_timeout
        self._connection: http.client.HTTPConnection | None = None
        self._context: spnego.ContextProxy | None = None

    def send_message(self, message: str | bytes) -> bytes:
        """Send one SOAP message sealed and return the reply opened; a fault raises."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        connection, context = self._authenticated()
        response, reply = self._post(
            connection, sealing.seal(context, data), sealing.ENCRYPTED_CONTENT_TYPE
        )
        content_type = response.getheader("Content-Type", "")
        if sealing.is_sealed(content_type):
            reply = sealing.unseal(context, reply, content_type)
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

    def _authenticated(self) -> tuple[http.client.HTTPConnection, spnego.ContextProxy]:
        """The open, authenticated connection and its context, made anew if the host closed it."""
        connection, context = self._connection, self._context
        if connection is None or context is None or _closed(connection):
            self.close_session()
            connection, context = self._handshake()
            self._connection, self._context = connection, context
        return connection, context

    def _handshake(self) -> tuple[http.client.HTTPConnection, spnego.ContextProxy]:
        """Connect and run NTLM's NEGOTIATE / CHALLENGE / AUTHENTICATE on empty POSTs."""
        connection = http.client.HTTPConnection(
            self._address, self._port, timeout=self.read_timeout_sec
        )
        try:
            connection.connect()
        except TimeoutError as exc:
            raise ConnectTimeoutError(f"connecting took over {self.read_timeout_sec} s") from exc
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            context = spnego.client(self._username, self._secret, protocol="ntlm")
            response, reply = self._leg(connection, context.step())
            challenge = _offered_token(response)
            if response.status == 401 and challenge is None:
                offers = response.getheader("WWW-Authenticate", "none")
                raise WinRMError(
                    f"the host answered NTLM's NEGOTIATE without a challenge (it offers: "
                    f"{offers}); NTLM may be disabled there: try auth: kerberos"
                )
            if response.status == 401:
                try:
                    token = context.step(challenge)
                except spnego.exceptions.SpnegoError as exc:
                    raise WinRMError(f"the host's NTLM challenge is not usable: {exc}") from exc
                response, reply = self._leg(connection, token)
            if response.status == 200 and context.complete:
                return connection, context
        except BaseException:
            connection.close()
            raise
        connection.close()
        raise _refusal(response.status, reply)

    def _leg(
        self, connection: http.client.HTTPConnection, token: bytes | None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One handshake request: an empty POST that carries the client's NTLM token."""
        auth = f"Negotiate {base64.b64encode(token or b'').decode('ascii')}"
        return self._post(connection, b"", _PLAIN, auth=auth)

    def _post(
        self,
        connection: http.client.HTTPConnection,
        body: bytes,
        content_type: str,
        *,
        auth: str | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """POST ``body`` within the read timeout; the response and its body, read in full."""
        connection.timeout = self.read_timeout_sec
        if connection.sock is not None:
            connection.sock.settimeout(self.read_timeout_sec)
        headers = {"Content-Type": content_type, "User-Agent": _USER_AGENT}
        if auth is not None:
            headers["Authorization"] = auth
        connection.request("POST", self._path, body, headers)
        response = connection.getresponse()
        return response, response.read()


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


def _offered_token(response: http.client.HTTPResponse) -> bytes | None:
    """The token in ``WWW-Authenticate: Negotiate <base64>``; None for a bare offer.

    Several offers arrive joined by commas, which base64 never contains."""
    for offer in response.getheader("WWW-Authenticate", "").split(","):
        scheme, _, value = offer.strip().partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and value.strip():
            try:
                return base64.b64decode(value.strip(), validate=True)
            except ValueError:
                return None
    return None


def _closed(connection: http.client.HTTPConnection) -> bool:
    """True if the host closed the connection, or it holds bytes nobody asked for.

    http.client drops its socket after a reply that said ``Connection: close``; an idle
    keep-alive socket that reads as ready has been closed (or broken) by the host. A peek that
    would block is the healthy case. This works the same on Windows jump hosts (no poll()).
    """
    sock = connection.sock
    if sock is None:
        return True
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
