"""Reaching a Windows host: the interface the engine runs scripts through.

The engine (run/, cli/) sees a host only as a :class:`Remote`: run one script within a deadline
and get its :class:`CommandResult`, then close. Every failure to run it is a
:class:`TransportError` whose ``kind`` the engine acts on (a host that rejects the credentials
stops the others being tried; a fault comes on an authenticated connection). This module imports
nothing outside the standard library, so that the engine can be driven in-process by a fake and a
dry run never loads the transport; the WinRM implementation, and every third-party HTTP, NTLM
and WS-Man import, live in :mod:`cmrunbook.remote.winrm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["CommandResult", "ErrorKind", "Remote", "TransportError"]

ErrorKind = Literal[
    "refused", "unauthorized", "fault", "timeout", "reset", "http", "config", "not-tried"
]


@dataclass
class CommandResult:
    """What a script produced. ``stderr`` is readable text (CLIXML already decoded);
    ``requests`` is the number of protocol requests this call cost (for benchmarks)."""

    stdout: str
    stderr: str
    exit_code: int
    requests: int


class TransportError(Exception):
    """A host could not run a script; ``kind`` says what went wrong.

    * ``refused``: nothing accepted the request (connection refused, closed without an answer,
      name not resolved, no route);
    * ``unauthorized``: the credentials were rejected (HTTP 401);
    * ``fault``: the remote service answered with a protocol fault (code and text in the message);
    * ``timeout``: no answer within the read timeout, or the script outran its deadline;
    * ``reset``: the connection broke during an exchange;
    * ``http``: an unexpected HTTP status or a reply that is not the protocol's;
    * ``config``: the endpoint or local setup cannot work (Basic on http, TLS trust, missing
      Kerberos/CredSSP support);
    * ``not-tried``: not contacted, because another host rejected the run's credentials.
    """

    def __init__(self, host: str, kind: ErrorKind, message: str, hint: str | None = None) -> None:
        super().__init__(host, kind, message, hint)
        self.host = host
        self.kind: ErrorKind = kind
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.host}: {self.message}{hint}"


class Remote(Protocol):
    """One host's connection for one run, used by one worker at a time.

    ``run`` executes a PowerShell script and returns what it printed, raising TransportError
    when the host cannot run it within ``deadline`` seconds; ``close`` releases the host's shell
    and connection (a later ``run`` opens new ones). A Remote may also offer
    ``open(*, deadline)``, logging on without running anything: the engine then tries the
    run's credentials on one host before it sends them to any other.
    """

    def run(self, script: str, *, deadline: float) -> CommandResult: ...

    def close(self) -> None: ...
