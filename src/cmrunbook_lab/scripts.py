"""Interpreting the scripts the engine sends: recognise, apply, report as PowerShell would.

The lab does not run PowerShell. Each operation is recognised by the real PowerShell a template
contains (cmdlets, WMI classes, method calls, arithmetic) and acted on with the values the script
assigns, so a wrong script has a wrong outcome: a wrong bit is toggled, a missing `.Put()` saves
nothing, a cmdlet the host's Windows lacks fails with PowerShell's own message. The result line
is produced as `_script.ps1.j2` would: `CMRB-RESULT {json}` and exit code 0 or 1. A script whose
operation the lab does not know fails on stderr as a PowerShell error would, so a template change
that the lab does not follow shows up instead of passing silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cmrunbook_lab.pslit import input_assignments

if TYPE_CHECKING:
    from cmrunbook_lab.hosts import SimHost
    from cmrunbook_lab.world import Lab

RESULT_MARKER = "CMRB-RESULT "
_HEADER = re.compile(r"^#\s*cmrunbook\s+(?P<rest>.*)$")
_WS = re.compile(r"\s+")


def not_recognized(name: str) -> PSError:
    """PowerShell's CommandNotFoundException text."""
    return PSError(
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
        "operable program. Check the spelling of the name, or if a path was included, verify that "
        "the path is correct and try again."
    )


class PSError(Exception):
    """A terminating error inside the script's try block: the catch turns it into the message."""


class Unrecognized(Exception):
    """The lab has no simulation for this script."""


class HostWentDown(Exception):
    """The host went down while the command ran: it never completes."""


def squash(text: str) -> str:
    return _WS.sub(" ", text).strip()


@dataclass
class Script:
    """A received script, split into what the lab reads from it."""

    text: str
    runbook: str = ""
    step: str = ""
    body: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    has_prelude: bool = False
    has_result_line: bool = False
    _flat: str = ""

    @classmethod
    def parse(cls, text: str) -> Script:
        text = text.replace("\r\n", "\n").lstrip("\ufeff")
        s = cls(text)
        first = text.split("\n", 1)[0]
        m = _HEADER.match(first)
        if m:
            fields = [f.strip() for f in m["rest"].split("|")]
            s.runbook = fields[0] if fields else ""
            s.step = fields[1] if len(fields) > 1 else ""
        start = text.find("\ntry {\n")
        end = text.rfind("\n}\ncatch {")
        s.has_prelude = "$CmrbResult = @{" in text and start >= 0 and end > start
        s.body = text[start + 7 : end] if s.has_prelude else text
        s.inputs = input_assignments(s.body)
        s.has_result_line = (
            "Write-Output ('CMRB-RESULT ' + (ConvertTo-CmrbJson $CmrbResult))" in text
        )
        s._flat = squash(s.body)
        return s

    def has(self, *snippets: str) -> bool:
        """Every snippet is in the body (whitespace-insensitive)."""
        return all(squash(x) in self._flat for x in snippets)

    def any(self, *snippets: str) -> bool:
        return any(squash(x) in self._flat for x in snippets)

    def find(self, pattern: str, flags: int = 0) -> re.Match[str] | None:
        return re.search(pattern, self.body, flags)

    def input(self, name: str) -> Any:
        if name not in self.inputs:
            raise Unrecognized(f"the script does not assign ${name}")
        return self.inputs[name]


@dataclass
class Result:
    ok: bool = True
    changed: bool = False
    reboot_required: bool = False
    message: str = ""
    data: Any = None

    def line(self) -> str:
        payload = {
            "ok": self.ok,
            "changed": self.changed,
            "reboot_required": self.reboot_required,
            "message": self.message,
            "data": self.data,
        }
        return RESULT_MARKER + json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


@dataclass
class Context:
    """What an operation works with: the lab, the host it runs on, the script, its result."""

    lab: Lab
    host: SimHost
    script: Script
    result: Result


@dataclass(frozen=True)
class Operation:
    name: str
    matches: Callable[[Script], bool]
    run: Callable[[Context], None]


OPERATIONS: list[Operation] = []


def operation(
    name: str, matches: Callable[[Script], bool]
) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register a simulated operation; the first whose `matches` accepts a script runs it."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        OPERATIONS.append(Operation(name, matches, fn))
        return fn

    return register


def recognise(script: Script) -> Operation | None:
    _load_operations()
    return next((op for op in OPERATIONS if op.matches(script)), None)


def _load_operations() -> None:
    # Importing the modules registers their operations (once).
    from cmrunbook_lab import (  # noqa: F401
        ops_bootsect,
        ops_checks,
        ops_engine,
        ops_fleet,
        ops_inventory,
        ops_multicast,
    )


def clixml_error(message: str) -> bytes:
    """stderr as powershell.exe writes an error record when its output is redirected."""
    esc = (
        message.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\n", "_x000A_")
    )
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f'<S S="Error">{esc}_x000D__x000A_</S>'
        '<S S="Error">    + CategoryInfo          : NotImplemented: (:) [], '
        "RuntimeException_x000D__x000A_</S>"
        '<S S="Error">    + FullyQualifiedErrorId : LabUnrecognizedScript_x000D__x000A_</S>'
        "</Objs>"
    ).encode()


def interpret(lab: Lab, host: SimHost, text: str) -> tuple[bytes, bytes, int]:
    """Run one script on a host: (stdout, stderr, exit code); raises HostWentDown."""
    script = Script.parse(text)
    op = recognise(script) if script.has_prelude else None
    if op is None:
        head = script.text.split("\n", 1)[0][:120]
        return b"", clixml_error(f"The lab cannot simulate this script (first line: {head})"), 1
    ctx = Context(lab, host, script, Result())
    down = lab.faults.take(host.name, ["reboot-during"], step=script.step)
    if down is not None:
        lab.go_down(host, down.down_seconds)
        raise HostWentDown(host.name)
    failing = lab.faults.take(host.name, ["script-failure"], step=script.step)
    if failing is not None:
        ctx.result.ok = False
        ctx.result.message = failing.message
    else:
        try:
            op.run(ctx)
        except PSError as exc:
            ctx.result.ok = False
            ctx.result.message = str(exc)
        except Unrecognized as exc:
            return b"", clixml_error(f"The lab cannot simulate this script: {exc}"), 1
    stdout = (ctx.result.line() + "\r\n").encode("utf-8") if script.has_result_line else b""
    return stdout, b"", 0 if ctx.result.ok else 1
