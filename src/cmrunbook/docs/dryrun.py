"""The dry run: every step of the plan, per host, as text; optionally every script. Touches nothing.

It only renders: no transport is imported or constructed here, so a dry run cannot open a
connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from cmrunbook.errors import UsageError, naming
from cmrunbook.filenames import safe_name
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import Probe
from cmrunbook.plan.planner import HostPlan, Plan, PlannedStep, SharedPlan, Stage
from cmrunbook.render.steps import render_probe, render_step
from cmrunbook.text import printable


def _flags(ps: PlannedStep) -> str:
    step = ps.step
    flags = []
    if step.destructive:
        flags.append("DESTRUCTIVE")
    if step.kind == "manual":
        flags.append("MANUAL")
    if step.kind == "reboot":
        flags.append(f"REBOOT {step.reboot}")
    if step.for_each:
        flags.append(f"for each item of probe {step.for_each}")
    if step.site_state:
        # Site-wide: held by one target of the site at a time, set back if the run stops.
        flags.append(f"SITE-WIDE {step.site_state.effect} of {step.site_state.state}")
    return ", ".join(flags)


def describe_step(n: int, ps: PlannedStep, catalog: Project) -> list[str]:
    """The lines that present one step: where it would run, or why it is skipped, and its waits."""
    step = ps.step
    flags = _flags(ps)
    lines = [f"{n:>3}. [{ps.citation}] {step.title}"]
    if ps.skip_reason:
        # One line: a skipped step does not run anywhere, so no "runs on" line claims it does;
        # the host and flags are kept to show what is being left out.
        what = f"{step.kind} on {ps.run_on}" + (f", {flags}" if flags else "")
        lines.append(f"       {ps.skip_reason} ({what})")
    else:
        lines.append(
            f"       would run on {ps.run_on} ({step.kind})" + (f"  {flags}" if flags else "")
        )
        if step.when:
            lines.append(f"       condition: {step.when} (true in the inventory)")
    if ps.run_time_condition:
        lines.append(f"       {ps.run_time_condition}")
    for armed in ps.arms:
        lines.append(f"       arms log monitor of {armed} before this step (records the log size)")
    if step.wait:
        w = step.wait
        lines.append(
            f"       waits for {' and '.join(w.logs)}: '{w.expect}' "
            f"(timeout {w.timeout}s, poll {w.poll}s)"
        )
        for log in w.logs:
            exp = catalog.logs.expectation(log, w.expect)
            lines.append(f"         {log} success: {' | '.join(p.re for p in exp.success)}")
            if exp.failure:
                lines.append(f"         {log} failure: {' | '.join(p.re for p in exp.failure)}")
            if not exp.required:
                lines.append(f"         ({log} not required: its failure still ends the wait)")
            if exp.confirm:
                lines.append(f"         (then also waits for the {exp.confirm})")
            if exp.confidence == "UNCONFIRMED":
                lines.append(f"         ({log} patterns are UNCONFIRMED: runbooks/_logs.yaml)")
    if ps.note:
        lines.append(f"       note: {ps.note}")
    return lines


def _host_header(plan: Plan, hp: HostPlan) -> str:
    t = hp.target
    roles = ",".join(t.roles)
    extra = []
    if t.multicast:
        extra.append("multicast")
    if t.pxe:
        extra.append("PXE service point")
    flags = f" [{', '.join(extra)}]" if extra else ""
    return (
        f"== {t.name} ({roles}{flags}; site {t.site_code}, ConfigMgr {t.site.version} "
        f"{t.site.release}; Windows {t.os.version} {t.os.arch}) =="
    )


def print_dry_run(
    plan: Plan,
    catalog: Project,
    out: TextIO,
    *,
    show_scripts: bool = False,
    out_dir: Path | None = None,
) -> int:
    """Print the plan; with `out_dir`, write a .ps1 per host and step. Returns the script count.

    Every line passes through `printable` (inventory names and values are shown as text); the
    text of a class of alike targets is escaped once, and only the names filled into it for each
    target. The lines are collected and written at once: a 10,000-host plan is about a million
    characters in 100,000 lines, and writing each line on its own cost more than planning it.
    What was collected before an error is still written, as it was when each line was printed
    as it came.
    """
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(printable(line))

    try:
        return _dry_run(
            plan, catalog, say, lines.append, show_scripts=show_scripts, out_dir=out_dir
        )
    finally:
        if lines:
            out.write("\n".join(lines) + "\n")


def _dry_run(
    plan: Plan,
    catalog: Project,
    say: Callable[[str], None],
    say_escaped: Callable[[str], None],
    *,
    show_scripts: bool,
    out_dir: Path | None,
) -> int:
    """The dry run's lines, each passed to `say` (or, already through `printable`, to
    `say_escaped`); with `out_dir`, the scripts written."""
    rb = plan.runbook
    mode = (
        "rollback" if plan.rollback else (f"method {plan.method}" if plan.method else "procedure")
    )
    say(f"DRY RUN: {rb.id} ({mode}); nothing will be changed and no host will be contacted.")
    say(f"{rb.title}")
    say(f"Source: {rb.source.kb}, {rb.source.title} [{rb.source.document}]")
    say(f"Inventory: {plan.inventory.path}")
    for g in rb.guidance:
        say(f"  * {g}")
    if plan.escalates:
        say(
            "  * auto: verification runs first and after each method; the first that passes ends "
            "the host's run, a failure goes on to the next method."
        )
    if plan.selected:
        for name, reason in plan.skipped_hosts:
            say(f"  - {name}: not a target ({reason})")
    elif plan.skipped_hosts:
        say(
            f"  {len(plan.skipped_hosts)} other inventory host(s) are not targets "
            "(name them with --hosts to see why)."
        )
    rendered = 0
    shared_texts = _SharedTexts(plan, catalog)
    for hp in plan.hosts:
        say("")
        say(_host_header(plan, hp))
        text = None if show_scripts or out_dir else shared_texts.text(hp)
        if text is not None:
            say_escaped(text)
            continue
        render = _Scripts(catalog, plan, hp, say, out_dir, show_scripts)
        target, provider = hp.target.name, plan.inventory.provider_of(hp.target).name
        _host_body(plan, hp.params, hp.stages, target, provider, catalog, say, render)
        rendered += render.count
    if rb.rollback and not plan.rollback:
        say("")
        say(f"Rollback: {len(rb.rollback)} step(s), run with --rollback.")
    if out_dir:
        say(f"\nWrote {rendered} script(s) under {out_dir}")
    return rendered


def _host_body(
    plan: Plan,
    params: dict[str, Any],
    stages: list[Stage],
    target: str,
    provider: str,
    catalog: Project,
    say: Callable[[str], None],
    scripts: _Scripts | None,
) -> None:
    """What a dry run shows of one target after its header: its UNCONFIRMED parameters, the
    probes its steps use and its steps; with `scripts`, each probe's and step's script too."""
    rb = plan.runbook
    uncertain = [
        f"{k}={params[k]!r}" for k, p in rb.parameters.items() if p.confidence == "UNCONFIRMED"
    ]
    if uncertain:
        say(
            "  UNCONFIRMED parameters (override with --set or inventory vars): "
            + ", ".join(uncertain)
        )
    n = 0
    steps = [s for st in stages for s in st.steps]
    probes_used = {s.step.for_each for s in steps} | {
        s.step.when_probe.probe for s in steps if s.step.when_probe
    }
    for probe in rb.probes:
        if probe.id in probes_used:
            runner = provider if probe.on == "site_server" else target
            say(
                f"  probe {probe.id}: {probe.title} "
                f"(read-only, on {runner}, returns {probe.returns})"
            )
            if scripts:
                scripts.probe(probe)
    for stage in stages:
        say(f"  -- {stage.title} --")
        for ps in stage.steps:
            n += 1
            for line in describe_step(n, ps, catalog):
                say(line)
            if scripts and not ps.skip_reason:
                scripts.step(n, ps)


class _Scripts:
    """One target's scripts, shown after their step or written under `out_dir` (or neither)."""

    def __init__(
        self,
        catalog: Project,
        plan: Plan,
        hp: HostPlan,
        say: Callable[[str], None],
        out_dir: Path | None,
        show: bool,
    ) -> None:
        self.catalog, self.plan, self.hp, self.say = catalog, plan, hp, say
        self.out_dir, self.show = out_dir, show
        self.count = 0

    def __bool__(self) -> bool:
        return bool(self.show or self.out_dir)

    def probe(self, probe: Probe) -> None:
        _, script = render_probe(self.catalog, self.plan, self.hp, probe)
        self.count += _emit(self.say, self.out_dir, self.hp, f"probe-{probe.id}", script, self.show)

    def step(self, n: int, ps: PlannedStep) -> None:
        script = render_step(self.catalog, self.plan, self.hp, ps)
        if script is not None:
            self.count += _emit(
                self.say, self.out_dir, self.hp, f"{n:02d}-{ps.key}", script, self.show
            )


#: Two pairs of stand-ins for the target's and the provider's name: a class's text is made with
#: each, and the holes are where the two texts differ (see _SharedTexts.text).
_STAND_INS = (("\x00T1\x00", "\x00P1\x00"), ("\x00T2\x00", "\x00P2\x00"))


class _SharedTexts:
    """The text of each class of alike targets (planner.SharedPlan), made once with the names
    left as holes and filled in for each target: a 10,000-host dry run prints a few dozen
    texts, not 170,000 steps."""

    def __init__(self, plan: Plan, catalog: Project) -> None:
        self.plan, self.catalog = plan, catalog
        self._parts: dict[int, list[str] | None] = {}

    def text(self, hp: HostPlan) -> str | None:
        """The body of `hp`, through `printable`, or None when it has no class text (print it
        on its own)."""
        shared = hp.shared
        if shared is None:
            return None
        key = id(shared)
        if key not in self._parts:
            self._parts[key] = self._holes(hp, shared)
        parts = self._parts[key]
        if parts is None:
            return None
        names = {"target": printable(hp.target.name), "provider": printable(hp.provider)}
        return "".join([names[p] if i % 2 else p for i, p in enumerate(parts)])

    def _holes(self, hp: HostPlan, shared: SharedPlan) -> list[str] | None:
        """The class's text split at the names and escaped: text, "target" or "provider",
        text, ...

        Made with two pairs of stand-ins: where both texts agree apart from the stand-ins, the
        holes are exactly where names go (a runbook text that happened to hold one pair would
        make the two texts disagree; then None, and each target is printed on its own).
        """
        split = []
        for target, provider in _STAND_INS:
            lines: list[str] = []
            stages = shared.stages_for(target, provider)
            _host_body(
                self.plan, hp.params, stages, target, provider, self.catalog, lines.append, None
            )
            if not lines:  # nothing to say: no line at all, not an empty one
                return None
            pattern = f"({re.escape(target)}|{re.escape(provider)})"
            parts = re.split(pattern, "\n".join(lines))
            split.append(
                [
                    ("target" if p == target else "provider") if i % 2 else p
                    for i, p in enumerate(parts)
                ]
            )
        if split[0] != split[1]:
            return None
        return [p if i % 2 else printable(p) for i, p in enumerate(split[0])]


def _emit(
    say: Callable[[str], None],
    out_dir: Path | None,
    hp: HostPlan,
    name: str,
    script: str,
    show: bool,
) -> int:
    if show:
        say("       ---- PowerShell ----")
        for line in script.splitlines():
            say(f"       | {line}")
    if out_dir:
        path = out_dir / safe_name(hp.target.name) / f"{safe_name(name)}.ps1"
        # The names are sanitised, so this holds; checked anyway, since a script written outside
        # the folder the operator gave could overwrite anything the account can write.
        if not path.resolve().is_relative_to(out_dir.resolve()):
            raise UsageError(f"--out: {path} would be outside {out_dir}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.write_text(script, encoding="utf-8")
        except OSError as exc:  # a full disk: say which file
            raise naming(exc, path) from exc
    return 1
