"""The printable checklist: a plan as numbered steps a person follows, signs and files.

A change board approves, and an operator follows, the same steps the engine would run: so the
checklist is built from the `Plan` (conditions the inventory decides are already resolved) and
shows, per host, each step's KB citation, console click-path, the log line to wait for, the
expected result, a checkbox and fields for time and initials. The PowerShell the engine would send
goes into an appendix, rendered by the same code as a run (`render.steps`).

Given a run's journal, the same document is filled in with what happened (status, time,
message, log lines read): the audit record of that run.

Rendering uses the documents' Jinja2 environment (`record.markup`, shared with the report) over
`templates/checklist/`: HTML with autoescape on, Markdown with its own escaping filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cmrunbook.filenames import safe_name
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import Probe, is_read_only_check
from cmrunbook.plan.planner import HostPlan, Plan, PlannedStep
from cmrunbook.record.journal_read import Journal, StepRecord, parse_time
from cmrunbook.record.markup import environment
from cmrunbook.record.vocabulary import FAULT_FOUND, Wording
from cmrunbook.render.steps import render_probe, render_step

Format = Literal["html", "md"]
Paper = Literal["a4", "letter"]
FORMATS: tuple[str, ...] = ("html", "md")
PAPERS: dict[str, str] = {"a4": "A4", "letter": "letter"}


# ---------------------------------------------------------------- view model


@dataclass
class LogWaitView:
    """One log a step waits on, with its patterns made readable for a person at CMTrace."""

    log: str
    expect: str
    success: list[tuple[str, str]]
    failure: list[tuple[str, str]]
    timeout: int
    poll: int
    unconfirmed: bool


@dataclass
class ItemView:
    item: str | None
    status: str
    time: str
    message: str
    log_lines: list[str]


@dataclass
class ActualView:
    """What the journal says happened to a step (the checklist filled in from a run)."""

    status: str
    started: str
    ended: str
    duration: str
    on: str
    message: str
    log_lines: list[str]
    items: list[ItemView]
    done: bool
    #: A verification that found the fault before the run escalated (not a failure).
    found_fault: bool = False

    @property
    def label(self) -> str:
        """The result as a person reads it."""
        return FAULT_FOUND if self.found_fault else self.status

    @property
    def css(self) -> str:
        """The style of the result: a found fault is not shown as a failure."""
        return "found" if self.found_fault else self.status


@dataclass
class StepView:
    number: int
    key: str
    citation: str
    title: str
    kind: str
    run_on: str
    click_path: str | None
    expect: str | None
    destructive: bool
    manual: bool
    reboot: str | None
    loops_over: str | None
    not_applicable: str | None
    only_if: str | None
    condition: str | None
    arms: list[str]
    note: str | None
    waits: list[LogWaitView]
    script_anchor: str | None
    actual: ActualView | None = None
    #: The runbook's inventory condition for the step (`target.winrm`), host-independent.
    applies_when: str | None = None
    on_site_server: bool = False


@dataclass
class SectionView:
    name: str
    title: str
    kind: str
    steps: list[StepView]
    intro: str | None = None
    outcome: str | None = None
    stage_result: str | None = None


@dataclass
class ScriptView:
    anchor: str
    label: str
    on: str
    script: str


@dataclass
class WrapperView:
    """The lines every script the engine sends has around its own (strict mode, the JSON
    writer for PowerShell 2.0, the result line): printed once, not once per step."""

    prelude: str
    epilogue: str


@dataclass
class ParamView:
    name: str
    value: str
    provenance: str


@dataclass
class HostChecklistView:
    name: str
    anchor: str
    facts: str
    unconfirmed: list[ParamView]
    probes: list[tuple[str, str, str, str]]
    sections: list[SectionView]
    scripts: list[ScriptView]
    result: dict[str, str] | None = None
    extra_steps: list[StepView] = field(default_factory=list)
    #: Site, OS and architecture: the host's cell in a check's table.
    brief: str = ""

    @property
    def applicable_steps(self) -> list[StepView]:
        """The steps the inventory does not rule out for this host (its row of a check)."""
        return [st for section in self.sections for st in section.steps if not st.not_applicable]


@dataclass
class Checklist:
    """Everything the templates show; plain values only, so both formats say the same."""

    runbook_id: str
    title: str
    summary: str
    document: str
    kb: str
    source_title: str
    section: str | None
    applies_to: str
    mode: str
    escalates: bool
    guidance: list[str]
    inventory: str
    hosts: list[HostChecklistView]
    skipped_hosts: list[tuple[str, str]]
    generated: str
    paper: str
    run: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    #: The PowerShell appendix is printed (`--scripts`, the default; `--no-scripts` leaves it
    #: out: it is most of the pages and the change board reads the steps, not the scripts).
    scripts: bool = True
    wrapper: WrapperView | None = None
    #: A read-only check (see `is_read_only_check`): its steps are printed once, then one
    #: table row per host to tick, not a page and a sign-off per host.
    read_only: bool = False
    check_steps: list[StepView] = field(default_factory=list)


# ---------------------------------------------------------------- readable patterns

_LOOKAHEAD_NUM = re.compile(r"\(\?!([^)]*)\)\\d\+")


def readable_pattern(rx: str) -> str:
    r"""A log regex as the text a person looks for.

    `mcs\.msi exited with return code: (?!0\b)\d+` becomes
    `mcs.msi exited with return code: <a number other than 0>`.

    Only the constructs the log catalog uses are translated; the raw regex is shown beside it.
    """
    text = re.sub(r"^\(\?[aiLmsux]+\)", "", rx)
    text = text.replace("\\b", "").replace(":?", ":").replace("\\s*", "")

    def other_than(m: re.Match[str]) -> str:
        alts = [a.replace("\\.", "").replace("\\b", "").strip() for a in m.group(1).split("|")]
        return f"<a number other than {', '.join(a for a in alts if a)}>"

    text = _LOOKAHEAD_NUM.sub(other_than, text)
    text = text.replace("\\d+", "<number>").replace(".*", " … ").replace(".+", " … ")
    text = re.sub(r"\(([^()?]+)\)", lambda m: m.group(1).replace("|", "/"), text)
    text = re.sub(r"\\(.)", r"\1", text)
    text = text.strip("^$")
    return re.sub(r" {2,}", " ", text).strip()


# ---------------------------------------------------------------- building


def _fmt_time(value: str | None) -> str:
    t = parse_time(value)
    if t is None:
        return ""
    return t.strftime("%Y-%m-%d %H:%M:%S") + (
        " UTC" if t.utcoffset() is not None and not t.utcoffset() else ""
    )


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _actual(rec: StepRecord, words: Wording) -> ActualView:
    """A step's results, its messages in the KB's words (see `Wording`)."""
    return ActualView(
        status=rec.status,
        started=_fmt_time(rec.started),
        ended=_fmt_time(rec.ended),
        duration=_fmt_duration(rec.duration),
        on=rec.on or "",
        message=words.text(rec.message),
        log_lines=rec.log_lines,
        items=[
            ItemView(r.item, r.status, _fmt_time(r.time), words.text(r.message), r.log_lines)
            for r in rec.results
            if r.item is not None
        ],
        done=rec.done,
        found_fault=rec.found_fault,
    )


def _only_if(plan: Plan, ps: PlannedStep) -> str | None:
    """A run-time condition in words: which probe decides it, or a pending restart."""
    step = ps.step
    if step.when_probe:
        probe = plan.runbook.probe(step.when_probe.probe)
        question = probe.title if probe else step.when_probe.probe
        answer = step.when_probe.equals
        if isinstance(answer, bool):
            return f'"{question}" answers {"yes" if answer else "no"} (checked at run time)'
        return f'"{question}" reports {answer!r} (checked at run time)'
    if step.reboot == "if_pending":
        return "a restart is pending (you were prompted to restart)"
    return ps.run_time_condition


def _not_applicable(ps: PlannedStep, host: str) -> str | None:
    if not ps.skip_reason:
        return None
    return f"condition '{ps.step.when}' is false for {host} in the inventory"


def _waits(catalog: Project, ps: PlannedStep) -> list[LogWaitView]:
    w = ps.step.wait
    if w is None:
        return []
    out = []
    for log in w.logs:
        exp = catalog.logs.expectation(log, w.expect)
        out.append(
            LogWaitView(
                log=log,
                expect=w.expect,
                success=[(readable_pattern(p.re), p.re) for p in exp.success],
                failure=[(readable_pattern(p.re), p.re) for p in exp.failure],
                timeout=w.timeout,
                poll=w.poll,
                unconfirmed=exp.confidence == "UNCONFIRMED",
            )
        )
    return out


def _anchor(*parts: str) -> str:
    """An HTML id / Markdown anchor, distinct for distinct host names (`corp/dp`, `corp dp`),
    as file names are."""
    return safe_name("-".join(parts))


def _probes_used(hp: HostPlan) -> set[str]:
    steps = hp.all_steps()
    return {s.step.for_each for s in steps if s.step.for_each} | {
        s.step.when_probe.probe for s in steps if s.step.when_probe
    }


def _value(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def _stage_texts(plan: Plan, stages: list[Any], index: int) -> tuple[str | None, str | None]:
    """The intro and outcome lines an escalating (`auto`) checklist puts around a stage."""
    stage = stages[index]
    if not plan.escalates or stage.kind != "verify":
        return None, None
    later = [s for s in stages[index + 1 :] if s.kind == "method"]
    nxt = f"go on with {later[0].title}" if later else "no method is left: escalate the change"
    if stage.name == "verify:0":
        return (
            "Check first whether the failure is still there.",
            f"If verification passes, stop here: nothing needs fixing. Otherwise {nxt}.",
        )
    return None, f"If verification passes, stop here. Otherwise {nxt}."


def _host(
    catalog: Project,
    plan: Plan,
    hp: HostPlan,
    journal: Journal | None,
    rollback: HostPlan | None,
    with_scripts: bool,
) -> HostChecklistView:
    rb = plan.runbook
    t = hp.target
    name = t.name
    flags = [f for f, on in (("multicast", t.multicast), ("PXE service point", t.pxe)) if on]
    flag_text = f" ({', '.join(flags)})" if flags else ""
    facts = (
        f"{', '.join(t.roles)}{flag_text}; site {t.site_code}, "
        f"ConfigMgr {t.site.version} {t.site.release}; Windows {t.os.version} {t.os.arch}"
    )
    unconfirmed = [
        ParamView(k, _value(hp.params.get(k)), p.provenance or "")
        for k, p in rb.parameters.items()
        if p.confidence == "UNCONFIRMED"
    ]
    used = _probes_used(hp) | (_probes_used(rollback) if rollback else set())
    probes: list[tuple[str, str, str, str]] = []
    scripts: list[ScriptView] = []
    for probe in rb.probes:
        if probe.id in used:
            runner, script = render_probe(catalog, plan, hp, probe)
            anchor = _anchor(name, "probe", probe.id)
            probes.append((probe.id, probe.title, runner, anchor))
            if with_scripts:
                label = f"Probe {probe.id}: {probe.title} (read-only)"
                scripts.append(ScriptView(anchor, label, runner, script))
    rec = journal.host(name) if journal else None
    words = journal.wording() if journal else Wording(())
    seen_keys: set[str] = set()
    n = 0

    def steps_of(stage_steps: list[PlannedStep], host_plan: HostPlan) -> list[StepView]:
        nonlocal n
        out = []
        for ps in stage_steps:
            n += 1
            anchor = None
            if with_scripts and not ps.skip_reason and ps.step.template:
                script = render_step(catalog, plan, host_plan, ps)
                if script is not None:
                    anchor = _anchor(name, "step", str(n))
                    label = f"Step {n}: {ps.step.title} [{ps.citation}]"
                    if ps.step.for_each:
                        label += " (shown with placeholders for each item)"
                    scripts.append(ScriptView(anchor, label, ps.run_on, script))
            probe: Probe | None = rb.probe(ps.step.for_each) if ps.step.for_each else None
            view = StepView(
                number=n,
                key=ps.key,
                citation=ps.citation,
                title=ps.step.title,
                kind=ps.step.kind,
                run_on=ps.run_on,
                click_path=ps.step.click_path,
                expect=ps.step.expect,
                destructive=ps.step.destructive,
                manual=ps.step.kind == "manual",
                reboot=ps.step.reboot,
                loops_over=(probe.title if probe else ps.step.for_each),
                not_applicable=_not_applicable(ps, name),
                only_if=_only_if(plan, ps),
                condition=(
                    f"'{ps.step.when}' is true for {name} in the inventory"
                    if ps.step.when and not ps.skip_reason
                    else None
                ),
                arms=list(ps.arms),
                note=ps.note,
                waits=_waits(catalog, ps),
                script_anchor=anchor,
                applies_when=ps.step.when,
                on_site_server=ps.step.on == "site_server",
            )
            if rec is not None:
                seen_keys.add(ps.key)
                done = rec.step(ps.key)
                if done is not None:
                    view.actual = _actual(done, words)
            out.append(view)
        return out

    sections: list[SectionView] = []
    for i, stage in enumerate(hp.stages):
        intro, outcome = _stage_texts(plan, hp.stages, i)
        section = SectionView(
            stage.name, stage.title, stage.kind, steps_of(stage.steps, hp), intro, outcome
        )
        if rec is not None:
            ended = next((s for s in reversed(rec.stages) if s.get("stage") == stage.name), None)
            section.stage_result = str(ended.get("status")) if ended else None
        sections.append(section)
    if rollback is not None:
        for stage in rollback.stages:
            sections.append(
                SectionView(
                    "rollback",
                    "Rollback (only when the change must be undone)",
                    "rollback",
                    steps_of(stage.steps, rollback),
                    intro="Follow these steps only to undo the procedure above, "
                    f"e.g. `invoke remediate {rb.id} --rollback`.",
                )
            )
    result = None
    extra: list[StepView] = []
    if rec is not None:
        result = {
            "status": rec.status,
            "message": words.text(rec.message),
            "steps_done": str(rec.steps_done),
            "duration": _fmt_duration(rec.duration),
            "started": _fmt_time(rec.first_time),
            "ended": _fmt_time(rec.end.get("time") if rec.end else rec.last_time),
            "reboots": "; ".join(
                words.text(
                    f"on {r.get('on') or name}: booted {r.get('before')}, up since {r.get('after')}"
                )
                for r in rec.reboots
            ),
        }
        for s in rec.steps:
            if s.key not in seen_keys:
                n += 1
                extra.append(
                    StepView(
                        n,
                        s.key,
                        s.citation or "",
                        s.title or s.key,
                        "",
                        s.on or "",
                        None,
                        None,
                        False,
                        False,
                        None,
                        None,
                        None,
                        None,
                        None,
                        [],
                        None,
                        [],
                        None,
                        _actual(s, words),
                    )
                )
    brief = f"{t.site_code} · {t.os.version} {t.os.arch}"
    return HostChecklistView(
        name, _anchor(name), facts, unconfirmed, probes, sections, scripts, result, extra, brief
    )


def build_checklist(
    catalog: Project,
    plan: Plan,
    *,
    journal: Journal | None = None,
    rollback_plan: Plan | None = None,
    paper: str = "a4",
    scripts: bool = True,
) -> Checklist:
    """The checklist of a plan; with `journal`, filled in from that run; with `scripts`, the
    PowerShell appendix (the wrapper every script shares printed once, before them).

    `rollback_plan` (the same runbook planned with `rollback=True`) adds a rollback section per
    host; pass it only when the runbook has rollback steps and the plan is the procedure itself.
    """
    rb = plan.runbook
    if plan.rollback:
        mode = "rollback"
    elif plan.method == "auto":
        mode = "method auto (verify, then Methods " + " -> ".join(m.id for m in rb.methods) + ")"
    elif plan.method:
        mode = f"method {plan.method}"
    else:
        mode = "procedure"
    rollbacks = {hp.target.name: hp for hp in rollback_plan.hosts} if rollback_plan else {}
    hosts = []
    for hp in plan.hosts:
        if journal is not None:
            recorded = (journal.run.get("params") or {}).get(hp.target.name)
            if isinstance(recorded, dict):
                hp = HostPlan(hp.target, {**hp.params, **recorded}, hp.stages, provider=hp.provider)
        hosts.append(_host(catalog, plan, hp, journal, rollbacks.get(hp.target.name), scripts))
    run = None
    if journal is not None:
        run = {
            "id": journal.run_id,
            "status": journal.status,
            "exit_code": "" if journal.exit_code is None else str(journal.exit_code),
            "user": str(journal.run.get("user") or ""),
            "argv": " ".join(str(a) for a in journal.run.get("argv") or []),
            "started": _fmt_time(journal.started),
            "ended": _fmt_time(journal.ended),
            "duration": _fmt_duration(journal.duration),
            "dry_run": bool(journal.run.get("dry_run")),
            "complete": journal.complete,
        }
    return Checklist(
        runbook_id=rb.id,
        title=rb.title,
        summary=rb.summary,
        document=rb.source.document,
        kb=rb.source.kb,
        source_title=rb.source.title,
        section=rb.source.section,
        applies_to=", ".join(rb.applies_to),
        mode=mode,
        escalates=plan.escalates,
        guidance=list(rb.guidance),
        inventory=plan.inventory.path,
        hosts=hosts,
        skipped_hosts=list(plan.skipped_hosts) if plan.selected else [],
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        paper=PAPERS.get(paper, "A4"),
        run=run,
        problems=list(journal.problems) if journal else [],
        scripts=scripts,
        wrapper=_shared_wrapper([sc for h in hosts for sc in h.scripts]),
        read_only=is_read_only_check(plan.runbook),
        check_steps=_steps_once(hosts),
    )


def _steps_once(hosts: list[HostChecklistView]) -> list[StepView]:
    """Each step of the plan once, as shown for the first host it applies to (numbers are the
    same on every host: each host's plan has the same steps, some ruled out)."""
    once: dict[int, StepView] = {}
    for h in hosts:
        for section in h.sections:
            for st in section.steps:
                if st.number not in once or (
                    once[st.number].not_applicable and not st.not_applicable
                ):
                    once[st.number] = st
    return [once[n] for n in sorted(once)]


#: Where the wrapper (`templates/_script.ps1.j2`) hands over to a script's own lines, and
#: where it takes over again: its `try {` is the first at the start of a line, its `catch` the
#: last (a script's own try/catch sits between them).
_BODY_START = "\ntry {\n"
_BODY_END = "\n}\ncatch {\n"


def _shared_wrapper(scripts: list[ScriptView]) -> WrapperView | None:
    """Cut the common wrapper out of `scripts` (in place) and return it once.

    Each script keeps its header comment line (which names the step and host) and its own
    lines. When any script does not have exactly the same wrapper, none is cut: the appendix
    then shows every script whole, as sent, rather than a shortened one that is not.
    """
    parts = []
    for sc in scripts:
        header, newline, rest = sc.script.partition("\n")
        start, end = rest.find(_BODY_START), rest.rfind(_BODY_END)
        if not newline or start < 0 or end < start:
            return None
        parts.append(
            (
                header,
                rest[: start + len(_BODY_START)],
                rest[start + len(_BODY_START) : end],
                rest[end:],
            )
        )
    if not parts or len({(p[1], p[3]) for p in parts}) != 1:
        return None
    for sc, (header, _, body, _) in zip(scripts, parts, strict=True):
        sc.script = f"{header}\n{body}"
    _, prelude, _, epilogue = parts[0]
    return WrapperView(prelude.rstrip("\n"), epilogue.lstrip("\n"))


# ---------------------------------------------------------------- rendering


def render_checklist(checklist: Checklist, fmt: str, templates_root: Path) -> str:
    """The checklist as one HTML page (self-contained) or one Markdown document."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")
    env = environment(templates_root / "checklist", fmt)
    name = "checklist.html.j2" if fmt == "html" else "checklist.md.j2"
    return env.get_template(name).render(c=checklist)
