"""The lab's side of the WS-Management layer: a HostBackend per simulated host, a Command per run.

A command is what Windows would start for the engine: `powershell.exe ... -EncodedCommand
<bootstrap>` that reads the script from stdin. The command collects stdin until the client closes
it, then the script is interpreted at once (the simulation is instantaneous; delays live in the
lab's schedule). Anything else on the command line fails as cmd.exe or PowerShell would.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from cmrunbook_lab.interpreter import interpret
from cmrunbook_lab.scripts import HostWentDown, clixml_error
from cmrunbook_lab.winrm.cmdline import (
    AmbiguousCommandLine,
    command_line,
    encoded_command,
    split_command_line,
)

if TYPE_CHECKING:
    from cmrunbook_lab.hosts import SimHost
    from cmrunbook_lab.world import Lab

_READS_STDIN = ("OpenStandardInput", "$input")


class LabCommand:
    """One powershell.exe process on a simulated host."""

    def __init__(
        self,
        lab: Lab,
        host: SimHost,
        script_from_line: str | None,
        reads_stdin: bool,
        early: tuple[bytes, bytes, int] | None = None,
    ) -> None:
        self._lab, self._host = lab, host
        self._stdin = bytearray()
        self._reads_stdin = reads_stdin
        self._done = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stdout, self._stderr = b"", b""
        self._exit: int | None = None
        self._hung = False
        if early is not None:
            self._finish(*early)
        elif not reads_stdin and script_from_line is not None:
            self._run(script_from_line)

    def send_input(self, data: bytes, end: bool) -> None:
        with self._lock:
            if self._done.is_set() or self._hung:
                return
            self._stdin += data
        if end and self._reads_stdin:
            self._run(bytes(self._stdin).decode("utf-8", "replace"))

    def receive(self, timeout: float) -> tuple[bytes, bytes, bool, int | None]:
        self._lab.tick()
        if not self._done.is_set():
            self._lab.clock.wait(self._wake, timeout)
        with self._lock:
            if not self._done.is_set():
                return b"", b"", False, None
            out, err = self._stdout, self._stderr
            self._stdout, self._stderr = b"", b""
            return out, err, True, self._exit

    def terminate(self) -> None:
        with self._lock:
            if not self._done.is_set():
                self._exit = 1
                self._done.set()
        self._wake.set()

    def _run(self, script: str) -> None:
        lab, host = self._lab, self._host
        with lab.lock:
            lab.schedule.run_due()
            if not host.up:
                self._hung = True
                return
            host.stats.commands += 1
            try:
                out, err, code = interpret(lab, host, script)
            except HostWentDown:
                self._hung = True
                return
        self._finish(out, err, code)

    def _finish(self, out: bytes, err: bytes, code: int) -> None:
        with self._lock:
            self._stdout, self._stderr, self._exit = out, err, code
            self._done.set()
        self._wake.set()


class LabBackend:
    """A simulated host as the WS-Management server sees it."""

    def __init__(self, lab: Lab, host: SimHost) -> None:
        self.lab = lab
        self.host = host

    @property
    def name(self) -> str:
        return self.host.name

    def is_up(self) -> bool:
        """False while the host is restarting: the server must not answer for it then."""
        self.lab.tick()
        return self.host.up

    def start_command(self, command: str, arguments: list[str]) -> LabCommand:
        self.lab.tick()
        try:
            argv = split_command_line(command_line(command, arguments))
        except AmbiguousCommandLine as exc:
            err = clixml_error(f"The lab cannot tell how this command line is split: {exc}")
            return LabCommand(self.lab, self.host, None, False, (b"", err, 1))
        exe = (argv[0] if argv else "").lower().rsplit("\\", 1)[-1]
        if exe not in ("powershell", "powershell.exe"):
            msg = (
                f"'{argv[0] if argv else command}' is not recognized as an internal or external "
                "command,\r\noperable program or batch file.\r\n"
            )
            return LabCommand(self.lab, self.host, None, False, (b"", msg.encode(), 1))
        script = encoded_command(argv)
        if script is None:
            err = clixml_error("The lab runs only powershell.exe -EncodedCommand <script>.")
            return LabCommand(self.lab, self.host, None, False, (b"", err, 1))
        reads_stdin = any(token in script for token in _READS_STDIN)
        return LabCommand(self.lab, self.host, script, reads_stdin)
