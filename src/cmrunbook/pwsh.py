"""PowerShell literals: how every value from an inventory or runbook enters a script.

A value is always rendered as data, never as code: strings become single-quoted literals (no
expansion of `$`, backticks or sub-expressions), with every character PowerShell accepts as a
single quote doubled, including the typographic ones it also honours (U+2018, U+2019, U+201A,
U+201B). Raw text needs the explicit `Raw` wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_QUOTE_TABLE = {ord(q): q + q for q in SINGLE_QUOTES}


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
        return repr(value)
    if isinstance(value, str):
        return "'" + value.translate(_QUOTE_TABLE) + "'"
    if isinstance(value, Mapping):
        pairs = "; ".join(f"{literal(str(k))} = {literal(v)}" for k, v in value.items())
        return "[ordered]@{ " + pairs + " }" if pairs else "[ordered]@{}"
    if isinstance(value, Sequence):
        return "@(" + ", ".join(literal(v) for v in value) + ")"
    raise TypeError(f"no PowerShell literal for {type(value).__name__}")


def comment_safe(text: str) -> str:
    """Text for a `#` comment line: no line break can end the comment and start code."""
    return " ".join(str(text).split())
