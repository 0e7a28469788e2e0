"""The bottom layer of the lab's WinRM service: what runs behind a shell.

A simulated host plugs in as a :class:`HostBackend`, which starts :class:`Command` objects; the
shell layer (:mod:`cmrunbook_lab.winrm.shells`) feeds them stdin and collects their output. This
module knows nothing of SOAP, HTTP or ConfigMgr. :class:`FunctionBackend` and
:class:`EchoBackend` are small built-in backends for protocol tests and benchmarks.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from cmrunbook_lab.winrm.cmdline import command_line, encoded_command, split_command_line

__all__ = [
    "BackendSource",
    "Command",
    "CommandIO",
    "CommandTerminated",
    "EchoBackend",
    "FinishedCommand",
    "FunctionBackend",
    "FunctionCommand",
    "HostBackend",
]


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


def script_of(command: str, arguments: list[str], io: CommandIO) -> str:
    """The script a ``powershell -EncodedCommand`` runs: the encoded one itself, or stdin (read to
    its end) when that is a bootstrap reading it (``OpenStandardInput``, ``$input``)."""
    script = encoded_command(split_command_line(command_line(command, arguments)))
    if script is not None and "OpenStandardInput" not in script and "$input" not in script:
        return script
    return io.read_stdin().decode("utf-8")


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
        data = script_of(command, arguments, io).encode("utf-8")
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


class FinishedCommand:
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
