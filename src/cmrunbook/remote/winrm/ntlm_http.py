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

Three things differ from pywinrm, on purpose:

* the NEGOTIATE token goes with the first request (RFC 4559 allows it; curl does the same),
  which saves the anonymous round trip that only fetches the offer of ``Negotiate``;
* the shell's Create travels sealed on the AUTHENTICATE leg itself, which saves the empty POST
  pywinrm and pypsrp send there (:class:`LastLeg` says when, and what happens if a host refuses);
* NTLM keys belong to a TCP connection, so a connection the host closed (after a reply that said
  so, or while idle) is replaced and authenticated again *before* the next message is sealed.

The first message on the AUTHENTICATE leg: [MS-WSMV] 2.2.9.1.1.1 says of the sealed request
that "the client MUST include the Authorization field in the request until the [...] service
responds with a 200 OK response" (learn.microsoft.com/openspecs/windows_protocols/ms-wsmv/
3d957d6c-d5cf-4b7e-8bbe-4e7c68a089de), i.e. the leg that carries AUTHENTICATE may carry the
sealed message; the WinRM Ruby gem sent its first sealed message that way against Windows until
2018, when WinRb/WinRM#288 changed to an empty POST only because OMI (Linux) answered 401
(lib/winrm/http/transport.rb, HttpNegotiate#issue_challenge_response: "OMI Server on Linux
requires an empty payload"); microsoft/omi#577 then made OMI take it, its author noting that
"the PSRP implementation on Windows [...] allows a multipart/encrypted message to be sent in
response to the challenge message". pywinrm and pypsrp send an empty body there: their choice,
not a statement that Windows refuses. One implementer reported Windows Server 2012 answering
400 to such a request (social.msdn.microsoft.com, "HTTP 400 when using [MS-WSMV] WSMan/WinRM
Message Encryption with Negotiate (NTLM token)"), with no cause established; a 400 is not
retried (it is reported as the host's failure, nothing runs twice).

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
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

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
    "LAST_LEG",
    "MAX_REPLY",
    "ConnectTimeoutError",
    "DeadlineError",
    "LastLeg",
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
#: Cap on a reply to a handshake leg: an empty body, or on the last leg the Create's reply (a few
#: KB), read before its seal has been checked.
HANDSHAKE_REPLY_LIMIT = 64 * 1024


log = logging.getLogger(__name__)


class ConnectTimeoutError(TimeoutError):
    """The TCP connection was not accepted within the timeout (as opposed to a slow answer)."""


class LastLeg:
    """When the first message may travel on NTLM's AUTHENTICATE leg: what a run has learnt.

    A message rides that leg only if three things hold:

    * the caller says it may reach the host twice without harm (``may_repeat``: the shell Create,
      whose duplicate is an unused shell the host ends after its idle timeout), because a host
      that answers the leg with 401 gets it again after a plain logon;
    * some host of this run has already accepted the credential (:meth:`proven`): a 401 on the
      combined leg cannot be told from a wrong password, and its retry is a second logon, so a
      credential nobody has accepted yet logs on with an empty leg first. A wrong password
      therefore still costs one failed logon, not two (a domain locks an account after a few);
    * the endpoint has not answered such a leg with 401 in this run (:meth:`refused`).

    The memory is per endpoint, ``(address, port)``: what takes the message or not is the server
    listening there (WinRM on HTTP.sys, or another WS-Man server such as OMI), whatever URL
    path a request names, and a host's later connections (after an idle close) go to it again.
    Per run would make every Windows host pay for one server that refused; per connection would
    repeat the refused attempt, and its extra logon, on each reconnect. Nothing waits for an
    endpoint's first answer: hosts that share one endpoint (the lab serves all its hosts on one
    port) and log on while its first attempt is under way try it too.

    Thread-safe; one per process (:data:`LAST_LEG`) unless a caller passes its own. It holds no
    credential: only a keyed digest of it, the key made at random here and never stored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = os.urandom(32)
        self._proven: set[bytes] = set()
        self._refusing: set[tuple[str, int]] = set()

    def credential(self, username: str, secret: str) -> bytes:
        """The key under which a credential is remembered (a keyed digest, not the secret)."""
        return hmac.digest(self._key, f"{username}\0{secret}".encode(), "sha256")

    def proven(self, credential: bytes) -> None:
        """A host accepted this credential: later logons may carry a message on the last leg."""
        with self._lock:
            self._proven.add(credential)

    def refused(self, endpoint: tuple[str, int]) -> None:
        """``endpoint`` answered a message on the last leg with 401: not again this run."""
        with self._lock:
            self._refusing.add(endpoint)

    def allows(self, endpoint: tuple[str, int], credential: bytes) -> bool:
        """True if a message may ride the last leg to ``endpoint`` with ``credential``."""
        with self._lock:
            return credential in self._proven and endpoint not in self._refusing


#: What this process (one run) has learnt about the last leg.
LAST_LEG = LastLeg()


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
        may_repeat: Callable[[bytes], bool] = lambda message: False,
        last_leg: LastLeg = LAST_LEG,
    ) -> None:
        self._address = address
        self._port = port
        self._path = path
        self._username = username
        self._secret = secret  # the password or its LM:NT hash pair; never logged
        self.read_timeout_sec = read_timeout
        self.max_reply = max_reply
        self._may_repeat = may_repeat
        self._last_leg = last_leg
        self._credential = last_leg.credential(username, secret)
        self._connection: Connection | None = None
        self._context: sealing.Sealer | None = None
        self._deadline = 0.0

    def send_message(self, message: str | bytes) -> bytes:
        """Send one SOAP message sealed and return the reply opened; a fault raises.

        Every reply but a 401 (data, a WS-Man fault, any other status) must be sealed with this
        connection's keys: an unsealed one raises
        :class:`~cmrunbook.remote.winrm.sealing.EncryptionError`, never data or a fault.
        On a connection not yet authenticated, the message may travel on the handshake's last
        leg (:class:`LastLeg`).
        """
        data = message.encode("utf-8") if isinstance(message, str) else message
        self._deadline = time.monotonic() + self.read_timeout_sec
        connection, context = self._connection, self._context
        if connection is None or context is None or _closed(connection):
            self.close_session()
            return self._log_on(data)
        return self._opened(self._post(connection, sealing.seal(context, data), _SEALED), context)

    def close_session(self) -> None:
        """Close the connection; the next message authenticates a new one."""
        connection, self._connection, self._context = self._connection, None, None
        if connection is not None:
            connection.close()

    # -- connection and handshake ------------------------------------------------------------

    def _opened(self, response: Reply, context: sealing.Sealer) -> bytes:
        """The reply's message, unsealed and verified; a refusal or an unsealed reply raises."""
        content_type = response.header("content-type")
        reply = response.body
        if sealing.is_sealed(content_type):
            reply = sealing.unseal(context, reply, content_type)
        elif response.status != 401:
            # Data, a WS-Man fault or any other answer of an authenticated host comes sealed: an
            # unsealed body could be anyone's on the path (a forged OperationTimeout fault would
            # keep a Receive polling), so it is never read. Only a 401 (authentication lost)
            # comes plain.
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

    def _log_on(self, data: bytes) -> bytes:
        """Authenticate a new connection and send ``data`` on it; its reply, opened.

        ``data`` rides the AUTHENTICATE leg where :class:`LastLeg` allows it. If the host
        answers that leg with 401, it did not authenticate the request, so it did not run it:
        the handshake starts again on a new connection with an empty last leg (the way pywinrm
        logs on), ``data`` goes again on its own, and the endpoint keeps that way for the run.
        Any other answer is the message's: nothing is sent twice after it.
        """
        endpoint = (self._address, self._port)
        if not self._may_repeat(data) or not self._last_leg.allows(endpoint, self._credential):
            return self._send_after_handshake(data)
        connection, context, response = self._handshake_with(data)
        if response.status == 401:
            connection.close()
            log.info(
                "%s:%d answered 401 to a message on NTLM's last leg; logging on with an empty "
                "one, as for the rest of this run",
                self._address,
                self._port,
            )
            reply = self._send_after_handshake(data)
            self._last_leg.refused(endpoint)
            return reply
        self._connection, self._context = connection, context
        return self._opened(response, context)

    def _send_after_handshake(self, data: bytes) -> bytes:
        """Log on with an empty last leg, then send ``data`` sealed; its reply, opened."""
        connection, context = self._handshake()
        self._connection, self._context = connection, context
        self._last_leg.proven(self._credential)
        return self._opened(self._post(connection, sealing.seal(context, data), _SEALED), context)

    def _connect(self) -> Connection:
        timeout = max(0.001, self._deadline - time.monotonic())
        try:
            sock = socket.create_connection((self._address, self._port), timeout=timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(f"connecting took over {self.read_timeout_sec} s") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return Connection(sock, self._address, self._port, self._path)
        except BaseException:
            sock.close()
            raise

    def _challenged(self, connection: Connection) -> tuple[spnego.ContextProxy, bytes]:
        """NTLM's first two legs on ``connection``: the context and the AUTHENTICATE token."""
        context = spnego.client(self._username, self._secret, protocol="ntlm")
        response = self._leg(connection, context.step())
        challenge = _offered_token(response)
        if response.status == 401 and challenge is None:
            offers = response.header("www-authenticate", "none")
            raise WinRMError(
                f"the host answered NTLM's NEGOTIATE without a challenge (it offers: "
                f"{offers}); NTLM may be disabled there: try auth: kerberos"
            )
        if response.status != 401:
            raise _refusal(response.status, response.body)
        try:
            token = context.step(challenge)
        except spnego.exceptions.SpnegoError as exc:
            raise WinRMError(f"the host's NTLM challenge is not usable: {exc}") from exc
        if token is None or not context.complete:
            raise WinRMError("the host's NTLM challenge did not complete the handshake")
        return context, token

    def _handshake(self) -> tuple[Connection, sealing.Sealer]:
        """Connect and run NTLM's NEGOTIATE / CHALLENGE / AUTHENTICATE on empty POSTs."""
        connection = self._connect()
        try:
            context, token = self._challenged(connection)
            response = self._leg(connection, token)
            if response.status != 200:
                raise _refusal(response.status, response.body)
        except BaseException:
            connection.close()
            raise
        return connection, sealing.sealer(context)

    def _handshake_with(self, data: bytes) -> tuple[Connection, sealing.Sealer, Reply]:
        """Connect and run the handshake with ``data`` sealed on its AUTHENTICATE leg; the
        reply to that leg is the message's (or a 401)."""
        connection = self._connect()
        try:
            context, token = self._challenged(connection)
            sealer = sealing.sealer(context)
            response = self._leg(connection, token, sealing.seal(sealer, data))
        except BaseException:
            connection.close()
            raise
        return connection, sealer, response

    def _leg(self, connection: Connection, token: bytes | None, body: bytes = b"") -> Reply:
        """One handshake request carrying the client's NTLM token: an empty POST, or on the
        last leg a sealed message (whose reply is small: a shell's Create)."""
        auth = b"Authorization: Negotiate %s\r\n" % base64.b64encode(token or b"")
        headers = (_SEALED if body else _PLAIN) + auth
        return self._post(connection, body, headers, limit=HANDSHAKE_REPLY_LIMIT)

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
