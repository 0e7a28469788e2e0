"""Rendering steps to PowerShell with Jinja2.

Every `{{ value }}` passes through `pwsh.literal` (Jinja's `finalize` hook), so a template cannot
forget to quote; `{{ value | raw }}` is the visible exception. Undefined names fail
(StrictUndefined).
Every script is the same prelude, the step's body, and one machine-readable result line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from cmrunbook import pwsh

RESULT_MARKER = "CMRB-RESULT "
CONTEXT_NAMES = frozenset({"host", "target", "site", "params", "item", "step", "runbook"})


def _raw(value: Any) -> pwsh.Raw:
    return pwsh.Raw(value)


def _ps_join(values: Iterable[Any], sep: str = ", ") -> pwsh.Raw:
    """Several literals joined, for argument lists."""
    return pwsh.Raw(sep.join(pwsh.literal(v) for v in values))


class Renderer:
    """One Jinja2 environment over templates/, shared by every render of a run."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir)),
            undefined=jinja2.StrictUndefined,
            finalize=pwsh.literal,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["raw"] = _raw
        self.env.filters["ps_join"] = _ps_join
        self.env.filters["comment"] = lambda v: pwsh.Raw(pwsh.comment_safe(v))
        self.env.globals["RESULT_MARKER"] = RESULT_MARKER

    def exists(self, name: str) -> bool:
        return (self.templates_dir / name).is_file()

    def script(self, template: str, context: dict[str, Any], header: str) -> str:
        """A complete script: prelude, body, result line."""
        body = self.env.get_template(template).render(context)
        return self.env.get_template("_script.ps1.j2").render(
            header=pwsh.comment_safe(header), body=pwsh.Raw(body)
        )

    def references(self, template: str) -> TemplateRefs:
        """Every context name and attribute a template (and what it includes) reads."""
        refs = TemplateRefs()
        self._collect(template, refs, set())
        return refs

    def _collect(self, name: str, refs: TemplateRefs, seen: set[str]) -> None:
        if name in seen:
            return
        seen.add(name)
        source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
        ast = self.env.parse(source)
        for var in jinja2.meta.find_undeclared_variables(ast):
            refs.names.setdefault(var, name)
        for node in ast.find_all(jinja2.nodes.Getattr):
            if isinstance(node.node, jinja2.nodes.Name):
                refs.attrs.setdefault((node.node.name, node.attr), (name, node.lineno))
        for child in jinja2.meta.find_referenced_templates(ast):
            if child is not None:
                if not self.exists(child):
                    refs.missing.append((name, child))
                else:
                    self._collect(child, refs, seen)


@dataclass
class TemplateRefs:
    names: dict[str, str]
    attrs: dict[tuple[str, str], tuple[str, int]]
    missing: list[tuple[str, str]]

    def __init__(self) -> None:
        self.names = {}
        self.attrs = {}
        self.missing = []


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
