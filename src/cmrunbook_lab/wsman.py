"""The lab's WS-Management server: the WinRM shell protocol as pywinrm 0.5.0 speaks it.

This module knows the protocol and nothing about ConfigMgr. A simulated host plugs in behind it as
a :class:`HostBackend`, which starts :class:`Command` objects; the server turns WS-Man Create,
Command, Send, Receive, Signal and Delete requests into calls on them. Everything a client can
observe on the wire is meant to match a real Windows host closely enough that the engine's
transport is tested against the same behaviour it meets in production:

* one URL per simulated host (``/wsman/<hostname>``, or ``/wsman`` for a configured default host,
  because pywinrm's ``Session`` truncates any longer path), unknown host -> HTTP 404;
* NTLM with message encryption over HTTP (see :mod:`cmrunbook_lab.ntlm`), Basic only on request;
* HTTP/1.1 keep-alive with Nagle disabled, so a run costs one TCP connection per host and a
  request costs no 40 ms delayed-ACK stall;
* a Receive with no output waits up to the request's ``OperationTimeout`` and then answers with
  the ``w:TimedOut`` fault, which pywinrm turns into ``WinRMOperationTimeoutError``;
* cmd.exe's 8,191-character command-line limit: the command fails with "The command line is too
  long." and exit code 1, as ``Session.run_ps`` of a large script does on Windows;
* faults injected per host while the server runs (:class:`FaultInjector`), and request and
  connection counters for benchmarks (:class:`ServerStats`).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import enum
import hmac
import re
import select
import socket
import threading
import time
import uuid
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Protocol
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from cmrunbook.remote.winrm.sealing import ENCRYPTED_CONTENT_TYPE, EncryptionError, seal, unseal
from cmrunbook_lab.ntlm import (
    AuthenticationFailed,
    CredentialFile,
    NTLMAcceptor,
    parse_authorization,
)

__all__ = [
    "ACTIONS",
    "Command",
    "CommandIO",
    "CommandTerminated",
    "EchoBackend",
    "FaultInjector",
    "FaultKind",
    "FunctionBackend",
    "FunctionCommand",
    "HostBackend",
    "LabServer",
    "ServerStats",
    "WireStats",
    "command_line",
    "encoded_command",
    "split_command_line",
]


# --------------------------------------------------------------------------------------------
# What a simulated host implements
# --------------------------------------------------------------------------------------------


class Command(Protocol):
    """One running command on a simulated host."""

    def send_input(self, data: bytes, end: bool) -> None:
        """Feed stdin; ``end`` closes it (the client will send no more)."""

    def receive(self, timeout: float) -> tuple[bytes, bytes, bool, int | None]:
        """Wait up to timeout for output; return (stdout, stderr, done, exit_code)."""
        ...

    def terminate(self) -> None:
        """Stop the command (Signal terminate/ctrl_c, shell deleted, server stopping)."""


class HostBackend(Protocol):
    """One simulated host: starts a command for each WS-Man Command request."""

    def start_command(self, command: str, arguments: list[str]) -> Command:
        """``command`` and ``arguments`` are the rsp:Command and rsp:Arguments texts as sent."""
        ...


BackendSource = Mapping[str, HostBackend] | Callable[[str], HostBackend | None]

ACTIONS: tuple[str, ...] = ("Create", "Command", "Send", "Receive", "Signal", "Delete")


# --------------------------------------------------------------------------------------------
# Command-line helpers for backends
# --------------------------------------------------------------------------------------------


def command_line(command: str, arguments: Sequence[str]) -> str:
    """The command line Windows builds from a Command request: command and arguments joined."""
    return " ".join([command, *arguments]) if arguments else command


def split_command_line(line: str) -> list[str]:
    """Split a Windows command line into argv the way ``CommandLineToArgvW`` does.

    Backends need argv (for example to find ``-EncodedCommand``); pywinrm sends all arguments as
    one space-joined string, so the split has to follow Windows' quoting rules, not POSIX ones.
    """
    argv: list[str] = []
    current: list[str] = []
    in_quotes = False
    have_token = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            run = 0
            while i < len(line) and line[i] == "\\":
                run += 1
                i += 1
            if i < len(line) and line[i] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * run)
            have_token = True
            continue
        if char == '"':
            if in_quotes and i + 1 < len(line) and line[i + 1] == '"':
                current.append('"')
                i += 2
                continue
            in_quotes = not in_quotes
            have_token = True
        elif char in " \t" and not in_quotes:
            if have_token:
                argv.append("".join(current))
                current = []
                have_token = False
        else:
            current.append(char)
            have_token = True
        i += 1
    if have_token:
        argv.append("".join(current))
    return argv


_ENCODED_COMMAND_NAMES = {"e", "ec", *("encodedcommand"[:n] for n in range(2, 15))}


def encoded_command(argv: Sequence[str]) -> str | None:
    """The script passed to ``powershell.exe -EncodedCommand`` (any accepted abbreviation), or None.

    A simulated host has to read what the engine really sent; for a one-liner that is the
    base64 UTF-16LE text after ``-EncodedCommand``.
    """
    for index, arg in enumerate(argv[:-1]):
        if arg[:1] in "-/" and arg[1:].lower() in _ENCODED_COMMAND_NAMES:
            try:
                return base64.b64decode(argv[index + 1], validate=True).decode("utf-16-le")
            except (ValueError, UnicodeDecodeError):
                return None
    return None


# --------------------------------------------------------------------------------------------
# A small built-in backend: commands driven by a Python function in a thread
# --------------------------------------------------------------------------------------------


class CommandTerminated(Exception):
    """Raised inside a :class:`FunctionCommand`'s function once the client terminated it."""


class CommandIO:
    """What a function-backed command sees: stdin, stdout/stderr and cancellation.

    All state sits behind one condition variable so that the server's Receive (waiting for
    output), the client's Send (feeding stdin) and Signal (terminating) wake each other promptly.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._stdin = bytearray()
        self._stdin_closed = False
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._terminated = False
        self._done = False
        self._exit_code: int | None = None

    # -- the command function's side ---------------------------------------------------------

    @property
    def terminated(self) -> bool:
        """True once the client signalled the command (or its shell went away)."""
        return self._terminated

    def read_stdin(self) -> bytes:
        """Block until the client closed stdin (Send with End) and return all of it."""
        with self._cond:
            self._cond.wait_for(lambda: self._stdin_closed or self._terminated)
            if self._terminated:
                raise CommandTerminated
            return bytes(self._stdin)

    def write_stdout(self, data: bytes | str) -> None:
        """Emit output; ``str`` is encoded as UTF-8 (the engine always opens code page 65001)."""
        self._write(self._stdout, data)

    def write_stderr(self, data: bytes | str) -> None:
        """Emit error output; ``str`` is encoded as UTF-8."""
        self._write(self._stderr, data)

    def sleep(self, seconds: float) -> None:
        """Wait like a busy process; raise :class:`CommandTerminated` as soon as it is signalled."""
        with self._cond:
            if self._cond.wait_for(lambda: self._terminated, timeout=seconds):
                raise CommandTerminated

    def _write(self, buffer: bytearray, data: bytes | str) -> None:
        with self._cond:
            buffer += data.encode("utf-8") if isinstance(data, str) else data
            self._cond.notify_all()

    # -- the server's side -------------------------------------------------------------------

    def _feed(self, data: bytes, end: bool) -> None:
        with self._cond:
            if self._stdin_closed and data:
                raise ValueError("stdin of this command was already closed")
            self._stdin += data
            self._stdin_closed = self._stdin_closed or end
            self._cond.notify_all()

    def _drain(self, timeout: float) -> tuple[bytes, bytes, bool, int | None]:
        with self._cond:
            self._cond.wait_for(lambda: self._stdout or self._stderr or self._done, timeout)
            out, err = bytes(self._stdout), bytes(self._stderr)
            self._stdout.clear()
            self._stderr.clear()
            return out, err, self._done, self._exit_code if self._done else None

    def _finish(self, exit_code: int) -> None:
        with self._cond:
            self._done = True
            self._exit_code = exit_code
            self._cond.notify_all()

    def _terminate(self) -> None:
        with self._cond:
            self._terminated = True
            self._cond.notify_all()


CommandFunction = Callable[[CommandIO], int | None]


class FunctionCommand:
    """A :class:`Command` whose behaviour is a Python function run in its own daemon thread.

    The function gets a :class:`CommandIO` and returns the exit code (None means 0). If it is
    terminated it ends with exit code 1 (what a killed console process usually reports); if it
    raises, the exception text goes to stderr and the exit code is 1.
    """

    def __init__(
        self, function: CommandFunction, on_terminate: Callable[[], None] | None = None
    ) -> None:
        self.io = CommandIO()
        self._on_terminate = on_terminate
        self._thread = threading.Thread(
            target=self._run, args=(function,), name="lab-command", daemon=True
        )
        self._thread.start()

    def _run(self, function: CommandFunction) -> None:
        try:
            code = function(self.io)
        except CommandTerminated:
            code = 1
        except Exception as exc:  # a backend bug must show up as the command's failure
            self.io.write_stderr(f"{type(exc).__name__}: {exc}\r\n")
            code = 1
        self.io._finish(0 if code is None else int(code))

    def send_input(self, data: bytes, end: bool) -> None:
        self.io._feed(data, end)

    def receive(self, timeout: float) -> tuple[bytes, bytes, bool, int | None]:
        return self.io._drain(timeout)

    def terminate(self) -> None:
        if not self.io.terminated and self._on_terminate is not None:
            self._on_terminate()
        self.io._terminate()


class FunctionBackend:
    """A :class:`HostBackend` that runs ``function(command, arguments, io)`` for every command.

    ``started`` and ``terminated`` count commands, so that a test can check, for example, that a
    client really signalled a command it gave up on.
    """

    def __init__(self, function: Callable[[str, list[str], CommandIO], int | None]) -> None:
        self._function = function
        self._lock = threading.Lock()
        self.started = 0
        self.terminated = 0

    def start_command(self, command: str, arguments: list[str]) -> Command:
        with self._lock:
            self.started += 1
        return FunctionCommand(
            lambda io: self._function(command, list(arguments), io), self._count_termination
        )

    def _count_termination(self) -> None:
        with self._lock:
            self.terminated += 1


_DIRECTIVE = re.compile(r"^\s*#\s*lab:\s*(?P<verb>[a-z]+)\b[ \t]?(?P<rest>.*)$", re.IGNORECASE)


class EchoBackend(FunctionBackend):
    """Echoes the script it was sent, and obeys ``# lab:`` directive lines in it.

    The script is stdin (the engine's bootstrap) or, for a ``powershell -EncodedCommand`` that
    does not read stdin (pywinrm's own ``run_ps``), the decoded command. It is written to stdout
    unchanged, then these lines act in order:

    * ``# lab: sleep <seconds>``: wait (a terminate interrupts it);
    * ``# lab: stderr <text>``: write ``<text>`` and CRLF to stderr;
    * ``# lab: exit <code>``: the exit code (default 0).
    """

    def __init__(self) -> None:
        super().__init__(self._echo)

    @staticmethod
    def _echo(command: str, arguments: list[str], io: CommandIO) -> int:
        script = encoded_command(split_command_line(command_line(command, arguments)))
        if script is not None and "OpenStandardInput" not in script and "$input" not in script:
            data = script.encode("utf-8")
        else:
            data = io.read_stdin()
        io.write_stdout(data)
        exit_code = 0
        for line in data.decode("utf-8", "replace").splitlines():
            match = _DIRECTIVE.match(line)
            if not match:
                continue
            verb, rest = match["verb"].lower(), match["rest"].strip()
            if verb == "sleep":
                io.sleep(float(rest))
            elif verb == "stderr":
                io.write_stderr(match["rest"] + "\r\n")
            elif verb == "exit":
                exit_code = int(rest)
        return exit_code


class _FinishedCommand:
    """A command that failed before it started (cmd.exe refused the command line)."""

    def __init__(self, stdout: bytes, stderr: bytes, exit_code: int) -> None:
        self._output: tuple[bytes, bytes, bool, int | None] = (stdout, stderr, True, exit_code)

    def send_input(self, data: bytes, end: bool) -> None:
        """The process is gone; Windows drops stdin written to it."""

    def receive(self, timeout: float) -> tuple[bytes, bytes, bool, int | None]:
        output, self._output = self._output, (b"", b"", True, self._output[3])
        return output

    def terminate(self) -> None:
        """Nothing runs."""


# --------------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireStats:
    """What went over the wire for one host since the last reset (the lab server's counters).

    ``connections`` counts the TCP connections that carried at least one request for the host;
    ``requests`` counts WS-Man requests by action (every action in :data:`ACTIONS` is present).
    The NTLM handshake is not a WS-Man request and is not counted there; ``http_requests``
    counts every HTTP request, handshake legs and refused ones included; ``rejected`` counts
    the NTLM AUTHENTICATE messages refused with a 401 (each one a failed logon for the account,
    what a domain counts towards its lockout threshold).
    """

    connections: int
    requests: Mapping[str, int]
    http_requests: int
    rejected: int = 0

    @property
    def total_requests(self) -> int:
        """All WS-Man requests of any action."""
        return sum(self.requests.values())


class ServerStats:
    """Thread-safe request and connection counters per host (host names in lower case)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, int] = {}
        self._requests: dict[str, dict[str, int]] = {}
        self._http: dict[str, int] = {}
        self._rejected: dict[str, int] = {}
        self.generation = 0  # bumped by reset(), so open connections are counted again

    def snapshot(self) -> dict[str, WireStats]:
        """A consistent copy of all counters."""
        with self._lock:
            hosts = set(self._connections) | set(self._requests)
            return {
                host: WireStats(
                    connections=self._connections.get(host, 0),
                    requests={a: self._requests.get(host, {}).get(a, 0) for a in ACTIONS},
                    http_requests=self._http.get(host, 0),
                    rejected=self._rejected.get(host, 0),
                )
                for host in sorted(hosts)
            }

    def reset(self) -> None:
        """Zero everything; a connection still open counts again when it is next used."""
        with self._lock:
            self._connections.clear()
            self._requests.clear()
            self._http.clear()
            self._rejected.clear()
            self.generation += 1

    def _count_connection(self, host: str) -> None:
        with self._lock:
            self._connections[host] = self._connections.get(host, 0) + 1

    def _count_http(self, host: str) -> None:
        with self._lock:
            self._http[host] = self._http.get(host, 0) + 1

    def _count_rejected(self, host: str) -> None:
        with self._lock:
            self._rejected[host] = self._rejected.get(host, 0) + 1

    def _count_request(self, host: str, action: str) -> None:
        with self._lock:
            per_host = self._requests.setdefault(host, {})
            per_host[action] = per_host.get(action, 0) + 1


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


class FaultKind(enum.StrEnum):
    """Protocol-level failures the lab can inject; the client-side kind is in brackets.

    * ``refuse``: close the TCP connection without any response [refused];
    * ``http500``: HTTP 500 with a WS-Man ``w:InternalError`` fault body [fault];
    * ``hang``: no answer until the client gives up (its read timeout) [timeout];
    * ``reset``: status line, headers and half the body, then close [reset];
    * ``quota``: the WS-Man ``w:QuotaLimit`` fault Windows sends when a user has too many shells
      (on Create) or operations (on Command); only applies to those two actions [fault].
    """

    REFUSE = "refuse"
    HTTP500 = "http500"
    HANG = "hang"
    RESET = "reset"
    QUOTA = "quota"


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int | None
    actions: frozenset[str]
    until: float | None


class FaultInjector:
    """Per-host faults, set and cleared while the server runs (thread-safe).

    A fault applies to the host's next WS-Man requests whose action it covers, ``count`` times
    (None: until cleared or until ``seconds`` have passed). The NTLM handshake is never faulted,
    so a count is an exact number of WS-Man requests.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, dict[FaultKind, _Fault]] = {}

    def set(
        self,
        host: str,
        kind: FaultKind | str,
        *,
        count: int | None = 1,
        actions: Iterable[str] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Arm ``kind`` for ``host``, replacing an earlier fault of the same kind.

        ``actions`` limits it to some of :data:`ACTIONS` (default: all; for ``quota``, Create and
        Command). ``count=None`` with ``seconds`` makes a host misbehave for a while, as during a
        reboot.
        """
        kind = FaultKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for 'until cleared')")
        allowed = {"Create", "Command"} if kind is FaultKind.QUOTA else set(ACTIONS)
        chosen = set(actions) if actions is not None else allowed
        if not chosen or not chosen <= allowed:
            raise ValueError(f"{kind} faults apply to {sorted(allowed)}, not {sorted(chosen)}")
        until = time.monotonic() + seconds if seconds is not None else None
        with self._lock:
            self._faults.setdefault(host.lower(), {})[kind] = _Fault(
                kind, count, frozenset(chosen), until
            )

    def clear(self, host: str | None = None) -> None:
        """Remove the faults of one host, or of every host."""
        with self._lock:
            if host is None:
                self._faults.clear()
            else:
                self._faults.pop(host.lower(), None)

    def pending(self, host: str) -> dict[FaultKind, int | None]:
        """Armed faults of a host and how many requests each will still hit (None: no limit)."""
        now = time.monotonic()
        with self._lock:
            return {
                kind: fault.remaining
                for kind, fault in self._faults.get(host.lower(), {}).items()
                if fault.until is None or fault.until > now
            }

    def _take(self, host: str, action: str) -> FaultKind | None:
        now = time.monotonic()
        with self._lock:
            faults = self._faults.get(host, {})
            for kind, fault in list(faults.items()):
                if fault.until is not None and fault.until <= now:
                    del faults[kind]
                    continue
                if action not in fault.actions:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del faults[kind]
                return kind
        return None


# --------------------------------------------------------------------------------------------
# WS-Man vocabulary
# --------------------------------------------------------------------------------------------

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
_SHELL_NS = NS["rsp"]
_CMD_RESOURCE = f"{_SHELL_NS}/cmd"
_TRANSFER = NS["x"]
_ACTION_URIS = {
    f"{_TRANSFER}/Create": "Create",
    f"{_TRANSFER}/Delete": "Delete",
    f"{_SHELL_NS}/Command": "Command",
    f"{_SHELL_NS}/Send": "Send",
    f"{_SHELL_NS}/Receive": "Receive",
    f"{_SHELL_NS}/Signal": "Signal",
}
_RESPONSE_ACTIONS = {
    "Create": f"{_TRANSFER}/CreateResponse",
    "Delete": f"{_TRANSFER}/DeleteResponse",
    "Command": f"{_SHELL_NS}/CommandResponse",
    "Send": f"{_SHELL_NS}/SendResponse",
    "Receive": f"{_SHELL_NS}/ReceiveResponse",
    "Signal": f"{_SHELL_NS}/SignalResponse",
}
_FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
_STATE_DONE = f"{_SHELL_NS}/CommandState/Done"
_STATE_RUNNING = f"{_SHELL_NS}/CommandState/Running"

# Windows error codes the lab reports (winerror.h, ERROR_WSMAN_*).
CODE_OPERATION_TIMEOUT = 2150858793
CODE_SHELL_NOT_FOUND = 2150858843
CODE_QUOTA_MAX_SHELLS = 2150859173
CODE_QUOTA_MAX_OPERATIONS = 2150859174
CODE_UNSPECIFIED = 2147500037  # E_FAIL
CODE_FILENAME_TOO_LONG = 206  # ERROR_FILENAME_EXCED_RANGE, CreateProcess past 32,767 chars

CMD_LINE_LIMIT = 8191  # cmd.exe
CREATE_PROCESS_LIMIT = 32767  # WINRS_SKIP_CMD_SHELL=TRUE goes straight to CreateProcess
_TIMED_OUT_TEXT = (
    "The WS-Management service cannot complete the operation within the time specified in "
    "OperationTimeout.  "
)


class WSManFault(Exception):
    """A SOAP fault as Windows' WinRM service sends it (always with HTTP status 500)."""

    def __init__(self, subcode: str, reason: str, code: int | None = None, sender: bool = False):
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.code = code
        self.sender = sender

    def body(self, machine: str) -> str:
        """The ``s:Fault`` element."""
        code_attr = f" Code={quoteattr(str(self.code))}" if self.code is not None else ""
        return (
            f"<s:Fault><s:Code><s:Value>s:{'Sender' if self.sender else 'Receiver'}</s:Value>"
            f"<s:Subcode><s:Value>{escape(self.subcode)}</s:Value></s:Subcode></s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">{escape(self.reason)}</s:Text></s:Reason>'
            f"<s:Detail><f:WSManFault{code_attr} Machine={quoteattr(machine)}>"
            f"<f:Message>{escape(self.reason)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
        )


def _envelope(action: str, relates_to: str | None, body: str) -> str:
    namespaces = " ".join(f"xmlns:{prefix}={quoteattr(uri)}" for prefix, uri in NS.items())
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f'<s:Envelope xml:lang="en-US" {namespaces}><s:Header>'
        f"<a:Action>{escape(action)}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"{relates}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d*)?)H)?(?:(\d+(?:\.\d*)?)M)?(?:(\d+(?:\.\d*)?)S)?$")


def _parse_duration(text: str | None, default: float) -> float:
    match = _DURATION.match((text or "").strip())
    if not text or not match:
        return default
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _codec(codepage: int) -> str:
    return "utf-8" if codepage == 65001 else f"cp{codepage}"


@dataclass
class _Request:
    action: str  # one of ACTIONS
    message_id: str
    resource_uri: str
    shell_id: str | None
    options: dict[str, str]
    operation_timeout: float
    max_envelope: int
    body: ET.Element


def _parse_request(data: bytes) -> _Request:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManFault(
            "w:SchemaValidationError", f"The request is not XML: {exc}", sender=True
        ) from exc
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise WSManFault("w:SchemaValidationError", "The SOAP envelope is incomplete.", sender=True)
    action_uri = (header.findtext("a:Action", "", NS) or "").strip()
    action = _ACTION_URIS.get(action_uri)
    if action is None:
        raise WSManFault(
            "a:ActionNotSupported",
            f"The action {action_uri!r} is not supported by the service.",
            sender=True,
        )
    selector = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS)
    options = {
        option.get("Name", ""): (option.text or "").strip()
        for option in header.findall("w:OptionSet/w:Option", NS)
    }
    try:
        max_envelope = int(header.findtext("w:MaxEnvelopeSize", "153600", NS) or 153600)
    except ValueError:
        max_envelope = 153600
    return _Request(
        action=action,
        message_id=(header.findtext("a:MessageID", "", NS) or "").strip(),
        resource_uri=(header.findtext("w:ResourceURI", "", NS) or "").strip(),
        shell_id=selector.text.strip() if selector is not None and selector.text else None,
        options=options,
        operation_timeout=_parse_duration(header.findtext("w:OperationTimeout", None, NS), 60.0),
        max_envelope=max_envelope,
        body=body,
    )


# --------------------------------------------------------------------------------------------
# Shell state
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _ServerCommand:
    id: str
    process: Command
    stdout: bytearray = field(default_factory=bytearray)  # received from the backend, not sent
    stderr: bytearray = field(default_factory=bytearray)
    done: bool = False
    exit_code: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one Receive at a time


@dataclass(eq=False)
class _Shell:
    id: str
    host: str
    codepage: int
    commands: dict[str, _ServerCommand] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)  # delivered to the client, not yet signalled
    lock: threading.Lock = field(default_factory=threading.Lock)

    def terminate_all(self) -> None:
        with self.lock:
            running = list(self.commands.values())
            self.commands.clear()
            self.finished.clear()
        for command in running:
            command.process.terminate()


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

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
            return seal(self.acceptor.context, data), ENCRYPTED_CONTENT_TYPE
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
            request = _parse_request(message)
        except WSManFault as fault:
            self._send_fault(fault, host, None)
            return
        self.lab.stats._count_request(host, request.action)
        injected = self.lab.faults._take(host, request.action)
        if injected is not None:
            self._inject(injected, host, request)
            return
        try:
            xml = self.lab._dispatch(host, backend, request)
        except WSManFault as fault:
            self._send_fault(fault, host, request.message_id)
            return
        self._reply(200, *self._soap_body(xml))

    def _send_fault(self, fault: WSManFault, host: str, relates_to: str | None) -> None:
        self._reply(500, *self._soap_body(_envelope(_FAULT_ACTION, relates_to, fault.body(host))))

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
            return unseal(self.acceptor.context, body, self.headers.get("Content-Type", ""))
        except EncryptionError as exc:
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
        return self._decrypt(body)

    def _inject(self, kind: FaultKind, host: str, request: _Request) -> None:
        if kind is FaultKind.REFUSE:
            self.close_connection = True
        elif kind is FaultKind.HANG:
            self._hang()
        elif kind is FaultKind.RESET:
            fault = WSManFault("w:InternalError", "The connection was reset.", CODE_UNSPECIFIED)
            xml = _envelope(_FAULT_ACTION, request.message_id, fault.body(host))
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
            self._send_fault(_quota_fault(request.action), host, request.message_id)

    def _hang(self) -> None:
        """Answer nothing until the client closes the connection (its read timeout)."""
        deadline = time.monotonic() + _HANG_LIMIT
        while not self.lab._stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if readable:
                break  # the client closed (or, against HTTP, sent more): stop hanging
        self.close_connection = True


def _quota_fault(action: str) -> WSManFault:
    if action == "Create":
        return WSManFault(
            "w:QuotaLimit",
            "The WS-Management service cannot process the request. This user is allowed a "
            "maximum number of 30 concurrent shells, which has been exceeded. Close existing "
            "shells or raise the quota for this user.",
            CODE_QUOTA_MAX_SHELLS,
        )
    return WSManFault(
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. This user is allowed a maximum "
        "number of 25 concurrent operations, which has been exceeded. Close existing operations "
        "for this user, or raise the quota for this user.",
        CODE_QUOTA_MAX_OPERATIONS,
    )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's listen backlog is 5: a hundred clients connecting at once overflowed it, and
    # each dropped SYN cost its client a one-second retransmit. HTTP.sys queues far more.
    request_queue_size = socket.SOMAXCONN
    lab: LabServer


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class LabServer:
    """A WS-Management (WinRM shell) server for simulated hosts, on one local port.

    ``backends`` maps host names to backends, or is a function returning the backend for a name
    (None: no such host, HTTP 404). ``users`` maps user names to passwords for NTLM (and Basic
    when ``allow_basic``). ``default_host`` is served at plain ``/wsman``. The socket is bound
    at construction, so :attr:`port` and :meth:`endpoint` work before :meth:`start`.
    Host names are matched case-insensitively; counters and faults use them in lower case.
    """

    MAX_OPERATION_TIMEOUT: ClassVar[float] = 3600.0

    def __init__(
        self,
        backends: BackendSource,
        users: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        allow_basic: bool = False,
        *,
        default_host: str | None = None,
    ) -> None:
        self._backends = backends
        self._users = dict(users)
        self.allow_basic = allow_basic
        self.default_host = default_host
        self.stats = ServerStats()
        self.faults = FaultInjector()
        self._shells: dict[str, _Shell] = {}
        self.codepages: dict[str, list[int]] = {}  # host -> code page of each shell created
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
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
        for shell in shells:
            shell.terminate_all()
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
        with self._lock:
            return list(self.codepages.get(hostname.lower(), []))

    def open_shells(self, hostname: str | None = None) -> int:
        """How many shells are open (on one host, or in total)."""
        with self._lock:
            return sum(
                1 for s in self._shells.values() if hostname is None or s.host == hostname.lower()
            )

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
        with self._lock:
            dropped = [s for s in self._shells.values() if s.host == hostname.lower()]
            for shell in dropped:
                del self._shells[shell.id]
        for shell in dropped:
            shell.terminate_all()
        return len(dropped)

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

    def _dispatch(self, host: str, backend: HostBackend, request: _Request) -> str:
        if request.resource_uri != _CMD_RESOURCE:
            raise WSManFault(
                "w:DestinationUnreachable",
                f"The lab serves only the cmd shell resource, not {request.resource_uri!r}.",
                sender=True,
            )
        handler = {
            "Create": self._create,
            "Command": self._command,
            "Send": self._send,
            "Receive": self._receive,
            "Signal": self._signal,
            "Delete": self._delete,
        }[request.action]
        body = handler(host, backend, request)
        return _envelope(_RESPONSE_ACTIONS[request.action], request.message_id, body)

    def _shell(self, host: str, request: _Request) -> _Shell:
        with self._lock:
            shell = self._shells.get(request.shell_id or "")
        if shell is None or shell.host != host:
            raise WSManFault(
                "w:InvalidSelectors",
                f"The request for the Windows Remote Shell with ShellId {request.shell_id} failed "
                "because the shell was not found on the server. Possible causes are: the "
                "specified ShellId is incorrect or the shell no longer exists on the server. "
                "Provide the correct ShellId or create a new shell and retry the operation.",
                CODE_SHELL_NOT_FOUND,
            )
        return shell

    @staticmethod
    def _running(shell: _Shell, command_id: str | None) -> _ServerCommand:
        with shell.lock:
            command = shell.commands.get(command_id or "")
        if command is None:
            raise WSManFault(
                "w:InvalidSelectors",
                f"The command with CommandId {command_id} was not found in shell {shell.id}.",
                sender=True,
            )
        return command

    def _create(self, host: str, backend: HostBackend, request: _Request) -> str:
        try:
            codepage = int(request.options.get("WINRS_CODEPAGE", "437"))
            codecs.lookup(_codec(codepage))
        except (ValueError, LookupError):
            raise WSManFault(
                "w:InvalidOptions",
                f"The code page {request.options.get('WINRS_CODEPAGE')!r} is not valid.",
                sender=True,
            ) from None
        shell = _Shell(id=str(uuid.uuid4()).upper(), host=host, codepage=codepage)
        with self._lock:
            self._shells[shell.id] = shell
            self.codepages.setdefault(host, []).append(codepage)
        return (
            "<x:ResourceCreated><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/"
            f"anonymous</a:Address><a:ReferenceParameters><w:ResourceURI>{_CMD_RESOURCE}"
            f'</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{shell.id}</w:Selector>'
            "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell.id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{_CMD_RESOURCE}</rsp:ResourceUri>"
            "<rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
        )

    def _command(self, host: str, backend: HostBackend, request: _Request) -> str:
        shell = self._shell(host, request)
        line_element = request.body.find("rsp:CommandLine", NS)
        if line_element is None:
            raise WSManFault("w:SchemaValidationError", "rsp:CommandLine is missing.", sender=True)
        command = (line_element.findtext("rsp:Command", "", NS) or "").strip()
        arguments = [a.text or "" for a in line_element.findall("rsp:Arguments", NS)]
        skip_cmd_shell = request.options.get("WINRS_SKIP_CMD_SHELL", "FALSE").upper() == "TRUE"
        length = len(command_line(command, arguments))
        process: Command
        if not skip_cmd_shell and length > CMD_LINE_LIMIT:
            message = "The command line is too long.\r\n".encode(_codec(shell.codepage))
            process = _FinishedCommand(b"", message, 1)
        elif skip_cmd_shell and length > CREATE_PROCESS_LIMIT:
            raise WSManFault(
                "w:InternalError", "The filename or extension is too long.", CODE_FILENAME_TOO_LONG
            )
        else:
            try:
                process = backend.start_command(command, arguments)
            except Exception as exc:
                raise WSManFault(
                    "w:InternalError", f"The command could not be started: {exc}", CODE_UNSPECIFIED
                ) from exc
        entry = _ServerCommand(id=str(uuid.uuid4()).upper(), process=process)
        with shell.lock:
            shell.commands[entry.id] = entry
        command_id = f"<rsp:CommandId>{entry.id}</rsp:CommandId>"
        return f"<rsp:CommandResponse>{command_id}</rsp:CommandResponse>"

    def _send(self, host: str, backend: HostBackend, request: _Request) -> str:
        shell = self._shell(host, request)
        streams = request.body.findall("rsp:Send/rsp:Stream", NS)
        if not streams:
            raise WSManFault("w:SchemaValidationError", "rsp:Send has no rsp:Stream.", sender=True)
        for stream in streams:
            command = self._running(shell, stream.get("CommandId"))
            try:
                data = base64.b64decode(stream.text or "", validate=True)
            except ValueError:
                raise WSManFault(
                    "w:SchemaValidationError", "The stdin data is not base64.", sender=True
                ) from None
            end = (stream.get("End") or "false").lower() == "true"
            try:
                command.process.send_input(data, end)
            except ValueError as exc:
                raise WSManFault("w:InvalidParameter", str(exc), sender=True) from exc
        return "<rsp:SendResponse/>"

    def _receive(self, host: str, backend: HostBackend, request: _Request) -> str:
        shell = self._shell(host, request)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = desired.get("CommandId") if desired is not None else None
        command = self._running(shell, command_id)
        # Leave room for the envelope and base64's 4/3 growth inside the client's MaxEnvelopeSize.
        budget = max(4096, (request.max_envelope - 8192) * 3 // 4)
        timeout = min(max(request.operation_timeout, 0.0), self.MAX_OPERATION_TIMEOUT)
        with command.lock:
            if not command.stdout and not command.stderr and not command.done:
                try:
                    out, err, done, exit_code = command.process.receive(timeout)
                except Exception as exc:
                    raise WSManFault(
                        "w:InternalError", f"Reading the command's output failed: {exc}"
                    ) from exc
                command.stdout += out
                command.stderr += err
                if done:
                    command.done, command.exit_code = True, 0 if exit_code is None else exit_code
            out = bytes(command.stdout[:budget])
            del command.stdout[:budget]
            err = bytes(command.stderr[: budget - len(out)])
            del command.stderr[: len(err)]
            finished = command.done and not command.stdout and not command.stderr
        if not out and not err and not finished:
            raise WSManFault("w:TimedOut", _TIMED_OUT_TEXT, CODE_OPERATION_TIMEOUT)
        if finished:
            with shell.lock:
                if shell.commands.pop(command.id, None) is not None:
                    shell.finished.add(command.id)
        cid = quoteattr(command.id)
        parts = ["<rsp:ReceiveResponse>"]
        for name, data in (("stdout", out), ("stderr", err)):
            if data:
                encoded = base64.b64encode(data).decode()
                parts.append(f'<rsp:Stream Name="{name}" CommandId={cid}>{encoded}</rsp:Stream>')
            if finished:
                parts.append(f'<rsp:Stream Name="{name}" CommandId={cid} End="true"></rsp:Stream>')
        if finished:
            parts.append(
                f'<rsp:CommandState CommandId={cid} State="{_STATE_DONE}">'
                f"<rsp:ExitCode>{command.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId={cid} State="{_STATE_RUNNING}"/>')
        parts.append("</rsp:ReceiveResponse>")
        return "".join(parts)

    def _signal(self, host: str, backend: HostBackend, request: _Request) -> str:
        shell = self._shell(host, request)
        signal = request.body.find("rsp:Signal", NS)
        if signal is None:
            raise WSManFault("w:SchemaValidationError", "rsp:Signal is missing.", sender=True)
        command_id = signal.get("CommandId") or ""
        code = (signal.findtext("rsp:Code", "", NS) or "").strip().rsplit("/", 1)[-1].lower()
        if code not in ("terminate", "ctrl_c", "ctrl_break"):
            raise WSManFault("w:InvalidParameter", f"Unknown signal {code!r}.", sender=True)
        with shell.lock:
            if command_id in shell.finished:
                if code == "terminate":
                    shell.finished.discard(command_id)
                return "<rsp:SignalResponse/>"
        command = self._running(shell, command_id)
        command.process.terminate()
        if code == "terminate":  # ctrl_c keeps the command so a Receive sees how it ended
            with shell.lock:
                shell.commands.pop(command_id, None)
        return "<rsp:SignalResponse/>"

    def _delete(self, host: str, backend: HostBackend, request: _Request) -> str:
        shell = self._shell(host, request)
        with self._lock:
            self._shells.pop(shell.id, None)
        shell.terminate_all()
        return ""
