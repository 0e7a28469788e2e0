"""WinRS shell operations: Create, Command, Send, Receive, Signal and Delete on simulated hosts.

:class:`ShellService` keeps every open shell and its commands and answers one parsed WS-Man
request (:mod:`cmrunbook_lab.winrm.soap`) at a time by driving the host's backend
(:mod:`cmrunbook_lab.winrm.commands`). It is where Windows' shell behaviour lives: a Receive with
no output waits up to the request's ``OperationTimeout`` and then answers ``w:TimedOut``;
cmd.exe's 8,191-character command-line limit fails the command with "The command line is too
long." and exit code 1, as ``Session.run_ps`` of a large script does on Windows.
"""

from __future__ import annotations

import base64
import codecs
import threading
import uuid
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from cmrunbook_lab.winrm.cmdline import command_line
from cmrunbook_lab.winrm.commands import Command, FinishedCommand, HostBackend
from cmrunbook_lab.winrm.soap import (
    CMD_LINE_LIMIT,
    CMD_RESOURCE,
    CODE_FILE_NOT_FOUND,
    CODE_FILENAME_TOO_LONG,
    CODE_OPERATION_TIMEOUT,
    CODE_SHELL_NOT_FOUND,
    CODE_UNSPECIFIED,
    CREATE_PROCESS_LIMIT,
    NS,
    RESPONSE_ACTIONS,
    STATE_DONE,
    STATE_RUNNING,
    TIMED_OUT_TEXT,
    Request,
    WSManFault,
    codec,
    envelope,
)

__all__ = ["MAX_OPERATION_TIMEOUT", "ShellService"]

MAX_OPERATION_TIMEOUT = 3600.0  # the longest a Receive waits, whatever the client asks


@dataclass(eq=False)
class _ServerCommand:
    """A command as the shell tracks it: output received from the backend but not yet sent."""

    id: str
    process: Command
    stdout: bytearray = field(default_factory=bytearray)  # received from the backend, not sent
    stderr: bytearray = field(default_factory=bytearray)
    done: bool = False
    exit_code: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one Receive at a time


@dataclass(eq=False)
class _Shell:
    """One WinRS shell: its host, code page, commands running and finished but not signalled."""

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


class ShellService:
    """Every open shell of one server, and the six shell operations on them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}
        self._codepages: dict[str, list[int]] = {}  # host -> code page of each shell created

    def shell_codepages(self, host: str) -> list[int]:
        """The WINRS_CODEPAGE of every shell created on a host (lower case), in order."""
        with self._lock:
            return list(self._codepages.get(host, []))

    def open_shells(self, host: str | None = None) -> int:
        """How many shells are open (on one host in lower case, or in total)."""
        with self._lock:
            return sum(1 for s in self._shells.values() if host is None or s.host == host)

    def drop_shells(self, host: str | None = None) -> int:
        """End the shells of one host (lower case) or of all; returns how many there were."""
        with self._lock:
            dropped = [s for s in self._shells.values() if host is None or s.host == host]
            for shell in dropped:
                del self._shells[shell.id]
        for shell in dropped:
            shell.terminate_all()
        return len(dropped)

    def dispatch(self, host: str, backend: HostBackend, request: Request) -> str:
        """The reply envelope to one WS-Man request on ``host``; raises WSManFault."""
        if request.resource_uri != CMD_RESOURCE:
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
        return envelope(RESPONSE_ACTIONS[request.action], request.message_id, body)

    def _shell(self, host: str, request: Request) -> _Shell:
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

    def _create(self, host: str, backend: HostBackend, request: Request) -> str:
        try:
            codepage = int(request.options.get("WINRS_CODEPAGE", "437"))
            codecs.lookup(codec(codepage))
        except (ValueError, LookupError):
            raise WSManFault(
                "w:InvalidOptions",
                f"The code page {request.options.get('WINRS_CODEPAGE')!r} is not valid.",
                sender=True,
            ) from None
        shell = _Shell(id=str(uuid.uuid4()).upper(), host=host, codepage=codepage)
        with self._lock:
            self._shells[shell.id] = shell
            self._codepages.setdefault(host, []).append(codepage)
        return (
            "<x:ResourceCreated><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/"
            f"anonymous</a:Address><a:ReferenceParameters><w:ResourceURI>{CMD_RESOURCE}"
            f'</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{shell.id}</w:Selector>'
            "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell.id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{CMD_RESOURCE}</rsp:ResourceUri>"
            "<rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
        )

    def _command(self, host: str, backend: HostBackend, request: Request) -> str:
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
            message = "The command line is too long.\r\n".encode(codec(shell.codepage))
            process = FinishedCommand(b"", message, 1)
        elif skip_cmd_shell and length > CREATE_PROCESS_LIMIT:
            raise WSManFault(
                "w:InternalError", "The filename or extension is too long.", CODE_FILENAME_TOO_LONG
            )
        elif skip_cmd_shell and "\\" not in command:
            # Without cmd.exe nothing searches the PATH: Windows Server 2016 faults a bare
            # powershell.exe and runs it by its full path (tests/data/recorded/
            # test_winrs_no_cmd_shell.yml, recorded by pypsrp).
            raise WSManFault(
                "w:InternalError",
                "The system cannot find the file specified. ",
                CODE_FILE_NOT_FOUND,
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

    def _send(self, host: str, backend: HostBackend, request: Request) -> str:
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

    def _receive(self, host: str, backend: HostBackend, request: Request) -> str:
        shell = self._shell(host, request)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = desired.get("CommandId") if desired is not None else None
        command = self._running(shell, command_id)
        # Leave room for the envelope and base64's 4/3 growth inside the client's MaxEnvelopeSize.
        budget = max(4096, (request.max_envelope - 8192) * 3 // 4)
        timeout = min(max(request.operation_timeout, 0.0), MAX_OPERATION_TIMEOUT)
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
            raise WSManFault("w:TimedOut", TIMED_OUT_TEXT, CODE_OPERATION_TIMEOUT)
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
                f'<rsp:CommandState CommandId={cid} State="{STATE_DONE}">'
                f"<rsp:ExitCode>{command.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_RUNNING}"/>')
        parts.append("</rsp:ReceiveResponse>")
        return "".join(parts)

    def _signal(self, host: str, backend: HostBackend, request: Request) -> str:
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

    def _delete(self, host: str, backend: HostBackend, request: Request) -> str:
        shell = self._shell(host, request)
        with self._lock:
            self._shells.pop(shell.id, None)
        shell.terminate_all()
        return ""
