"""PowerShell literals: how every value from an inventory or runbook enters a script.

A value is always rendered as data, never as code: strings become single-quoted literals (no
expansion of `$`, backticks or sub-expressions), with every character PowerShell accepts as a
single quote doubled, including the typographic ones it also honours (U+2018, U+2019, U+201A,
U+201B). Raw text needs the explicit `Raw` wrapper.

Every literal is PowerShell 2.0 syntax, since the prelude targets 2.0 (Server 2008, XP with WMF
2.0): a mapping is a plain `@{ 'k' = v }` hashtable, not `[ordered]@{...}` (3.0). A hashtable
does not keep the order of its keys; nothing the engine sends depends on it (the log monitor's
`$watches` is looked up by log name), so a template that needs an order must pass a list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_QUOTE_TABLE = {ord(q): q + q for q in SINGLE_QUOTES}
#: Floats with no digits: repr() gives the words inf/nan, which PowerShell would run as commands.
_NON_FINITE = {
    math.inf: "[double]::PositiveInfinity",
    -math.inf: "[double]::NegativeInfinity",
}


class Raw(str):
    """Text to be placed in a script as it is: the rare, explicit opt-out from quoting."""


def literal(value: Any) -> str:
    """The PowerShell literal that evaluates to `value`."""
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "[double]::NaN"
        return _NON_FINITE.get(value, repr(value))
    if isinstance(value, str):
        return "'" + value.translate(_QUOTE_TABLE) + "'"
    if isinstance(value, Mapping):
        return _hashtable(value)
    if isinstance(value, Sequence):
        return "@(" + ", ".join(literal(v) for v in value) + ")"
    raise TypeError(f"no PowerShell literal for {type(value).__name__}")


def _hashtable(value: Mapping[Any, Any]) -> str:
    """A PowerShell 2.0 hashtable literal (see the module docstring for why not [ordered])."""
    seen: dict[str, str] = {}
    for key in map(str, value):
        # Hashtable keys are case-insensitive: @{ 'a' = 1; 'A' = 2 } does not even parse.
        if key.casefold() in seen:
            raise ValueError(
                f"keys {seen[key.casefold()]!r} and {key!r} are the same key in PowerShell"
            )
        seen[key.casefold()] = key
    pairs = "; ".join(f"{literal(str(k))} = {literal(v)}" for k, v in value.items())
    return "@{ " + pairs + " }" if pairs else "@{}"


def comment_safe(text: str) -> str:
    """Text for a `#` comment line: no line break can end the comment and start code."""
    return " ".join(str(text).split())
