"""The few PowerShell expressions and blocks the lab must evaluate as written.

An image flag change is only right if its arithmetic is: `[uint32]($flags - $flag)` clears a bit
that is set, `-bor` sets one, a wrong operator or operand gives a wrong value. So the assignment
a template makes is evaluated here, over integers and casts, not assumed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(
    r"\s*(?:(?P<cast>\[(?:uint32|int|int32|long|int64|uint64)\])|(?P<num>0x[0-9A-Fa-f]+|\d+)"
    r"|(?P<var>\$[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
    r"|(?P<op>-bor|-band|-bxor|-bnot|\+|-|\*|\(|\)))",
    re.IGNORECASE,
)
_LEVELS = [("-bor", "-bxor"), ("-band",), ("+", "-"), ("*",)]
UINT32_MAX = 0xFFFFFFFF


class ExprError(ValueError):
    """The expression is outside the subset, or a cast fails as PowerShell's would."""


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"cannot evaluate {text[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def evaluate(text: str, env: Mapping[str, int]) -> int:
    """Evaluate an integer expression; `env` maps `$name` or `$obj.Prop` to values."""
    toks = _tokens(text)
    pos = 0
    lowered = {k.lower(): v for k, v in env.items()}

    def level(i: int) -> int:
        nonlocal pos
        if i == len(_LEVELS):
            return unary()
        value = level(i + 1)
        while pos < len(toks) and toks[pos][0] == "op" and toks[pos][1].lower() in _LEVELS[i]:
            op = toks[pos][1].lower()
            pos += 1
            rhs = level(i + 1)
            value = {
                "-bor": value | rhs,
                "-bxor": value ^ rhs,
                "-band": value & rhs,
                "+": value + rhs,
                "-": value - rhs,
                "*": value * rhs,
            }[op]
        return value

    def unary() -> int:
        nonlocal pos
        kind, tok = toks[pos]
        pos += 1
        if kind == "cast":
            value = unary()
            if tok.lower() == "[uint32]" and not 0 <= value <= UINT32_MAX:
                raise ExprError(
                    f'Cannot convert value "{value}" to type "System.UInt32". Error: "Value was '
                    'either too large or too small for a UInt32."'
                )
            return value
        if kind == "num":
            return int(tok, 16) if tok.lower().startswith("0x") else int(tok)
        if kind == "var":
            if tok.lower() not in lowered:
                raise ExprError(f"unknown variable {tok}")
            return lowered[tok.lower()]
        if tok == "(":
            value = level(0)
            if pos >= len(toks) or toks[pos][1] != ")":
                raise ExprError("missing )")
            pos += 1
            return value
        if tok.lower() == "-bnot":
            return ~unary() & UINT32_MAX
        if tok == "-":
            return -unary()
        raise ExprError(f"unexpected {tok!r}")

    value = level(0)
    if pos != len(toks):
        raise ExprError(f"unexpected {toks[pos][1]!r}")
    return value


_IF_ACTION = re.compile(
    r"^(?P<indent>[ \t]*)if \((?P<cond>\$action -eq '[^']+'(?: -or \$action -eq '[^']+')*)\) \{",
    re.M,
)


def block_at(text: str, open_brace: int) -> str:
    """The text inside the braces that open at `open_brace`."""
    depth = 0
    for i in range(open_brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : i]
    raise ExprError("unbalanced braces")


def action_blocks(body: str) -> list[tuple[set[str], str]]:
    """Each `if ($action -eq 'a' -or $action -eq 'b') { ... }`: the actions and the block."""
    out = []
    for m in _IF_ACTION.finditer(body):
        actions = set(re.findall(r"'([^']+)'", m["cond"]))
        out.append((actions, block_at(body, m.end() - 1)))
    return out
