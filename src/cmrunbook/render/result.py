"""The result-line protocol: how a script reports back, and how its reply is read.

Every script ends by writing one line, `RESULT_MARKER` and a JSON object (ok, changed,
reboot_required, message, data): `_script.ps1.j2` writes it, the engine and the diagnose fetch
read it with `parse_result`, and the lab and the benches, which answer as a site would, write it
with the same marker. Defined once here so that the two sides cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RESULT_MARKER = "CMRB-RESULT "


@dataclass(frozen=True)
class ScriptResult:
    """What a script reported on its last line."""

    ok: bool
    changed: bool
    reboot_required: bool
    message: str
    data: Any


def parse_result(stdout: str) -> ScriptResult | None:
    """The script's result line, or None when the script died before reaching it."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                raw = json.loads(line[len(RESULT_MARKER) :])
            except json.JSONDecodeError:
                return None
            return ScriptResult(
                ok=bool(raw.get("ok")),
                changed=bool(raw.get("changed")),
                reboot_required=bool(raw.get("reboot_required")),
                message=str(raw.get("message") or ""),
                data=raw.get("data"),
            )
    return None
