"""Rendering steps to PowerShell with Jinja2.

Every `{{ value }}` passes through `pwsh.literal` (Jinja's `finalize` hook), so a template cannot
forget to quote; `{{ value | raw }}` is the visible exception. Undefined names fail
(StrictUndefined).
Every script is the same prelude, the step's body, and one machine-readable result line
(`render.result`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
import jinja2.parser
import jinja2.sandbox

from cmrunbook.render import pwsh
from cmrunbook.render.result import RESULT_MARKER

#: The template every script is wrapped in (prelude, header line, result line).
_WRAPPER = "_script.ps1.j2"
#: Stand-ins for the header and the body while the wrapper is rendered once (`framed`): no
#: template text holds a NUL.
_HEADER_MARK, _BODY_MARK = "\x00cmrunbook-header\x00", "\x00cmrunbook-body\x00"
_MARKS = (_HEADER_MARK, _BODY_MARK)

CONTEXT_NAMES = frozenset({"host", "target", "site", "params", "item", "step", "runbook"})


def _raw(value: Any) -> pwsh.Raw:
    return pwsh.Raw(value)


def _ps_join(values: Iterable[Any], sep: str = ", ") -> pwsh.Raw:
    """Several literals joined, for argument lists."""
    return pwsh.Raw(sep.join(pwsh.literal(v) for v in values))


class Renderer:
    """One Jinja2 environment over templates/, shared by every render of a run.

    `templates_dirs` are searched in order, so an admin's folder shadows a shipped template of
    the same name.
    """

    def __init__(self, templates_dirs: Sequence[Path]) -> None:
        self.templates_dirs = list(templates_dirs)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.templates_dirs]),
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
        self.conditions = Conditions()
        # What each template file reads, by its name and text: a file that many templates
        # include (or many runbooks use) is parsed once when the catalog is loaded.
        self._read: dict[tuple[str, str], _FileRefs] = {}
        #: `_script.ps1.j2` rendered once and cut at its header and body (`framed`); () when
        #: it cannot be cut.
        self._frame: tuple[str, str, str] | tuple[()] | None = None

    def exists(self, name: str) -> bool:
        return any((d / name).is_file() for d in self.templates_dirs)

    def script(self, template: str, context: dict[str, Any], header: str) -> str:
        """A complete script: prelude, body, result line."""
        return self.framed(self.body(template, context), header)

    def body(self, template: str, context: dict[str, Any]) -> str:
        """A step's own part of its script, before the shared prelude and result are put round
        it (`framed`)."""
        return self.env.get_template(template).render(context)

    def framed(self, body: str, header: str) -> str:
        """The script of `body`: `_script.ps1.j2` round it, with `header` as its first line.

        The wrapper is rendered once, with marks in place of its header and body, and each
        script is made by filling them in: rendering its 2 KB of prelude again for each of
        10,000 hosts was a fifth of the engine's own cost per host. A wrapper (an admin's
        overlay) that does not place each exactly once as it is, is rendered per script."""
        parts = self._frame
        if parts is None:
            parts = self._frame = self._split_wrapper()
        header = pwsh.comment_safe(header)
        if not parts:
            return self.env.get_template(_WRAPPER).render(header=header, body=pwsh.Raw(body))
        before, between, after = parts
        return f"{before}{header}{between}{body}{after}"

    def _split_wrapper(self) -> tuple[str, str, str] | tuple[()]:
        marked = self.env.get_template(_WRAPPER).render(
            header=_HEADER_MARK, body=pwsh.Raw(_BODY_MARK)
        )
        before, found, rest = marked.partition(_HEADER_MARK)
        between, found_body, after = rest.partition(_BODY_MARK)
        if not (found and found_body) or any(
            mark in text for text in (before, between, after) for mark in _MARKS
        ):
            return ()
        return before, between, after

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
        found = self._read.get((name, source))
        if found is None:
            found = self._read[(name, source)] = _file_refs(self.env.parse(source))
        variables, attrs, children = found
        for var in variables:
            refs.names.setdefault(var, name)
        for attr, lineno in attrs:
            refs.attrs.setdefault(attr, (name, lineno))
        for child in children:
            if child is None:
                refs.dynamic = True
            elif not self.exists(child):
                refs.missing.append((name, child))
            else:
                self._collect(child, refs, seen)


#: One template file's own reads: undeclared names, (name, attribute) reads with their line,
#: and the templates it includes (None for one named only when rendered).
_FileRefs = tuple[tuple[str, ...], tuple[tuple[tuple[str, str], int], ...], tuple[str | None, ...]]


def _file_refs(ast: jinja2.nodes.Template) -> _FileRefs:
    """What one parsed template file reads and includes, in the order they appear."""
    attrs = tuple(
        ((node.node.name, node.attr), node.lineno)
        for node in ast.find_all(jinja2.nodes.Getattr)
        if isinstance(node.node, jinja2.nodes.Name)
    )
    children = tuple(jinja2.meta.find_referenced_templates(ast))
    return tuple(jinja2.meta.find_undeclared_variables(ast)), attrs, children


#: What a runbook condition may be built of besides names, constants and attribute reads: a
#: condition compares inventory and parameter values, so it needs no calls, no globals and only a
#: few filters and tests; no multiplication either (`'x' * 10**9` is a memory bomb). Everything
#: else is refused when the runbook is loaded.
CONDITION_NODES = (
    jinja2.nodes.Name,
    jinja2.nodes.Const,
    jinja2.nodes.List,
    jinja2.nodes.Tuple,
    jinja2.nodes.Getattr,
    jinja2.nodes.Getitem,
    jinja2.nodes.Compare,
    jinja2.nodes.Operand,
    jinja2.nodes.And,
    jinja2.nodes.Or,
    jinja2.nodes.Not,
    jinja2.nodes.Neg,
    jinja2.nodes.Pos,
    jinja2.nodes.Add,
    jinja2.nodes.Sub,
    jinja2.nodes.Concat,
    jinja2.nodes.CondExpr,
    jinja2.nodes.Filter,
    jinja2.nodes.Test,
)
CONDITION_FILTERS = frozenset(
    {"length", "lower", "upper", "trim", "int", "string", "first", "last"}
)
CONDITION_TESTS = frozenset(
    {
        "defined",
        "undefined",
        "none",
        "true",
        "false",
        "in",
        "eq",
        "ne",
        "equalto",
        "sameas",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "lt",
        "le",
        "gt",
        "ge",
        "number",
        "string",
        "lower",
        "upper",
        "sequence",
    }
)


class Conditions:
    """Runbook `when:` expressions, a small language over the inventory and parameter values.

    A runbook is data, not code: a condition that could call Python (`''.__class__.__mro__`
    and on, attack 1d) would run it on the jump host during a dry run, in the process that holds
    the WinRM password. So a condition is checked against a whitelist when the runbook is
    loaded (`refusals`), and evaluated in Jinja's immutable sandbox without globals, which
    refuses underscore attributes and mutating calls even if the check were bypassed.
    """

    def __init__(self) -> None:
        self.env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
        self.env.globals.clear()

    def parse(self, expr: str) -> jinja2.nodes.Expr:
        """The expression's tree; raises TemplateSyntaxError, also for text after it."""
        parser = jinja2.parser.Parser(self.env, expr, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise jinja2.TemplateSyntaxError(
                f"unexpected {token.value!r} after the expression", token.lineno
            )
        return node

    def refusals(self, node: jinja2.nodes.Node) -> list[str]:
        """What in the expression is not part of the condition language, in words."""
        out: list[str] = []
        for child in [node, *node.find_all(jinja2.nodes.Node)]:
            if not isinstance(child, CONDITION_NODES):
                out.append(f"{type(child).__name__.lower()} is not allowed (no calls or blocks)")
            elif isinstance(child, jinja2.nodes.Getattr) and child.attr.startswith("_"):
                out.append(f"attribute '{child.attr}' is not allowed (no names starting with _)")
            elif (
                isinstance(child, jinja2.nodes.Getitem)
                and isinstance(child.arg, jinja2.nodes.Const)
                and str(child.arg.value).startswith("_")
            ):
                out.append(f"item '{child.arg.value}' is not allowed (no names starting with _)")
            elif isinstance(child, jinja2.nodes.Filter) and child.name not in CONDITION_FILTERS:
                out.append(
                    f"filter '{child.name}' is not allowed (known: "
                    f"{', '.join(sorted(CONDITION_FILTERS))})"
                )
            elif isinstance(child, jinja2.nodes.Test) and child.name not in CONDITION_TESTS:
                out.append(f"test '{child.name}' is not allowed")
        return list(dict.fromkeys(out))

    def compile(self, expr: str) -> Any:
        """The condition as a function of the context names, evaluated in the sandbox.

        An undefined attribute must fail, not read as None: `target.pxee` would make the
        condition false and silently skip the step on every host.
        """
        return self.env.compile_expression(expr, undefined_to_none=False)


@dataclass
class TemplateRefs:
    """What a template and its includes read. `dynamic`: it includes a template named only when
    rendered, whose reads cannot be known beforehand (so none of them is listed)."""

    names: dict[str, str]
    attrs: dict[tuple[str, str], tuple[str, int]]
    missing: list[tuple[str, str]]
    dynamic: bool

    def __init__(self) -> None:
        self.names = {}
        self.attrs = {}
        self.missing = []
        self.dynamic = False
