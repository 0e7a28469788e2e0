"""Cross-checking a runbook against templates, probes and the log catalog.

Everything that could fail on the 37th host at run time (a missing template, an undefined
template variable, an include of steps that do not exist) is found here, before any host.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jinja2
import jinja2.nodes

from cmrunbook.errors import Problem
from cmrunbook.load.context import context_attrs
from cmrunbook.load.logcatalog import LogCatalog
from cmrunbook.load.runbook import TEXT_TYPES, Include, Runbook, Step, parse_range
from cmrunbook.load.sourcemap import SourceMap
from cmrunbook.load.validation import text_problems
from cmrunbook.render.templates import CONTEXT_NAMES, Renderer


class CheckContext(Protocol):
    """What the checker reads of the project that loads a runbook (its renderer and log
    catalog), named here so that the project, which loads through this module, is not imported
    back by it."""

    @property
    def renderer(self) -> Renderer: ...

    @property
    def logs(self) -> LogCatalog: ...


LOG_CATALOG = "_logs.yaml"
WHEN_NAMES = frozenset({"host", "target", "site", "params"})


@dataclass(frozen=True)
class Loaded:
    """A validated runbook and where its values came from (for later error messages)."""

    runbook: Runbook
    path: Path
    smap: SourceMap


def runbook_problems(
    rb: Runbook, smap: SourceMap, path: Path, project: CheckContext
) -> list[Problem]:
    """Every cross-reference problem of one parsed runbook file, the id/file-name match first."""
    problems = list(_Checker(rb, smap, project).problems())
    if rb.id != path.stem:
        problems.insert(
            0, smap.problem(("id",), f"id '{rb.id}' must match file name '{path.stem}'")
        )
    return problems


def all_steps(rb: Runbook) -> Iterator[tuple[tuple[str | int, ...], Step]]:
    """Every step written in the runbook (not includes), with its path in the file."""
    for section in ("prechecks", "steps", "verify", "rollback"):
        for i, step in enumerate(getattr(rb, section)):
            yield (section, i), step
    for mi, method in enumerate(rb.methods):
        for si, item in enumerate(method.steps):
            if isinstance(item, Step):
                yield ("methods", mi, "steps", si), item


def resolve_include(rb: Runbook, inc: Include) -> list[Step]:
    """The steps an include stands for; raises ValueError saying what is missing."""
    spec = inc.include
    method = rb.method(spec.method)
    if method is None:
        raise ValueError(f"include names method '{spec.method}', which this runbook does not have")
    first, last = parse_range(spec.steps)
    own = [s for s in method.steps if isinstance(s, Step)]
    covered = sorted({n for s in own for n in range(s.kb_range[0], s.kb_range[1] + 1)})
    top = covered[-1] if covered else 0
    if last > top or first not in covered:
        raise ValueError(
            f"include of steps {spec.steps} of Method {spec.method}: that method has steps 1-{top}"
        )
    chosen = [s for s in own if first <= s.kb_range[0] and s.kb_range[1] <= last]
    got = {n for s in chosen for n in range(s.kb_range[0], s.kb_range[1] + 1)}
    if got != set(range(first, last + 1)):
        raise ValueError(
            f"steps {spec.steps} of Method {spec.method} cut through a step that covers several "
            "KB steps; include whole steps"
        )
    return chosen


class _Checker:
    """Cross-references inside one runbook, each reported at its own line."""

    def __init__(self, rb: Runbook, smap: SourceMap, project: CheckContext) -> None:
        self.rb = rb
        self.smap = smap
        self.project = project

    def problems(self) -> Iterator[Problem]:
        yield from self._ids()
        yield from self._parameters()
        yield from self._symptoms()
        for i, probe in enumerate(self.rb.probes):
            yield from self._template(("probes", i), probe.template, set(probe.vars), None)
        yield from self._expr(("targets", "when"), self.rb.targets.when)
        for path, step in all_steps(self.rb):
            yield from self._step(path, step)
        yield from self._includes()
        yield from self._arming()
        yield from self._site_states()
        yield from self._publish()

    def _ids(self) -> Iterator[Problem]:
        seen: dict[str, tuple[str | int, ...]] = {}
        for path, step in all_steps(self.rb):
            if step.id in seen:
                first = self.smap.locate((*seen[step.id], "id"))[0]
                yield self.smap.problem(
                    (*path, "id"), f"duplicate step id '{step.id}' (first at line {first})"
                )
            else:
                seen[step.id] = path
        probe_ids: set[str] = set()
        for i, probe in enumerate(self.rb.probes):
            if probe.id in probe_ids:
                yield self.smap.problem(("probes", i, "id"), f"duplicate probe id '{probe.id}'")
            probe_ids.add(probe.id)
        method_ids: set[str] = set()
        for i, m in enumerate(self.rb.methods):
            if m.id in method_ids or m.id == "auto":
                yield self.smap.problem(("methods", i, "id"), f"method id '{m.id}' is taken")
            method_ids.add(m.id)
        if self.rb.methods and self.rb.steps:
            yield self.smap.problem(("steps",), "a runbook has either methods or steps, not both")
        if not self.rb.methods and not self.rb.steps:
            yield self.smap.problem((), "a runbook needs 'methods' or 'steps'")

    def _parameters(self) -> Iterator[Problem]:
        for name, p in self.rb.parameters.items():
            where = ("parameters", name)
            if p.confidence == "UNCONFIRMED" and not p.provenance:
                yield self.smap.problem(
                    where, f"parameter '{name}' is UNCONFIRMED: give its provenance"
                )
            if p.type in TEXT_TYPES and p.default is not None:
                yield from text_problems(
                    f"default of '{name}'",
                    p.default,
                    (*where, "default"),
                    self.smap,
                    listed=p.type == "list",
                )
            if p.type == "choice":
                if not p.choices:
                    yield self.smap.problem(where, f"choice parameter '{name}' needs 'choices'")
                elif p.default is not None and str(p.default) not in [str(c) for c in p.choices]:
                    yield self.smap.problem(
                        (*where, "default"), f"default {p.default!r} is not one of the choices"
                    )
        if self.rb.methods:
            method = self.rb.parameters.get("method")
            wanted = [m.id for m in self.rb.methods] + ["auto"]
            if method is None or method.type != "choice":
                yield self.smap.problem(
                    ("parameters",), "a runbook with methods needs a choice parameter 'method'"
                )
            elif sorted(map(str, method.choices or [])) != sorted(wanted):
                yield self.smap.problem(
                    ("parameters", "method", "choices"), f"method choices must be {wanted}"
                )

    def _symptoms(self) -> Iterator[Problem]:
        for i, sym in enumerate(self.rb.symptoms):
            for key in ("any", "all", "none"):
                for j, pat in enumerate(getattr(sym, key)):
                    try:
                        re.compile(pat)
                    except re.error as exc:
                        yield self.smap.problem(
                            ("symptoms", i, key, j), f"bad regular expression: {exc}"
                        )
            if not sym.any and not sym.all:
                yield self.smap.problem(("symptoms", i), "a symptom needs 'any' or 'all' patterns")

    def _settle(self, path: tuple[str | int, ...], settle: int | str) -> Iterator[Problem]:
        """A settle time is seconds (not negative) or the name of an int parameter."""
        if isinstance(settle, int):
            if settle < 0:
                yield self.smap.problem((*path, "settle"), "settle must be 0 or more seconds")
            return
        param = self.rb.parameters.get(settle)
        if param is None or param.type != "int":
            yield self.smap.problem(
                (*path, "settle"), f"settle '{settle}' is not seconds nor an int parameter"
            )

    def _step(self, path: tuple[str | int, ...], step: Step) -> Iterator[Problem]:
        need = {
            "script": "template",
            "wait_log": "wait",
            "reboot": "reboot",
            "manual": "click_path",
        }[step.kind]
        if getattr(step, need) is None:
            yield self.smap.problem(path, f"a {step.kind} step needs '{need}'")
        item_fields: set[str] | None = None
        if step.for_each:
            probe = self.rb.probe(step.for_each)
            if probe is None:
                yield self.smap.problem((*path, "for_each"), f"unknown probe '{step.for_each}'")
            elif probe.returns != "list":
                yield self.smap.problem(
                    (*path, "for_each"), f"probe '{probe.id}' does not return a list"
                )
            else:
                item_fields = set(probe.fields)
        if step.when_probe and self.rb.probe(step.when_probe.probe) is None:
            yield self.smap.problem(
                (*path, "when_probe", "probe"), f"unknown probe '{step.when_probe.probe}'"
            )
        yield from self._expr((*path, "when"), step.when)
        yield from self._settle(path, step.settle)
        if step.template:
            yield from self._template(path, step.template, set(step.vars), item_fields)
        if step.wait:
            logs = self.project.logs.logs
            for i, log in enumerate(step.wait.logs):
                if log not in logs:
                    yield self.smap.problem(
                        (*path, "wait", "logs", i), f"log '{log}' is not in runbooks/{LOG_CATALOG}"
                    )
                elif step.wait.expect not in logs[log].expect:
                    known = ", ".join(logs[log].expect)
                    yield self.smap.problem(
                        (*path, "wait", "expect"),
                        f"{log} has no expectation '{step.wait.expect}'; known: {known}",
                    )

    def _site_states(self) -> Iterator[Problem]:
        """A site state's probes are site-wide lists; its steps loop over its items there."""
        steps = dict((step.id, (path, step)) for path, step in all_steps(self.rb))
        for i, state in enumerate(self.rb.site_states):
            where: tuple[str | int, ...] = ("site_states", i)
            for key, probe_id in [("items", state.items), *(("read_by", p) for p in state.read_by)]:
                probe = self.rb.probe(probe_id)
                if probe is None or probe.on != "site_server":
                    yield self.smap.problem(
                        (*where, key), f"'{probe_id}' is not a probe on the site_server"
                    )
                elif key == "items" and probe.returns != "list":
                    yield self.smap.problem((*where, key), f"probe '{probe_id}' is not a list")
            found = steps.get(state.restore)
            effect = found[1].site_state if found else None
            if effect is None or effect.state != state.id or effect.effect == "change":
                yield self.smap.problem(
                    (*where, "restore"),
                    f"'{state.restore}' is not a step with site_state {{state: {state.id}, "
                    "effect: restore}",
                )
        for path, step in steps.values():
            effect = step.site_state
            if effect is None:
                continue
            declared = self.rb.site_state(effect.state)
            if declared is None:
                yield self.smap.problem(
                    (*path, "site_state", "state"), f"unknown site state '{effect.state}'"
                )
            elif step.for_each != declared.items or step.on != "site_server":
                yield self.smap.problem(
                    (*path, "site_state"),
                    f"a step that changes site state '{declared.id}' runs on: site_server and "
                    f"loops over its items (for_each: {declared.items})",
                )

    def _publish(self) -> Iterator[Problem]:
        """The published rule's operand is a runbook parameter holding a version."""
        if self.rb.publish is None:
            return
        name = self.rb.publish.rule.parameter
        param = self.rb.parameters.get(name)
        if param is None or param.type != "version":
            yield self.smap.problem(
                ("publish", "rule", "parameter"),
                f"'{name}': expected a parameter of type version of this runbook",
            )

    def _expr(self, path: tuple[str | int, ...], expr: str | None) -> Iterator[Problem]:
        if expr is None:
            return
        conditions = self.project.renderer.conditions
        try:
            ast = conditions.parse(expr)
        except jinja2.TemplateSyntaxError as exc:
            yield self.smap.problem(path, f"condition is not a valid expression: {exc.message}")
            return
        refused = conditions.refusals(ast)
        if refused:
            yield self.smap.problem(path, f"condition is refused: {'; '.join(refused)}")
            return
        every = [ast, *ast.find_all(jinja2.nodes.Node)]
        unknown = {n.name for n in every if isinstance(n, jinja2.nodes.Name)} - WHEN_NAMES
        if unknown:
            yield self.smap.problem(
                path,
                f"condition uses unknown name(s) {sorted(unknown)}; expected {sorted(WHEN_NAMES)}",
            )
        yield from self._param_attrs(path, every)

    def _param_attrs(
        self, path: tuple[str | int, ...], every: list[jinja2.nodes.Node]
    ) -> Iterator[Problem]:
        for node in every:
            if isinstance(node, jinja2.nodes.Getattr) and isinstance(node.node, jinja2.nodes.Name):
                wrong = self._unknown_attr(node.node.name, node.attr)
                if wrong:
                    yield self.smap.problem(
                        path, f"condition uses {node.node.name}.{node.attr}, which {wrong}"
                    )

    def _unknown_attr(self, obj: str, attr: str) -> str | None:
        """Why `obj.attr` is not something a run provides ("is not ..."), or None when it is.

        Only the context objects a run builds are checked (params, host, target, site); other
        names (item, step vars, template locals) are left to their own checks.
        """
        if obj == "params":
            if attr in self.rb.parameters:
                return None
            known = sorted(self.rb.parameters)
            what = "a parameter of this runbook"
        elif obj in (fields := context_attrs()):
            if attr in fields[obj]:
                return None
            known = sorted(fields[obj])
            what = f"a field of {obj}"
        else:
            return None
        hint = difflib.get_close_matches(attr, known, n=1)
        more = f" (did you mean {obj}.{hint[0]}?)" if hint else ""
        return f"is not {what}{more}; known: {', '.join(known)}"

    def _template(
        self,
        path: tuple[str | int, ...],
        template: str,
        var_names: set[str],
        item_fields: set[str] | None,
    ) -> Iterator[Problem]:
        renderer = self.project.renderer
        if not renderer.exists(template):
            yield self.smap.problem(
                (*path, "template"), f"template '{template}' not found under templates/"
            )
            return
        try:
            refs = renderer.references(template)
        except jinja2.TemplateSyntaxError as exc:
            yield self.smap.problem(
                (*path, "template"), f"{exc.filename or template}:{exc.lineno}: {exc.message}"
            )
            return
        for parent, child in refs.missing:
            yield self.smap.problem(
                (*path, "template"), f"{parent} includes '{child}', which does not exist"
            )
        allowed = CONTEXT_NAMES | var_names
        for name, where in sorted(refs.names.items()):
            if name not in allowed:
                yield self.smap.problem(
                    (*path, "template"),
                    f"{where} uses '{name}', which is not defined (step vars: {sorted(var_names)})",
                )
        for (obj, attr), (where, line) in sorted(refs.attrs.items()):
            wrong = self._unknown_attr(obj, attr)
            if wrong:
                yield self.smap.problem(
                    (*path, "template"), f"{where}:{line} uses {obj}.{attr}, which {wrong}"
                )
            if obj == "item":
                if item_fields is None:
                    yield self.smap.problem(
                        (*path, "template"),
                        f"{where}:{line} uses item.{attr} but the step has no for_each",
                    )
                elif attr not in item_fields:
                    yield self.smap.problem(
                        (*path, "template"),
                        f"{where}:{line} uses item.{attr}; the probe gives {sorted(item_fields)}",
                    )
        if "item" in refs.names and item_fields is None:
            yield self.smap.problem(
                (*path, "template"), f"{template} uses 'item' but the step has no for_each"
            )

    def _includes(self) -> Iterator[Problem]:
        for mi, method in enumerate(self.rb.methods):
            for si, item in enumerate(method.steps):
                if isinstance(item, Include):
                    try:
                        resolve_include(self.rb, item)
                    except ValueError as exc:
                        yield self.smap.problem(
                            ("methods", mi, "steps", si, "include", "steps"), str(exc)
                        )

    def _arming(self) -> Iterator[Problem]:
        lists: list[tuple[tuple[str | int, ...], list[Step]]] = [(("steps",), list(self.rb.steps))]
        for section in ("prechecks", "verify", "rollback"):
            lists.append(((section,), list(getattr(self.rb, section))))
        for mi, method in enumerate(self.rb.methods):
            flat: list[Step] = []
            for item in method.steps:
                if isinstance(item, Step):
                    flat.append(item)
                else:
                    with contextlib.suppress(ValueError):  # reported by _includes
                        flat.extend(resolve_include(self.rb, item))
            lists.append((("methods", mi), flat))
        positions = {step.id: path for path, step in all_steps(self.rb)}
        for _, steps in lists:
            order = [s.id for s in steps]
            for idx, step in enumerate(steps):
                if step.wait and step.id in positions:
                    target = step.wait.armed_before
                    if target not in order[:idx]:
                        yield self.smap.problem(
                            (*positions[step.id], "wait", "armed_before"),
                            f"armed_before '{target}' must name a step before '{step.id}'",
                        )
