"""The Jinja2 environment of the documents a person reads: the checklist and the run report.

HTML is autoescaped; Markdown gets its own escaping filters. The PowerShell environment of
`render` quotes every value as a PowerShell literal, which would be wrong here. It lives in
`record` because the report (here) and the checklist (in `docs`, above) both render with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from cmrunbook.record.vocabulary import STATUS_MARK
from cmrunbook.text import printable

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|&~])")
#: Markup only at the start of a line (a value the template places at one): quote, heading,
#: list item.
_MD_LINE_START = re.compile(r"^(\s*)([>#+-])")


def md_escape(value: Any) -> str:
    """Text for Markdown: characters GFM would read as markup are backslash-escaped, so a
    host name such as `dp<img onerror=...>|x](javascript:...)` stays text in a table cell, a
    heading or a line (GFM passes raw HTML through; `|` ends a cell)."""
    text = _MD_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")
    return _MD_LINE_START.sub(r"\1\\\2", text)


def md_code(value: Any) -> str:
    """An inline code span, safe in a GFM table cell."""
    text = str(value).replace("\n", " ").replace("|", "\\|")
    ticks = max((len(m) for m in re.findall(r"`+", text)), default=0) + 1
    fence = "`" * ticks
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_fence(value: str, lang: str = "") -> str:
    """A fenced code block whose fence no line of `value` can close."""
    ticks = max([3, *(len(m) + 1 for m in re.findall(r"^`{3,}", value, flags=re.M))])
    fence = "`" * ticks
    return f"{fence}{lang}\n{value.rstrip()}\n{fence}"


def _printable_value(value: Any) -> Any:
    """A template value through `printable`; markup stays markup, other types stay as they are."""
    if isinstance(value, markupsafe.Markup):
        return markupsafe.Markup(printable(str(value)))
    return printable(value) if isinstance(value, str) else value


def environment(templates_dir: Path, fmt: str) -> jinja2.Environment:
    """The checklist/report environment: HTML autoescaped, Markdown plain with its filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=fmt == "html",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # Every value, whatever its format, is first made printable: the Markdown filters and
    # HTML autoescape know nothing of control characters, which a viewer could act on.
    env.finalize = _printable_value
    env.filters["md"] = md_escape
    env.filters["md_code"] = md_code
    env.filters["md_fence"] = md_fence
    env.globals["STATUS_MARK"] = STATUS_MARK
    return env
