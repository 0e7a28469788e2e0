"""Which simulator answers a script, and running it on a host as powershell.exe would.

The simulators (:mod:`cmrunbook_lab.sims`, one module per template folder) each declare their
operations; this module imports them all and fixes the order in which they are tried (the first
whose matcher accepts a script runs it). It sits above the simulators, which import only
:mod:`cmrunbook_lab.scripts`, so there is no import cycle between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cmrunbook_lab.scripts import (
    Context,
    HostWentDown,
    Operation,
    PSError,
    Result,
    Script,
    Unrecognized,
    clixml_error,
)
from cmrunbook_lab.sims import (
    boot_image,
    bootsect,
    checks,
    engine,
    inventory,
    multicast,
    publish,
)

if TYPE_CHECKING:
    from cmrunbook_lab.hosts import SimHost
    from cmrunbook_lab.world import Lab

# The order the operations were tried in before each simulator owned its list; the matchers are
# meant to be disjoint, and a fixed order keeps it so that any overlap resolves the same way.
OPERATIONS: tuple[Operation, ...] = (
    *bootsect.OPERATIONS,
    *multicast.OPERATIONS,
    *boot_image.OPERATIONS,
    *engine.OPERATIONS,
    *checks.OPERATIONS,
    *inventory.OPERATIONS,
    *publish.OPERATIONS,
)


def recognise(script: Script) -> Operation | None:
    """The first operation whose matcher accepts the script, or None."""
    return next((op for op in OPERATIONS if op.matches(script)), None)


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
