"""Reading the PowerShell literals a rendered script assigns to its input variables.

The lab never executes PowerShell, but it must act on the values the engine really sent: the
image's PackageID, the PkgFlags bit, the log offsets. Every input reaches a script as a literal
(`render.pwsh.literal`): single-quoted strings with quotes doubled, numbers, `$true`/`$false`,
`$null`, `@(...)` arrays and `[ordered]@{ 'k' = v }` tables, optionally behind a type cast such as
`[uint32]`. This module parses exactly that grammar and nothing more: any other right-hand side
(an expression, a command) is not an input and is left alone.
"""

from __future__ import annotations

import re
from typing import Any

SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_ASSIGNMENT = re.compile(r"^\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.+?)\s*$")
_NUMBER = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_CAST = re.compile(r"\[(?P<type>[A-Za-z][A-Za-z0-9_.]*)\]")


class NotALiteral(ValueError):
    """The text is PowerShell code, not one of the literals the renderer produces."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> Any:
        value = self.value()
        self.skip()
        if self.pos != len(self.text):
            raise NotALiteral(f"unexpected text after a literal: {self.text[self.pos :]!r}")
        return value

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def eat(self, s: str) -> None:
        self.skip()
        if not self.peek(s):
            raise NotALiteral(f"expected {s!r} at {self.text[self.pos :]!r}")
        self.pos += len(s)

    def value(self) -> Any:
        self.skip()
        cast = _CAST.match(self.text, self.pos)
        if cast and cast["type"].lower() != "ordered":
            self.pos = cast.end()
            return _apply_cast(cast["type"], self.value())
        if self.peek("[ordered]@{") or self.peek("[ordered]@{".upper()):
            self.pos += len("[ordered]")
            return self.table()
        if self.peek("@{"):
            return self.table()
        if self.peek("@("):
            return self.array()
        if self.pos < len(self.text) and self.text[self.pos] in SINGLE_QUOTES:
            return self.string()
        for word, val in (("$true", True), ("$false", False), ("$null", None)):
            if self.text[self.pos : self.pos + len(word)].lower() == word:
                self.pos += len(word)
                return val
        number = _NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            raw = number.group()
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        raise NotALiteral(f"not a literal: {self.text[self.pos :]!r}")

    def string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in SINGLE_QUOTES:
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt and nxt in SINGLE_QUOTES:
                    out.append(ch)
                    self.pos += 2
                    continue
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise NotALiteral("unterminated string")

    def array(self) -> list[Any]:
        self.eat("@(")
        items: list[Any] = []
        self.skip()
        if self.peek(")"):
            self.pos += 1
            return items
        while True:
            items.append(self.value())
            self.skip()
            if self.peek(","):
                self.pos += 1
                continue
            self.eat(")")
            return items

    def table(self) -> dict[str, Any]:
        self.eat("@{")
        out: dict[str, Any] = {}
        self.skip()
        if self.peek("}"):
            self.pos += 1
            return out
        while True:
            self.skip()
            key = self.value()
            self.eat("=")
            out[str(key)] = self.value()
            self.skip()
            if self.peek(";"):
                self.pos += 1
                self.skip()
                if self.peek("}"):
                    self.pos += 1
                    return out
                continue
            self.eat("}")
            return out


def _apply_cast(type_name: str, value: Any) -> Any:
    t = type_name.lower()
    if t in {"int", "int32", "long", "int64", "uint32", "uint64", "byte"}:
        return int(value)
    if t in {"double", "float", "decimal"}:
        return float(value)
    if t in {"string", "version"}:
        return str(value)
    if t == "bool":
        return bool(value)
    raise NotALiteral(f"cast [{type_name}] is not used for inputs")


def parse_literal(text: str) -> Any:
    """The Python value of one PowerShell literal, or NotALiteral."""
    return _Parser(text.strip()).parse()


def input_assignments(body: str) -> dict[str, Any]:
    """`$name = <literal>` lines at the start of a line, first one of each name wins.

    Templates assign their inputs before they use them, so the first assignment is the input;
    later ones (`$commit = $true` inside a block) are the script's own working state.
    """
    out: dict[str, Any] = {}
    for line in body.splitlines():
        match = _ASSIGNMENT.match(line)
        if not match or match["name"] in out:
            continue
        try:
            out[match["name"]] = parse_literal(match["value"])
        except (NotALiteral, ValueError):
            continue
    return out
