"""Run PowerShell scripts on one Windows host over WinRM, with one shell per host per run.

Built on pywinrm's :class:`winrm.protocol.Protocol` (as :class:`ShellProtocol`, whose envelopes
are templates) rather than ``Session.run_ps``, because
run_ps has three properties that do not survive contact with real runbooks:

* it puts the whole script on the command line (``-EncodedCommand``), and cmd.exe refuses
  command lines over 8,191 characters, so any script over about 3,000 characters fails;
* it opens and deletes a shell, and a TCP connection with a fresh NTLM handshake, per call;
* it waits for output forever (pywinrm retries WS-Man OperationTimeout faults indefinitely).

So a :class:`WinRMHost` opens its shell lazily (code page 65001 unless the host's OS predates
UTF-8 shells), keeps it for every later call, puts a script that fits on the command line
(``-EncodedCommand``, as run_ps does: one request fewer than stdin) and sends any other as UTF-8
over stdin behind a short bootstrap, and builds an overall deadline out of single Receive
requests. Each failure becomes a
:class:`TransportError` with a ``kind`` the engine can act on and a one-line message a person
can act on; no message ever contains a password.

Underneath, the default ``auth: ntlm`` on http travels on :class:`~cmrunbook.remote.winrm.ntlm_http.
NtlmChannel` (its own HTTP/1.1 client and pyspnego, message encryption); Kerberos, CredSSP,
Basic and https use pywinrm's requests-based transport. Either way a reply that should be
encrypted and is not is refused (:func:`refuse_plain_replies` for pywinrm's transport), never
read as data.

A WinRMHost is not thread-safe: the engine gives each host its own, used by one worker.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import math
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import requests
import requests.adapters
import urllib3.exceptions
import winrm.transport
from winrm.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)

from cmrunbook.remote import CommandResult, ErrorKind, TransportError
from cmrunbook.remote.winrm import clixml
from cmrunbook.remote.winrm.ntlm_http import (
    LAST_LEG,
    MAX_REPLY,
    ConnectTimeoutError,
    DeadlineError,
    LastLeg,
    NtlmChannel,
    ReplyTooLargeError,
    ntlm_hashes,
)
from cmrunbook.remote.winrm.sealing import EncryptionError
from cmrunbook.remote.winrm.shell import ShellProtocol, is_create

__all__ = [
    "BOOTSTRAP_ARGUMENTS",
    "BOOTSTRAP_SCRIPT",
    "INLINE_LIMIT",
    "POWERSHELL",
    "POWERSHELL_PATH",
    "Credentials",
    "Endpoint",
    "WinRMHost",
    "bound_replies",
    "inline_arguments",
    "refuse_plain_replies",
]

log = logging.getLogger(__name__)

AuthMethod = Literal["ntlm", "kerberos", "credssp", "basic"]
_AUTH_METHODS = ("ntlm", "kerberos", "credssp", "basic")

#: Reads all of stdin as UTF-8 and runs it as one script block. ``-Command -`` would run stdin
#: line by line and break every multi-line block; a StreamReader works from PowerShell 2.0 on.
BOOTSTRAP_SCRIPT = (
    "$r=New-Object IO.StreamReader([Console]::OpenStandardInput(),"
    "(New-Object Text.UTF8Encoding $false));$s=$r.ReadToEnd();$r.Close();"
    "& ([scriptblock]::Create($s))"
)
POWERSHELL = "powershell.exe"
BOOTSTRAP_ARGUMENTS: tuple[str, ...] = (
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-EncodedCommand",
    base64.b64encode(BOOTSTRAP_SCRIPT.encode("utf-16-le")).decode("ascii"),
)

#: A script on the command line goes to powershell.exe by CreateProcess, without cmd.exe
#: (WINRS_SKIP_CMD_SHELL): cmd.exe refuses command lines over 8,191 characters
#: (learn.microsoft.com/troubleshoot/windows-client/shell-experience/
#: command-line-string-limitation), CreateProcess takes 32,767 including the final null
#: (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-createprocessw),
#: room for a check script of 12,000 characters. How WinRS assembles the line from Command and
#: Arguments is UNCONFIRMED beyond the space between them, so 767 characters are left spare; a
#: longer script takes the bootstrap and stdin, which always work.
INLINE_LIMIT = 32000
#: Without cmd.exe, WinRS does not search the PATH: a bare ``powershell.exe`` fails with "The
#: system cannot find the file specified" (fault 2147942402) and the full path runs (recorded on
#: Windows Server 2016: tests/data/recorded/test_winrs_no_cmd_shell.yml). That the Windows
#: directory is C:\Windows on every host is UNCONFIRMED: on a host that answers the same fault,
#: the script goes over stdin through cmd.exe, and so does every later one on that host.
POWERSHELL_PATH = "C:\\Windows\\system32\\WindowsPowerShell\\v1.0\\powershell.exe"
FILE_NOT_FOUND = 2147942402
#: A script that reads its standard input must get it: it never goes on the command line.
#: Lower case, and compared with the script in lower case: PowerShell's names are not
#: case-sensitive (`$Input`, `openstandardinput()`).
_READS_STDIN = ("openstandardinput", "$input")

#: stdin is sent in pieces of this size: base64 of 64 KiB stays well inside the 150 KB
#: MaxEnvelopeSize of WMF 2.0 hosts (XP, Server 2003), while a normal script takes one Send.
STDIN_CHUNK = 64 * 1024

#: Seconds a terminate Signal may take after the deadline (a host answers it at once).
SIGNAL_GRACE = 2.0

#: Faults after which Windows wants a new shell (the WinRM Ruby gem resets on the same set):
#: quota exceeded (shells, operations, per user, system), shell not found, and the registry
#: error a logged-off user profile causes.
RETRYABLE_FAULT_CODES = frozenset(
    {2150858815, 2150859173, 2150859174, 2150859175, 2150859176, 2150859179, 2150858843, 2147943418}
)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one host's WinRM listener.

    ``auth`` is ntlm (default: message encryption on plain http), kerberos, credssp or basic.
    Basic sends the password in clear text on http, so it is refused there unless
    ``allow_unencrypted``.
    On https the certificate is validated unless ``cert_validation`` is off; ``ca_bundle``
    names a PEM file of trusted CAs (default: the certifi bundle).
    """

    host: str
    address: str
    port: int = 5985
    scheme: str = "http"
    path: str = "/wsman"
    auth: str = "ntlm"
    cert_validation: bool = True
    ca_bundle: str | None = None
    allow_unencrypted: bool = False

    @property
    def target(self) -> str:
        """The path part of the URL, with its leading slash: what a request line names."""
        return self.path if self.path.startswith("/") else f"/{self.path}"

    @property
    def url(self) -> str:
        """The WS-Man URL, e.g. ``http://10.0.0.5:5985/wsman``."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{address}:{self.port}{self.target}"


@dataclass(frozen=True)
class Credentials:
    """A user name (``user``, ``DOMAIN\\user`` or ``user@domain``) and a password that is
    kept out of ``repr`` so that it never reaches a log or a traceback."""

    username: str
    password: str = field(repr=False)


class WinRMHost:
    """One host's shell for one run: opened on the first :meth:`run`, reused until :meth:`close`.

    After the first call, a short script costs two WS-Man requests (Command, Receive), a long one
    three (Command, Send, Receive), on the one keep-alive TCP connection that NTLM authenticated.
    :attr:`requests` counts the WS-Man requests sent so far, for benchmarks. ``last_leg`` is what
    the run has learnt about sending the shell's Create on NTLM's last leg (default: the
    process's; a test passes its own).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: Credentials,
        *,
        operation_timeout: float = 20,
        read_timeout: float = 30,
        codepage: int = 65001,
        max_reply: int = MAX_REPLY,
        last_leg: LastLeg = LAST_LEG,
    ) -> None:
        self.endpoint = endpoint
        self._credentials = credentials
        # pywinrm takes whole seconds and needs the read timeout to outlast the operation timeout.
        self._operation_timeout = max(1, math.ceil(operation_timeout))
        self._read_timeout = math.ceil(read_timeout)
        self._codepage = codepage
        self._max_reply = max_reply
        self._last_leg = last_leg
        self._protocol: ShellProtocol | None = None
        self._shell_id: str | None = None
        self._inline = True  # False once the host has no powershell.exe at POWERSHELL_PATH
        self.requests = 0
        self._check_config()

    # -- public ------------------------------------------------------------------------------

    def run(self, script: str, *, deadline: float) -> CommandResult:
        """Run ``script`` and return its output; ``deadline`` is the seconds allowed overall.

        A script still running at the deadline is terminated (WS-Man Signal) and reported as a
        ``timeout``; the shell stays usable. After a connection-level failure the shell and the
        connection are dropped, and the next call starts afresh.
        """
        end = time.monotonic() + deadline
        before = self.requests
        with self._translated():
            stdout, stderr, exit_code = self._run(script, end, deadline)
        return CommandResult(
            stdout=_decode(stdout),
            stderr=clixml.to_text(_decode(stderr)),
            exit_code=exit_code,
            requests=self.requests - before,
        )

    def open(self, *, deadline: float) -> None:
        """Log on and open the shell now, within ``deadline`` seconds: the first requests of a
        first :meth:`run`, on their own, so that a run can try its credentials on one host
        before it sends them to every host."""
        end = time.monotonic() + deadline
        try:
            with self._translated():
                protocol = self._require_protocol()
                self._limit(end)
                if self._shell_id is None:
                    self._shell_id = protocol.open_shell(codepage=self._codepage)
        except TransportError as error:
            if error.kind != "fault":
                raise
            # A WS-Man fault (a shell quota, say) comes on an authenticated connection: the
            # logon worked, and run() opens the shell with its own retries.

    def close(self) -> None:
        """Delete the shell and close the connection; a later :meth:`run` opens new ones."""
        protocol, shell_id = self._protocol, self._shell_id
        self._protocol = self._shell_id = None
        if protocol is None:
            return
        try:
            if shell_id is not None:
                protocol.close_shell(shell_id, close_session=True)
        except Exception as exc:  # the shell times out on the host by itself
            log.debug("%s: deleting shell %s failed: %s", self.endpoint.host, shell_id, exc)
        finally:
            protocol.transport.close_session()

    def __enter__(self) -> WinRMHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the exchange ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Library exceptions become TransportErrors; after any but a WS-Man fault the shell
        and connection are dropped, and the timeouts go back to their defaults."""
        try:
            yield
        except TransportError:
            raise
        except Exception as exc:
            error = self._translate(exc)
            if error is None:
                raise
            if error.kind != "fault":
                self._discard()
            raise error from exc
        finally:
            self._limit(None)

    def _run(self, script: str, end: float, deadline: float) -> tuple[bytes, bytes, int]:
        inline = inline_arguments(script) if self._inline else None
        retried = False
        while True:
            protocol = self._require_protocol()
            try:
                self._limit(end)
                if self._shell_id is None:
                    self._shell_id = protocol.open_shell(codepage=self._codepage)
                shell_id = self._shell_id
                self._limit(end)
                if inline is None:
                    command_id = protocol.run_command(
                        shell_id, POWERSHELL, BOOTSTRAP_ARGUMENTS, console_mode_stdin=False
                    )
                else:
                    # stdin stays the console, as in run_ps (pywinrm's run_cmd default):
                    # nothing waits for a pipe that is never closed.
                    command_id = protocol.run_command(
                        shell_id, POWERSHELL_PATH, inline, skip_cmd_shell=True
                    )
                break
            except WSManFaultError as fault:
                if inline is not None and fault.wsman_fault_code == FILE_NOT_FOUND:
                    log.info(
                        "%s: no %s; scripts go over stdin", self.endpoint.host, POWERSHELL_PATH
                    )
                    self._inline, inline = False, None
                    continue
                if retried or not _needs_new_shell(fault):
                    raise
                retried = True
                log.info("%s: %s; opening a new shell", self.endpoint.host, fault.reason.strip())
                self._drop_shell()
        if inline is None:
            payload = script.encode("utf-8")
            pieces = [payload[i : i + STDIN_CHUNK] for i in range(0, len(payload), STDIN_CHUNK)]
            pieces = pieces or [b""]  # an empty script still has to close stdin
            for index, piece in enumerate(pieces, start=1):
                self._limit(end)
                protocol.send_command_input(shell_id, command_id, piece, end=index == len(pieces))
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        while True:
            if time.monotonic() >= end:
                self._give_up(shell_id, command_id, deadline)
            self._limit(end)
            try:
                out, err, exit_code, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                continue
            stdout.append(out)
            stderr.append(err)
            if done:
                return b"".join(stdout), b"".join(stderr), exit_code

    def _give_up(self, shell_id: str, command_id: str, deadline: float) -> None:
        self._limit(time.monotonic() + SIGNAL_GRACE)
        outcome = "the command was terminated"
        try:
            self._require_protocol().cleanup_command(shell_id, command_id)
        except Exception as exc:
            log.debug("%s: terminating command failed: %s", self.endpoint.host, exc)
            outcome = "terminating the command failed as well"
            self._discard()
        raise TransportError(
            self.endpoint.host,
            "timeout",
            f"script did not finish within {deadline:g} s at {self.endpoint.url}; {outcome}",
        )

    def _limit(self, end: float | None) -> None:
        """Fit the next request's timeouts into what is left of the deadline (None: defaults).

        A Receive waits server-side for the OperationTimeout, and every request may wait for the
        read timeout; both are cut down near the deadline so that the call overruns it by at most
        about a second. The read timeout always stays above the operation timeout.
        """
        if self._protocol is None:
            return
        operation, read = self._operation_timeout, self._read_timeout
        if end is not None:
            remaining = end - time.monotonic()
            operation = max(1, min(operation, int(remaining)))
            read = max(operation + 1, min(read, math.ceil(max(remaining, 0)) + 1))
        self._protocol.operation_timeout_sec = operation
        self._protocol.transport.read_timeout_sec = read

    # -- shell and protocol state ------------------------------------------------------------

    def _require_protocol(self) -> ShellProtocol:
        if self._protocol is None:
            self._protocol = self._new_protocol()
        return self._protocol

    def _new_protocol(self) -> ShellProtocol:
        endpoint = self.endpoint
        password = self._credentials.password
        secret = ntlm_hashes(password) if endpoint.auth == "ntlm" else password
        protocol = ShellProtocol(
            endpoint.url,
            transport=endpoint.auth,  # type: ignore[arg-type]  # checked in _check_config
            username=self._credentials.username,
            password=secret,
            server_cert_validation="validate" if endpoint.cert_validation else "ignore",
            ca_trust_path=endpoint.ca_bundle,  # type: ignore[arg-type]  # None: certifi's CAs
            read_timeout_sec=self._read_timeout,
            operation_timeout_sec=self._operation_timeout,
            proxy=None,  # never route WinRM through an http_proxy meant for the internet
        )
        if endpoint.auth == "ntlm" and endpoint.scheme == "http":
            protocol.transport = NtlmChannel(  # type: ignore[assignment]
                address=endpoint.address,
                port=endpoint.port,
                path=endpoint.target,
                username=self._credentials.username,
                secret=secret,
                read_timeout=self._read_timeout,
                max_reply=self._max_reply,
                may_repeat=is_create,
                last_leg=self._last_leg,
            )
        else:
            refuse_plain_replies(protocol.transport)
            bound_replies(protocol.transport, self._max_reply)
        send = protocol.send_message

        def counted(message: str) -> bytes:
            self.requests += 1
            return send(message)

        protocol.send_message = counted  # type: ignore[method-assign]
        return protocol

    def _drop_shell(self) -> None:
        """Delete the current shell, keeping the connection (quota and lost-shell faults)."""
        shell_id, self._shell_id = self._shell_id, None
        if shell_id is not None and self._protocol is not None:
            try:
                self._protocol.close_shell(shell_id, close_session=False)
            except Exception as exc:
                log.debug("%s: deleting shell %s failed: %s", self.endpoint.host, shell_id, exc)

    def _discard(self) -> None:
        """Forget shell and connection after a failure that leaves their state unknown.

        NTLM authenticates a TCP connection and seals each message with that connection's keys,
        so after a broken exchange nothing on the old session can be trusted or reused.
        """
        protocol, self._protocol, self._shell_id = self._protocol, None, None
        if protocol is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close_session()

    def _check_config(self) -> None:
        endpoint = self.endpoint

        def refuse(message: str) -> None:
            raise TransportError(endpoint.host, "config", message)

        if not self._credentials.username:
            refuse("no user name given")
        if endpoint.auth not in _AUTH_METHODS:
            refuse(f"unknown auth {endpoint.auth!r}; expected one of {', '.join(_AUTH_METHODS)}")
        if endpoint.scheme not in ("http", "https"):
            refuse(f"unknown scheme {endpoint.scheme!r}; expected http or https")
        plain = endpoint.scheme == "http" and not endpoint.allow_unencrypted
        if endpoint.auth == "basic" and plain:
            refuse(
                f"Basic authentication over plain http would send the password in clear text to "
                f"{endpoint.url}; use https, ntlm or kerberos (or set the inventory's winrm "
                f"allow_unencrypted: true)"
            )
        if endpoint.auth == "kerberos" and not winrm.transport.HAVE_KERBEROS:
            refuse("kerberos auth needs the 'kerberos' extra: pip install 'cmrunbook[kerberos]'")
        if endpoint.auth == "credssp" and not winrm.transport.HAVE_CREDSSP:
            refuse("credssp auth needs the 'credssp' extra: pip install 'cmrunbook[credssp]'")
        if self._read_timeout <= self._operation_timeout:
            refuse(
                f"read timeout ({self._read_timeout} s) must exceed the operation timeout "
                f"({self._operation_timeout} s): a Receive may legitimately wait that long"
            )

    # -- errors ------------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> TransportError | None:
        """Map pywinrm/requests exceptions to a TransportError; None for anything else (a bug)."""
        host, url = self.endpoint.host, self.endpoint.url

        def error(kind: ErrorKind, message: str, hint: str | None = None) -> TransportError:
            return TransportError(host, kind, _printable(message), hint)

        def waited() -> str:
            seconds = self._protocol.transport.read_timeout_sec if self._protocol else None
            return f"{seconds} s" if seconds else "the read timeout"

        if isinstance(exc, AuthenticationError):
            return error(
                "unauthorized",
                f"{url} rejected the credentials of {self._credentials.username} (HTTP 401)",
            )
        if isinstance(exc, WSManFaultError):
            code = f" {exc.wsman_fault_code}" if exc.wsman_fault_code is not None else ""
            sub = f" ({exc.fault_subcode})" if exc.fault_subcode else ""
            reason = " ".join((exc.reason or "").split())
            return error("fault", f"WS-Man fault{code}{sub} from {url}: {reason}")
        if isinstance(exc, WinRMTransportError):
            hint = " (no WinRM listener for this path)" if exc.code == 404 else ""
            text = " ".join(str(exc.response_text or "").split())[:200]
            detail = f": {text}" if text else ""
            return error("http", f"HTTP {exc.code} from {url}{hint}{detail}")
        if isinstance(exc, requests.exceptions.SSLError):
            return error(
                "config",
                f"TLS with {url} failed ({_innermost(exc)}); check the certificate or ca_bundle",
            )
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return error("timeout", f"connecting to {url} timed out")
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return error("timeout", f"no answer from {url} within {waited()} (read timeout)")
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return error("reset", f"connection to {url} broke in the middle of a response")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return error(*_connection_failure(exc, url))
        if isinstance(exc, requests.exceptions.RequestException):
            return error("http", f"request to {url} failed: {_innermost(exc)}")
        if isinstance(exc, WinRMError):
            return error("http", f"WinRM protocol error with {url}: {exc}")
        # The NTLM channel's own failures: http.client and the socket, unwrapped.
        if isinstance(exc, ConnectTimeoutError):
            return error("timeout", f"connecting to {url} timed out")
        if isinstance(exc, DeadlineError):
            return error("timeout", f"{url} was still sending its reply after {waited()}")
        if isinstance(exc, ReplyTooLargeError):
            return error(
                "http",
                f"reply from {url} over the {self._max_reply // 2**20} MB cap ({exc}); refused "
                "unread (the inventory's winrm max_reply_mb sets the cap)",
            )
        if isinstance(exc, TimeoutError):
            return error("timeout", f"no answer from {url} within {waited()} (read timeout)")
        if isinstance(exc, http.client.IncompleteRead):
            return error("reset", f"connection to {url} broke in the middle of a response")
        if isinstance(exc, EncryptionError):
            return error("http", f"untrusted reply from {url}: {exc}")
        if isinstance(exc, OSError | http.client.HTTPException):
            return error(*_connection_failure(exc, url))
        if isinstance(exc, AssertionError | StopIteration | KeyError | ValueError | ET.ParseError):
            return error("http", f"unexpected reply from {url} ({type(exc).__name__}: {exc})")
        return None


def inline_arguments(script: str) -> tuple[str, ...] | None:
    """powershell.exe's arguments that carry ``script`` itself, or None when it must go over
    stdin: the command line would pass INLINE_LIMIT, the script reads stdin, or it is empty
    (``-EncodedCommand`` without a value is an error, not an empty script).

    ``-EncodedCommand`` takes base64 of UTF-16LE, as pywinrm's ``Session.run_ps`` sends it, so a
    script of up to about 12,000 characters fits.
    """
    if not script or any(token in script.lower() for token in _READS_STDIN):
        return None
    # 8 characters of base64 per 3 script characters: check the length before encoding.
    fixed = len(POWERSHELL_PATH) + len(" ".join(BOOTSTRAP_ARGUMENTS[:-1])) + 2
    if fixed + len(script) * 8 // 3 > INLINE_LIMIT:
        return None
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    arguments = (*BOOTSTRAP_ARGUMENTS[:-1], encoded)
    if len(POWERSHELL_PATH) + 1 + len(" ".join(arguments)) > INLINE_LIMIT:
        return None
    return arguments


def refuse_plain_replies(transport: winrm.transport.Transport) -> None:
    """Make pywinrm's transport refuse a plain reply once it encrypts (Kerberos, CredSSP on http).

    pywinrm 0.5.0's ``Encryption.parse_encrypted_response`` returns the body as it came when the
    Content-Type does not name its protocol, so a plain reply from anyone on the path is read
    as the host's answer (attack 4f). Here such a reply raises EncryptionError instead.
    """
    read = transport._get_message_response_text

    def opened(response: requests.Response) -> bytes:
        encryption = transport.encryption
        if encryption is not None:
            protocol = encryption.protocol_string.decode()
            content_type = response.headers.get("Content-Type", "")
            if f'protocol="{protocol}"' not in content_type:
                raise EncryptionError(
                    f"reply not encrypted: refusing it (HTTP {response.status_code}, "
                    f"Content-Type {content_type[:80]!r})"
                )
        return read(response)

    transport._get_message_response_text = opened  # type: ignore[method-assign]


class _BoundedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, reading each reply body up to a cap and within one deadline.

    requests reads a body whole, with its timeout applying to each read (attack 4d, 4e): here
    the body is read piece by piece, each read given only the time left of the request's
    timeout, and refused as soon as it passes the cap (a declared length over it: unread).
    """

    def __init__(self, max_reply: int) -> None:
        super().__init__()
        self.max_reply = max_reply

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
        **kwargs: object,
    ) -> requests.Response:
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        end = time.monotonic() + (seconds or 30)
        response = super().send(request, stream=True, timeout=timeout, **kwargs)  # type: ignore[arg-type]
        if not stream:
            try:
                response._content = _read_bounded(response.raw, self.max_reply, end)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise DeadlineError("the reply was still incomplete at the deadline") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise requests.exceptions.ChunkedEncodingError(exc) from exc
        return response


def _read_bounded(raw: urllib3.response.BaseHTTPResponse, limit: int, end: float) -> bytes:
    """The body of ``raw``; ReplyTooLargeError past ``limit``, DeadlineError at ``end``."""
    declared = raw.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raw.close()
        raise ReplyTooLargeError(f"the reply declares {declared} bytes")
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    pieces: list[bytes] = []
    size = 0
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raw.close()
            raise DeadlineError("the reply was still incomplete at the deadline")
        if sock is not None:
            sock.settimeout(remaining)
        piece = raw.read1(64 * 1024)
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > limit:
            raw.close()
            raise ReplyTooLargeError(f"the reply went on past {limit} bytes")
        pieces.append(piece)


def bound_replies(transport: winrm.transport.Transport, max_reply: int) -> None:
    """Give pywinrm's transport the NTLM channel's reply cap and deadline.

    The adapter goes on the requests session pywinrm builds, before the authenticating request
    that sets up message encryption (which is sent while the session is being built).
    """
    adapter = _BoundedAdapter(max_reply)
    build, setup = transport.build_session, transport.setup_encryption

    def mount(session: requests.Session) -> None:
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    def set_up(session: requests.Session) -> None:
        mount(session)
        setup(session)

    def built() -> requests.Session:
        fresh = transport.session is None
        session = build()
        if fresh:
            mount(session)
        return session

    transport.setup_encryption = set_up  # type: ignore[method-assign]
    transport.build_session = built  # type: ignore[method-assign]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


def _needs_new_shell(fault: WSManFaultError) -> bool:
    subcode = fault.fault_subcode or ""
    return fault.wsman_fault_code in RETRYABLE_FAULT_CODES or subcode.endswith("QuotaLimit")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception wrapped inside ``exc`` (requests -> urllib3 -> socket), outermost first."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [getattr(current, "reason", None), current.__cause__, current.__context__]
        nested += list(current.args)
        stack.extend(item for item in nested if isinstance(item, BaseException))


def _innermost(exc: BaseException) -> str:
    """The innermost error's text, cut short: http.client puts up to 64 KB of what the peer
    sent (a status line that is not one) into it."""
    *_, last = _chain(exc)
    text = str(last) or type(last).__name__
    return text if len(text) <= _WIRE_TEXT else f"{text[:_WIRE_TEXT]}... ({len(text)} characters)"


#: Characters of peer-supplied text (a bad status line, an error body) kept in a message.
_WIRE_TEXT = 200


def _printable(text: str) -> str:
    """``text`` with every control character written as an escape (attack 4g).

    Messages carry what a peer sent: raw ESC, BEL or CR bytes would set a terminal's title,
    erase lines and draw fake ones in the operator's console and in the reports.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_BROKEN = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def _connection_failure(exc: BaseException, url: str) -> tuple[ErrorKind, str, str | None]:
    """(kind, message, hint); the hint is a guess at the cause the engine may know better."""
    chain = list(_chain(exc))
    listening = "is WinRM listening?"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused", f"connection refused at {url}", listening
    if any(isinstance(e, http.client.RemoteDisconnected) for e in chain):
        return "refused", f"{url} closed the connection without answering", listening
    if any(isinstance(e, _BROKEN) for e in chain):
        return "reset", f"connection to {url} was reset", None
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "refused", f"cannot resolve the address in {url} ({_innermost(exc)})", None
    if any(isinstance(e, http.client.BadStatusLine) for e in chain):
        return "http", f"{url} answered something that is not HTTP ({_innermost(exc)})", None
    return "refused", f"cannot connect to {url} ({_innermost(exc)})", None
