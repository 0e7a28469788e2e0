"""The top layer of the lab's WinRM service: HTTP, authentication, and the server's life cycle.

Everything a client can observe on the wire is meant to match a real Windows host closely enough
that the engine's transport is tested against the same behaviour it meets in production:

* one URL per simulated host (``/wsman/<hostname>``, or ``/wsman`` for a configured default host,
  because pywinrm's ``Session`` truncates any longer path), unknown host -> HTTP 404;
* NTLM (:mod:`cmrunbook_lab.winrm.ntlm`) with message encryption
  (:mod:`cmrunbook_lab.winrm.encryption`) over HTTP, Basic only on request;
* HTTP/1.1 keep-alive with Nagle disabled, so a run costs one TCP connection per host and a
  request costs no 40 ms delayed-ACK stall;
* faults injected per host while the server runs and request and connection counters for
  benchmarks (:mod:`cmrunbook_lab.winrm.control`).

A request, once authenticated and opened, is parsed (:mod:`cmrunbook_lab.winrm.soap`) and
answered by the shell layer (:mod:`cmrunbook_lab.winrm.shells`).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cmrunbook_lab.winrm.commands import BackendSource, HostBackend
from cmrunbook_lab.winrm.control import FaultInjector, FaultKind, ServerStats
from cmrunbook_lab.winrm.encryption import (
    REPLY_CONTENT_TYPE,
    SealingError,
    seal_reply,
    unseal_request,
)
from cmrunbook_lab.winrm.ntlm import (
    AuthenticationFailed,
    CredentialFile,
    NTLMAcceptor,
    parse_authorization,
)
from cmrunbook_lab.winrm.shells import ShellService
from cmrunbook_lab.winrm.soap import (
    CODE_UNSPECIFIED,
    FAULT_ACTION,
    Request,
    WSManFault,
    envelope,
    parse_request,
    quota_fault,
)

__all__ = ["LabServer"]

_HOST_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_BODY = 16 * 1024 * 1024
_HANG_LIMIT = 600.0


class _Handler(BaseHTTPRequestHandler):
    """One TCP connection. NTLM authenticates the connection, so its context lives here."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.lab: LabServer = self.server.lab
        self.acceptor: NTLMAcceptor | None = None
        self.counted: dict[str, int] = {}  # host -> stats generation it was counted in
        self.lab._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.lab._track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a test run must not print a line per request."""

    # -- plumbing ----------------------------------------------------------------------------

    def _reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _unauthorized(self, close: bool = False) -> None:
        offers = [("WWW-Authenticate", "Negotiate")]
        if self.lab.allow_basic:
            offers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        self._reply(401, headers=offers, close=close)

    def _soap_body(self, xml: str) -> tuple[bytes, str]:
        data = xml.encode("utf-8")
        if self.acceptor is not None and self.acceptor.complete:
            return seal_reply(self.acceptor.context, data), REPLY_CONTENT_TYPE
        return data, "application/soap+xml;charset=UTF-8"

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(411, close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._reply(413, close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _route(self) -> str | None:
        path = urlsplit(self.path).path.rstrip("/")
        if path.lower() == "/wsman":
            return self.lab.default_host
        prefix, _, name = path.partition("/wsman/")
        if prefix or not _HOST_NAME.match(name):
            return None
        return name

    # -- requests ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._reply(405, headers=[("Allow", "POST")])

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        name = self._route()
        backend = self.lab._backend(name) if name else None
        if name is None or backend is None:
            self._reply(404)
            return
        is_up = getattr(backend, "is_up", None)
        if is_up is not None and not is_up():
            # A host that is restarting answers nothing: the connection just closes.
            self.close_connection = True
            return
        host = name.lower()
        generation = self.lab.stats.generation
        if self.counted.get(host) != generation:
            self.counted[host] = generation
            self.lab.stats._count_connection(host)
        self.lab.stats._count_http(host)
        message = self._authenticate(body)
        if message is None:
            return
        try:
            request = parse_request(message)
        except WSManFault as fault:
            self._send_fault(fault, host, None)
            return
        self.lab.stats._count_request(host, request.action)
        injected = self.lab.faults._take(host, request.action)
        if injected is not None:
            self._inject(injected, host, request)
            return
        try:
            xml = self.lab._shells.dispatch(host, backend, request)
        except WSManFault as fault:
            self._send_fault(fault, host, request.message_id)
            return
        self._reply(200, *self._soap_body(xml))

    def _send_fault(self, fault: WSManFault, host: str, relates_to: str | None) -> None:
        self._reply(500, *self._soap_body(envelope(FAULT_ACTION, relates_to, fault.body(host))))

    def _authenticate(self, body: bytes) -> bytes | None:
        """Return the plain SOAP message, or None after answering (challenge, 401, 200)."""
        header = self.headers.get("Authorization")
        if header:
            parsed = parse_authorization(header)
            if parsed is None:
                self._unauthorized()
                return None
            scheme, token = parsed
            if scheme in ("negotiate", "ntlm"):
                return self._ntlm_leg(scheme, token, body)
            if scheme == "basic" and self.lab.allow_basic:
                user, _, password = token.decode("utf-8", "replace").partition(":")
                if self.lab._basic_ok(user, password):
                    self.acceptor = None  # Basic means a plain body
                    return body
            self._unauthorized()
            return None
        if self.acceptor is None or not self.acceptor.complete:
            self._unauthorized()
            return None
        return self._decrypt(body)

    def _decrypt(self, body: bytes) -> bytes | None:
        """The sealed body opened with this connection's NTLM keys, or None after a 400."""
        assert self.acceptor is not None
        try:
            return unseal_request(self.acceptor.context, body, self.headers.get("Content-Type", ""))
        except SealingError as exc:
            # A plain body on an NTLM connection: Windows refuses unencrypted traffic over HTTP.
            self._reply(400, str(exc).encode(), "text/plain; charset=utf-8", close=True)
            return None

    def _ntlm_leg(self, scheme: str, token: bytes, body: bytes) -> bytes | None:
        if token[8:12] == b"\x01\x00\x00\x00":  # NEGOTIATE starts a new context
            self.acceptor = NTLMAcceptor(self.lab._credentials)
        if self.acceptor is None:
            self._unauthorized()
            return None
        try:
            challenge = self.acceptor.step(token)
        except AuthenticationFailed:
            self.acceptor = None
            self.lab.stats._count_rejected((self._route() or "").lower())
            self._unauthorized(close=True)
            return None
        name = "Negotiate" if scheme == "negotiate" else "NTLM"
        if challenge is not None:
            encoded = base64.b64encode(challenge).decode()
            self._reply(401, headers=[("WWW-Authenticate", f"{name} {encoded}")])
            return None
        if not self.acceptor.complete:
            self._unauthorized(close=True)
            return None
        if not body:  # pywinrm authenticates with an empty POST before it encrypts anything
            self._reply(200)
            return None
        if self.lab.refuse_body_on_authenticate:
            # OMI before microsoft/omi#577: the sealed body on this leg was "improperly parsed
            # resulting in a 401 unauthorized being sent to the client". Not a failed logon.
            self.acceptor = None
            self._unauthorized()
            return None
        # Windows takes the first sealed message on the AUTHENTICATE leg ([MS-WSMV] 2.2.9.1.1.1:
        # the client includes Authorization "until the service responds with a 200 OK"; the
        # WinRM Ruby gem sent its first message this way until WinRb/WinRM#288).
        return self._decrypt(body)

    def _inject(self, kind: FaultKind, host: str, request: Request) -> None:
        if kind is FaultKind.REFUSE:
            self.close_connection = True
        elif kind is FaultKind.HANG:
            self._hang()
        elif kind is FaultKind.RESET:
            fault = WSManFault("w:InternalError", "The connection was reset.", CODE_UNSPECIFIED)
            xml = envelope(FAULT_ACTION, request.message_id, fault.body(host))
            data, content_type = self._soap_body(xml)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind is FaultKind.HTTP500:
            reason = (
                "The WS-Management service cannot process the request because of an internal "
                "error (fault injected by the lab)."
            )
            fault = WSManFault("w:InternalError", reason, CODE_UNSPECIFIED)
            self._send_fault(fault, host, request.message_id)
        elif kind is FaultKind.QUOTA:
            self._send_fault(quota_fault(request.action), host, request.message_id)

    def _hang(self) -> None:
        """Answer nothing until the client closes the connection (its read timeout)."""
        deadline = time.monotonic() + _HANG_LIMIT
        while not self.lab._stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if readable:
                break  # the client closed (or, against HTTP, sent more): stop hanging
        self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's listen backlog is 5: a hundred clients connecting at once overflowed it, and
    # each dropped SYN cost its client a one-second retransmit. HTTP.sys queues far more.
    request_queue_size = socket.SOMAXCONN
    lab: LabServer


class LabServer:
    """A WS-Management (WinRM shell) server for simulated hosts, on one local port.

    ``backends`` maps host names to backends, or is a function returning the backend for a name
    (None: no such host, HTTP 404). ``users`` maps user names to passwords for NTLM (and Basic
    when ``allow_basic``). ``default_host`` is served at plain ``/wsman``. The socket is bound
    at construction, so :attr:`port` and :meth:`endpoint` work before :meth:`start`.
    Host names are matched case-insensitively; counters and faults use them in lower case.

    A sealed message on NTLM's AUTHENTICATE leg is taken, as Windows takes it; with
    ``refuse_body_on_authenticate`` the server answers it with 401, as OMI did before
    microsoft/omi#577 (for testing a client's fallback; it may be changed while serving).
    """

    def __init__(
        self,
        backends: BackendSource,
        users: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        allow_basic: bool = False,
        *,
        default_host: str | None = None,
        refuse_body_on_authenticate: bool = False,
    ) -> None:
        self._backends = backends
        self._users = dict(users)
        self.allow_basic = allow_basic
        self.refuse_body_on_authenticate = refuse_body_on_authenticate
        self.default_host = default_host
        self.stats = ServerStats()
        self.faults = FaultInjector()
        self._shells = ShellService()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._credentials = CredentialFile(self._users)
        self._finalizer = weakref.finalize(self, self._credentials.close)
        try:
            self._http = _HTTPServer((host, port), _Handler)
        except BaseException:
            self._finalizer()
            raise
        self._http.lab = self

    # -- life cycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._http.server_address[1])

    @property
    def address(self) -> str:
        """The IP address the server listens on."""
        return str(self._http.server_address[0])

    def endpoint(self, hostname: str | None = None) -> str:
        """The URL of one simulated host (or of the default host at plain ``/wsman``)."""
        path = f"/wsman/{hostname}" if hostname else "/wsman"
        return f"http://{self.address}:{self.port}{path}"

    def start(self) -> LabServer:
        """Serve in a background thread; returns self so ``LabServer(...).start()`` reads well."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.name = f"lab-wsman-{self.port}"
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every command and connection, delete the credential file."""
        self._stopping.set()
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(timeout=5)
        self._shells.drop_shells()
        self.close_connections()
        self._http.server_close()
        self._finalizer()

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for simulations and tests -----------------------------------------------------------

    def shell_codepages(self, hostname: str) -> list[int]:
        """The WINRS_CODEPAGE of every shell created on a host, in order."""
        return self._shells.shell_codepages(hostname.lower())

    def open_shells(self, hostname: str | None = None) -> int:
        """How many shells are open (on one host, or in total)."""
        return self._shells.open_shells(hostname.lower() if hostname is not None else None)

    def close_connections(self) -> int:
        """Close every client connection, as HTTP.sys does with one idle past its timeout
        (120 s by default); the shells stay. Returns how many were open."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        return len(connections)

    def drop_shells(self, hostname: str) -> int:
        """Forget a host's shells, as a reboot or a WinRM restart does; returns how many."""
        return self._shells.drop_shells(hostname.lower())

    # -- internals used by the handler -------------------------------------------------------

    def _track(self, connection: socket.socket, live: bool) -> None:
        with self._lock:
            if live:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _backend(self, name: str) -> HostBackend | None:
        source = self._backends
        if isinstance(source, Mapping):
            if name in source:
                return source[name]
            lowered = name.lower()
            return next((b for key, b in source.items() if key.lower() == lowered), None)
        return source(name)

    def _basic_ok(self, user: str, password: str) -> bool:
        for name, expected in self._users.items():
            if name.lower() == user.lower():
                return hmac.compare_digest(expected.encode(), password.encode())
        return False
