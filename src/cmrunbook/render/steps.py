"""Scripts for a plan's steps and probes: the template, the context it sees, the header line.

Every script the tool sends for a runbook is made here, for a run, a dry run, a checklist's
appendix and the tests alike, so that what a person reviews is what the engine sends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from cmrunbook.load.context import site_context
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import Probe
from cmrunbook.plan.planner import HostPlan, Plan, PlannedStep


def step_context(
    plan: Plan, hp: HostPlan, ps: PlannedStep, item: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What a step's template sees."""
    runner = plan.inventory.hosts[ps.run_on]
    ctx: dict[str, Any] = {
        "host": runner.as_context(),
        "target": hp.target.as_context(),
        "site": site_context(hp.target),
        "params": hp.params,
        "step": {"id": ps.step.id, "key": ps.key, "kb": ps.citation, "title": ps.step.title},
        "runbook": {"id": plan.runbook.id, "kb": plan.runbook.source.kb},
        **ps.step.vars,
    }
    if item is not None:
        ctx["item"] = dict(item)
    return ctx


def script_header(plan: Plan, key: str, citation: str, target: str, on: str) -> str:
    """The first line of every script: what it is, for whom, where (also read by the lab)."""
    return f"cmrunbook {plan.runbook.id} | {key} | {citation} | target {target} | on {on}"


def placeholder_item(probe: Probe) -> dict[str, str]:
    """Stand-in values for a loop item in a dry run: shown, never executed."""
    return {f: f"<{f} of each item found by probe {probe.id}>" for f in probe.fields}


class Scripts:
    """Scripts made once per distinct value of what their template reads (its own names and
    those of what it includes: parameters, the site, the host only if it reads the host; never a
    name it does not read), each then framed with its own header (`Renderer.framed`).

    Alike hosts get the same body: rendering it again for each of 10,000 hosts (or each of a
    site's 50,000 clients, for its one site script) only to find the same text cost more than
    everything else the engine does for a host. At most `KEEP` bodies are kept, so a template
    that reads each host's own values costs one render per host, as without this, and no more
    memory than a few of them.
    """

    KEEP = 256

    def __init__(self, catalog: Project) -> None:
        self._catalog = catalog
        self._guard = threading.Lock()
        #: Per template, the context names it (and what it includes) reads; None when that is
        #: known only when rendered (it names an include then), so its script is made each time.
        self._reads: dict[str, list[str] | None] = {}
        self._bodies: dict[str, str] = {}

    def script(self, template: str, context: dict[str, Any], header: str) -> str:
        """The script of `template` for `context`, with `header` as its first line."""
        if template not in self._reads:
            refs = self._catalog.renderer.references(template)
            self._reads[template] = None if refs.dynamic else sorted(refs.names)
        reads = self._reads[template]
        if reads is None:
            return self._catalog.renderer.framed(
                self._catalog.renderer.body(template, context), header
            )
        used = {name: context[name] for name in reads if name in context}
        key = json.dumps([template, used], sort_keys=True, default=repr)
        body = self._bodies.get(key)
        if body is None:
            body = self._catalog.renderer.body(template, context)
            with self._guard:
                if len(self._bodies) >= self.KEEP:
                    self._bodies.clear()
                self._bodies[key] = body
        return self._catalog.renderer.framed(body, header)


def render_step(
    catalog: Project,
    plan: Plan,
    hp: HostPlan,
    ps: PlannedStep,
    item: Mapping[str, Any] | None = None,
    *,
    scripts: Scripts | None = None,
) -> str | None:
    """The full script for a script step (None for manual, wait and reboot steps); `scripts`
    makes alike hosts' scripts once (a run passes its own)."""
    if ps.step.template is None:
        return None
    if ps.step.for_each and item is None:
        probe = plan.runbook.probe(ps.step.for_each)
        assert probe is not None
        item = placeholder_item(probe)
    header = script_header(plan, ps.key, ps.citation, hp.target.name, ps.run_on)
    context = step_context(plan, hp, ps, item)
    if scripts is None:
        return catalog.renderer.script(ps.step.template, context, header)
    return scripts.script(ps.step.template, context, header)


def render_probe(catalog: Project, plan: Plan, hp: HostPlan, probe: Probe) -> tuple[str, str]:
    """(host it runs on, script) for a probe."""
    runner = plan.inventory.provider_of(hp.target) if probe.on == "site_server" else hp.target
    ctx: dict[str, Any] = {
        "host": runner.as_context(),
        "target": hp.target.as_context(),
        "site": site_context(hp.target),
        "params": hp.params,
        "step": {"id": probe.id, "key": f"probe/{probe.id}", "kb": "probe", "title": probe.title},
        "runbook": {"id": plan.runbook.id, "kb": plan.runbook.source.kb},
        **probe.vars,
    }
    header = script_header(plan, f"probe/{probe.id}", "read-only", hp.target.name, runner.name)
    return runner.name, catalog.renderer.script(probe.template, ctx, header)
