"""Run reports: what a finished (or killed) run did, for people, CI dashboards and CMTrace.

`write_reports(run_dir, catalog, plan)` reads `run_dir/journal.jsonl` and writes beside it:

- `report.json`: the machine-readable summary, validated by `schema/report.schema.json`
  (`schema_version` 1). Top level: `run` (id, runbook, kb, method, inventory, targets, user,
  argv, dry_run, started, ended, duration in seconds, status `ok|failed|interrupted`, exit_code
  or null when the journal has no run-end, complete), `summary` (host count, hosts per status,
  steps done, steps failed), `hosts` (per host: status, message, steps_done, steps_planned or
  null, duration, started, ended, reboots, stages, and `steps`: key, citation, title, on,
  status, found_fault, started, ended, duration, message, items of loop steps, log_lines,
  and scripts: the files under `scripts/` holding what was sent for it after its first line;
  steps_done counts each step of the plan once, however many items it looped over),
  `failures` (one per failed, non-compliant or interrupted step that is not a verification
  which found the fault before `--method auto` escalated: host, key, citation, title,
  status, message, `last_log_lines`, plus one per failed host with no failed step),
  `site_states` (per site and site-wide state the run changed: `restored`, the items set
  back after a stop, and `outstanding`, those still changed) and `problems` (journal lines
  that could not be read). Times are ISO 8601 as the journal wrote them.
- `junit.xml`: one `<testsuite>` per host holding one `<testcase>` for the host itself and one
  per step, named by its KB citation and title (`classname` = `<runbook>.<host>`); a
  verification that found the fault before escalating passes; failed and non-compliant
  steps are `<failure>`, interrupted ones `<error>`, skipped and never-reached ones
  `<skipped>`; log lines go to `<system-out>`. The common Jenkins/GitLab/Azure DevOps shape.
- `report.html`: one self-contained page: summary table, site-wide state, per-host timeline,
  failures with the last log lines read; steps named by citation, times as dates.
- `cmrunbook.log`: one CMTrace entry per journal event, in words (type 3 for failures, 2 for
  warnings), one thread number per host, `file` = host, so CMTrace or OneTrace filters it.

`copy_reports` copies them to a reports folder (`--reports DIR`, one sub-folder per run) and
`prune_reports` applies retention there for scheduled runs. Nothing here contacts a host.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cmrunbook.errors import ConfigError, UsageError
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Plan
from cmrunbook.record.journal_read import Journal, StepRecord, load_journal, parse_time
from cmrunbook.record.markup import environment
from cmrunbook.record.sitestate import Ledger
from cmrunbook.record.vocabulary import (
    FAILED_STATUSES,
    FAULT_FOUND,
    STATUS_ORDER,
    Event,
    Status,
    Wording,
)
from cmrunbook.text import printable

SCHEMA_VERSION = 1
REPORT_FILES = ("report.json", "junit.xml", "report.html", "cmrunbook.log")
LAST_LOG_LINES = 20
#: report.html lists at most this many hosts, those to act on first; report.json, junit.xml and
#: the CMTrace log hold every host. A page with 50,000 hosts' timelines took longer to write
#: than the run took to read them, and is more than a browser shows usefully.
HTML_HOSTS = 500
RUN_ID = re.compile(r"^(\d{8}-\d{6})-")


# ---------------------------------------------------------------- report.json


def _step_json(s: StepRecord) -> dict[str, Any]:
    return {
        "key": s.key,
        "citation": s.citation,
        "title": s.title,
        "on": s.on,
        "status": s.status,
        "found_fault": s.found_fault,
        "started": s.started,
        "ended": s.ended,
        "duration": s.duration,
        "message": s.message,
        "items": [
            {
                "item": r.item,
                "status": r.status,
                "message": r.message,
                "duration": r.duration,
                "time": r.time,
            }
            for r in s.results
            if r.item is not None
        ],
        "log_lines": s.log_lines,
        "scripts": s.scripts,
    }


def _planned_keys(plan: Plan | None) -> dict[str, list[tuple[str, str, str]]]:
    """Per host, (key, citation, title) of every step the plan has, in order."""
    if plan is None:
        return {}
    return {
        hp.target.name: [
            (ps.key, ps.citation, ps.step.title) for ps in hp.all_steps() if not ps.skip_reason
        ]
        for hp in plan.hosts
    }


def build_report(journal: Journal, plan: Plan | None = None) -> dict[str, Any]:
    """The report.json document of a journal (see the module docstring for its shape)."""
    planned = _planned_keys(plan)
    hosts: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for name in journal.targets:
        rec = journal.host(name)
        steps = [_step_json(s) for s in rec.steps]
        keys = planned.get(name)
        hosts.append(
            {
                "name": name,
                "status": rec.status,
                "message": rec.message,
                "steps_done": rec.steps_done,
                "steps_planned": len(keys) if keys is not None else None,
                "duration": rec.duration,
                "started": rec.first_time,
                "ended": rec.end.get("time") if rec.end else rec.last_time,
                "reboots": [
                    {k: r.get(k) for k in ("time", "on", "before", "after")} for r in rec.reboots
                ],
                "stages": [{k: s.get(k) for k in ("time", "stage", "status")} for s in rec.stages],
                "steps": steps,
            }
        )
        failed_steps = rec.failures()
        for s in failed_steps:
            failures.append(
                {
                    "host": name,
                    "key": s.key,
                    "citation": s.citation,
                    "title": s.title,
                    "status": s.status,
                    "message": s.message,
                    "last_log_lines": s.log_lines[-LAST_LOG_LINES:],
                }
            )
        if rec.status in FAILED_STATUSES and not failed_steps:
            failures.append(
                {
                    "host": name,
                    "key": None,
                    "citation": None,
                    "title": None,
                    "status": rec.status,
                    "message": rec.message,
                    "last_log_lines": [],
                }
            )
    per_status = Counter(h["status"] for h in hosts)
    run = journal.run
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "id": journal.run_id,
            "runbook": journal.runbook,
            "kb": run.get("kb"),
            "method": journal.method,
            "inventory": run.get("inventory"),
            "targets": journal.targets,
            "user": run.get("user"),
            "argv": [str(a) for a in run.get("argv") or []],
            "warnings": [str(w) for w in run.get("warnings") or []],
            "dry_run": bool(run.get("dry_run")),
            "started": journal.started,
            "ended": journal.ended,
            "duration": journal.duration,
            "status": journal.status,
            "exit_code": journal.exit_code,
            "complete": journal.complete,
        },
        "summary": {
            "hosts": len(hosts),
            "by_status": dict(sorted(per_status.items())),
            "steps_done": sum(h["steps_done"] for h in hosts),
            "steps_failed": sum(1 for f in failures if f["key"] is not None),
        },
        "hosts": hosts,
        "failures": failures,
        "site_states": _site_states(journal),
        "problems": list(journal.problems),
    }


def _site_states(journal: Journal) -> list[dict[str, Any]]:
    """Per site and state: what was set back after a stop, and what is still changed."""
    ledger = Ledger.replay(journal.events)
    keys = sorted(set(ledger.compensated) | set(ledger.outstanding))
    return [
        {
            "site": site,
            "state": state,
            "restored": ledger.compensated.get((site, state), []),
            "outstanding": sorted(ledger.outstanding.get((site, state), {})),
        }
        for site, state in keys
    ]


def report_json_text(report: dict[str, Any]) -> Iterator[str]:
    """report.json's text, in pieces: indented, but each host and each failure on one line of
    its own. One indented document is written by json's pure-Python encoder (seconds for a
    fleet); a line per host uses its C encoder and still reads, and diffs, a host at a time."""
    last = len(report) - 1
    yield "{\n"
    for n, (key, value) in enumerate(report.items()):
        end = ",\n" if n < last else "\n"
        if isinstance(value, list) and value and isinstance(value[0], dict):
            rows = ",\n".join(f"    {json.dumps(v, ensure_ascii=False)}" for v in value)
            yield f"  {json.dumps(key)}: [\n{rows}\n  ]{end}"
        else:
            # JSON text holds no raw line break inside a string: each one here is indentation.
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            yield f"  {json.dumps(key)}: {text}{end}"
    yield "}\n"


# ---------------------------------------------------------------- junit.xml


def _secs(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def report_wording(report: dict[str, Any], plan: Plan | None = None) -> Wording:
    """The human names of a report's steps, and of the plan's steps it never reached."""
    ran = [(step["key"], step["citation"]) for host in report["hosts"] for step in host["steps"]]
    planned = [
        (key, citation) for keys in _planned_keys(plan).values() for key, citation, _ in keys
    ]
    return Wording([*planned, *ran])


def build_junit(report: dict[str, Any], plan: Plan | None = None) -> ET.Element:
    """JUnit XML: a suite per host, a case for the host and one per step (planned or run).

    Cases are named by KB citation and title, as the checklist names the steps; a verification
    that found the fault before `--method auto` escalated passes (it did its job)."""
    run = report["run"]
    runbook = run["runbook"] or "run"
    planned = _planned_keys(plan)
    words = report_wording(report, plan)
    root = ET.Element("testsuites", name=f"cmrunbook {runbook} {run['id']}")
    totals = Counter[str]()
    for host in report["hosts"]:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"{runbook}.{host['name']}",
            hostname=host["name"],
            timestamp=(host["started"] or run["started"] or "")[:19],
            time=_secs(host["duration"]),
        )
        classname = f"{runbook}.{host['name']}"
        counts = Counter[str]()
        case = ET.SubElement(
            suite,
            "testcase",
            name=f"host {host['name']}",
            classname=classname,
            time=_secs(host["duration"]),
        )
        _outcome(case, host["status"], words.text(host["message"]), [], counts)
        seen = set()
        for n, step in enumerate(host["steps"], 1):
            seen.add(step["key"])
            label = f"{n:02d} {words.step(step['key'])}: {step['title'] or ''}".rstrip(": ")
            case = ET.SubElement(
                suite, "testcase", name=label, classname=classname, time=_secs(step["duration"])
            )
            message = words.text(step["message"])
            if step["found_fault"]:
                out = ET.SubElement(case, "system-out")
                out.text = "\n".join([f"status: {step['status']} ({FAULT_FOUND})", message])
                continue
            _outcome(case, step["status"], message, step["log_lines"], counts)
        for key, _, title in planned.get(host["name"], []):
            if key not in seen:
                case = ET.SubElement(
                    suite,
                    "testcase",
                    name=f"-- {words.step(key)}: {title}",
                    classname=classname,
                    time="0.000",
                )
                ET.SubElement(case, "skipped", message=_not_run(run, host))
                counts["skipped"] += 1
        counts["tests"] = len(suite.findall("testcase"))
        for k in ("tests", "failures", "errors", "skipped"):
            suite.set(k, str(counts[k]))
            totals[k] += counts[k]
    for k in ("tests", "failures", "errors", "skipped"):
        root.set(k, str(totals[k]))
    root.set("time", _secs(run["duration"]))
    return root


def _not_run(run: dict[str, Any], host: dict[str, Any]) -> str:
    """Why a planned step has no result: `--method auto` plans every method and stops at the
    first that verifies, so on a host that ended ok the later methods were not needed."""
    if run["method"] == "auto" and host["status"] == Status.OK:
        return "not needed: an earlier verification passed"
    return "not reached"


def _printable_xml(root: ET.Element) -> ET.Element:
    """Every text and attribute through `printable`: XML 1.0 cannot hold most control
    characters at all (a CI server would reject the file), and a viewer must not act on them."""
    for el in root.iter():
        if el.text:
            el.text = printable(el.text)
        for name, value in el.attrib.items():
            el.set(name, printable(value))
    return root


def _outcome(
    case: ET.Element, status: str, message: str, log_lines: list[str], counts: Counter[str]
) -> None:
    if status in FAILED_STATUSES - {Status.INTERRUPTED}:
        el = ET.SubElement(case, "failure", message=message[:500], type=status)
        el.text = "\n".join([message, *log_lines[-LAST_LOG_LINES:]])
        counts["failures"] += 1
    elif status == Status.INTERRUPTED:
        el = ET.SubElement(case, "error", message=message[:500], type=status)
        el.text = "\n".join([message, *log_lines[-LAST_LOG_LINES:]])
        counts["errors"] += 1
    elif status == Status.SKIPPED:
        ET.SubElement(case, "skipped", message=message[:500])
        counts["skipped"] += 1
    if log_lines or status != Status.SKIPPED:
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join([f"status: {status}", message, *log_lines])


# ---------------------------------------------------------------- cmtrace


def cmtrace_entry(message: str, when: datetime, type_: int, thread: int, file: str) -> str:
    """One CMTrace line. The time is UTC with bias +000, the form ConfigMgr's own logs use."""
    text = printable(message).replace("]LOG]!>", "]LOG]!&gt;").replace("\n", " | ")
    file = printable(file, lines=False).replace('"', "&quot;")
    t = when.astimezone(UTC) if when.tzinfo else when
    return (
        f'<![LOG[{text}]LOG]!><time="{t:%H:%M:%S}.{t.microsecond // 1000:03d}+000" '
        f'date="{t:%m-%d-%Y}" component="cmrunbook" context="" type="{type_}" '
        f'thread="{thread}" file="{file}">'
    )


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "unknown duration"


def _event_text(e: dict[str, Any], journal: Journal, words: Wording) -> tuple[str, int]:
    """One journal event as a CMTrace message and type (1 information, 2 warning, 3 error)."""
    kind = e.get("event")
    host = str(e.get("host", ""))
    item = f" [{e['item']}]" if e.get("item") else ""
    step = words.step(str(e.get("key")))
    if kind == Event.RUN:
        return (
            f"Run of {e.get('runbook')} ({e.get('kb')}), method {e.get('method')}, on "
            f"{', '.join(e.get('targets') or [])} by {e.get('user')}"
            f"{' (dry run)' if e.get('dry_run') else ''}: "
            f"{' '.join(map(str, e.get('argv') or []))}",
            1,
        )
    if kind == Event.PROBE:
        return f"{host}: probe {e.get('probe')} on {e.get('on')} = {json.dumps(e.get('value'))}", 1
    if kind == Event.STEP_START:
        return f"{host}: start {step}{item} on {e.get('on')}: {e.get('title')}", 1
    if kind == Event.STEP_END:
        status = str(e.get("status"))
        record = journal.host(host).step(str(e.get("key")))
        found = record is not None and record.found_fault
        lines = e.get("log_lines") or []
        failed = status in FAILED_STATUSES and not found
        tail = f" | log: {' | '.join(map(str, lines[-5:]))}" if lines and failed else ""
        type_ = 1 if found or not failed else 2 if status == Status.NON_COMPLIANT else 3
        said = f"{status} ({FAULT_FOUND})" if found else status
        return (
            f"{host}: {said} {step}{item} ({_seconds(e.get('duration'))}): "
            f"{words.text(str(e.get('message') or ''))}{tail}",
            type_,
        )
    if kind == Event.REBOOT:
        return words.text(
            f"{host}: restarted {e.get('on')} (booted {e.get('before')}, now {e.get('after')})"
        ), 2
    if kind == Event.RESTART_ASKED:
        return f"{host}: restart asked: {words.text(str(e.get('reason')))}", 1
    if kind == Event.CONSENT:
        steps = "; ".join(str(x) for x in e.get("steps") or [])
        return (
            f"{host}: consent to {words.text(str(e.get('stage')))} ({e.get('answer')}) "
            f"for its destructive steps: {steps}",
            1,
        )
    if kind == Event.STAGE_END:
        status = str(e.get("status"))
        escalated = status == Status.FAILED and any(
            s.found_fault for s in journal.host(host).steps if s.stage == e.get("stage")
        )
        said = "found the fault; escalating" if escalated else status
        type_ = 3 if status == Status.FAILED and not escalated else 1
        return f"{host}: {words.text(str(e.get('stage')))}: {said}", type_
    if kind == Event.SITE_STATE:
        return f"{host}: site {e.get('site')}: saved {e.get('probe')} read on {e.get('on')}", 1
    if kind == Event.SITE_CHANGED:
        return f"{host}: site {e.get('site')}: {e.get('state')} changed: {e.get('item')}", 1
    if kind == Event.SITE_RESTORED:
        return f"{host}: site {e.get('site')}: {e.get('state')} set back: {e.get('item')}", 1
    if kind == Event.SCRIPT:
        return f"{host}: sent {words.text(str(e.get('name')))} to {e.get('on')}: {e.get('file')}", 1
    if kind == Event.HOST_END:
        status = str(e.get("status"))
        return (
            f"{host}: host {status} after {_seconds(e.get('duration'))}: "
            f"{words.text(str(e.get('message') or ''))}",
            3 if status in FAILED_STATUSES else 1,
        )
    if kind == Event.RUN_END:
        status = str(e.get("status"))
        return (
            f"Run {status}, exit code {e.get('exit_code')}, {_seconds(journal.duration)}",
            3 if status != Status.OK else 1,
        )
    if kind == Event.LOG_ARMED:
        logs = e.get("logs")
        if not isinstance(logs, dict):
            logs = {}
        marks = "; ".join(
            f"{name} ({mark.get('path')}, from byte {mark.get('size')})"
            if isinstance(mark, dict)
            else str(name)
            for name, mark in logs.items()
        )
        return f"{host}: {step}: reading only what is written after now: {marks}", 1
    # Any other event: its fields as words, not the journal's JSON.
    fields = ", ".join(
        f"{k} {v}" for k, v in e.items() if k not in ("seq", "time", "event", "host")
    )
    return words.text(f"{host + ': ' if host else ''}{kind}: {fields}"), 1


def build_cmtrace(journal: Journal) -> str:
    """The journal as CMTrace lines, CRLF-separated as Windows tools expect."""
    threads: dict[str, int] = {}
    for name in journal.targets:
        threads.setdefault(name, len(threads) + 2)
    words = journal.wording()
    lines = []
    last = datetime.now(UTC)
    for e in journal.events:
        when = parse_time(e.get("time")) or last
        last = when
        host = str(e.get("host") or "")
        thread = threads.setdefault(host, len(threads) + 2) if host else 1
        text, type_ = _event_text(e, journal, words)
        lines.append(cmtrace_entry(text, when, type_, thread, host or "cmrunbook"))
    for p in journal.problems:
        lines.append(cmtrace_entry(f"journal: {p}", last, 2, 1, "cmrunbook"))
    if not journal.complete:
        for name in journal.targets:
            rec = journal.host(name)
            if rec.end is None:
                text = f"{name}: {words.text(rec.message)}"
                lines.append(cmtrace_entry(text, last, 3, threads[name], name))
        lines.append(
            cmtrace_entry(
                "The journal ends before the run did: the run was stopped", last, 3, 1, "cmrunbook"
            )
        )
    return "\r\n".join(lines) + "\r\n"


# ---------------------------------------------------------------- report.html


def _hhmmss(value: str | None) -> str:
    t = parse_time(value)
    return t.strftime("%H:%M:%S") if t else ""


def _when(value: str | None) -> str:
    t = parse_time(value)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t and t.tzinfo else value or ""


def html_hosts(
    report: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """The hosts report.html lists (all, or the HTML_HOSTS to act on first: worst result
    first, then in run order), the failures of those, and how many hosts it leaves out per
    result."""
    hosts: list[dict[str, Any]] = report["hosts"]
    limit = HTML_HOSTS
    if len(hosts) <= limit:
        return hosts, report["failures"], {}

    def rank(host: dict[str, Any]) -> int:
        status = host["status"]
        return STATUS_ORDER.index(status) if status in STATUS_ORDER else 0

    shown = sorted(hosts, key=rank)[:limit]
    names = {h["name"] for h in shown}
    left = Counter(h["status"] for h in hosts if h["name"] not in names)
    failures = [f for f in report["failures"] if f["host"] in names]
    return shown, failures, dict(sorted(left.items()))


def render_html(report: dict[str, Any], templates_root: Path) -> str:
    """report.html: names, times and messages in the words of the KB (see `Wording`); at most
    HTML_HOSTS hosts, so that a fleet's page stays one a browser opens."""
    words = report_wording(report)
    hosts, failures, left_out = html_hosts(report)
    env = environment(templates_root / "report", "html")
    env.filters["hhmmss"] = _hhmmss
    env.filters["when"] = _when
    env.filters["human"] = lambda text: words.text(str(text or ""))
    env.filters["step_name"] = words.step
    env.filters["dur"] = lambda s: "" if s is None else f"{s:.1f} s"
    return env.get_template("report.html.j2").render(
        r=report,
        hosts=hosts,
        failures=failures,
        left_out=left_out,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        found_fault=FAULT_FOUND,
    )


# ---------------------------------------------------------------- writing


def plan_from_journal(
    catalog: Project, journal: Journal, inventory: str | None = None
) -> Plan | None:
    """The run's plan again (for steps it never reached), or None when it cannot be rebuilt."""
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.plan.planner import Planner

    if not journal.runbook:
        return None
    inv_name = inventory or journal.run.get("inventory")
    candidates = [Path(str(inv_name)), catalog.root / str(inv_name)] if inv_name else []
    inv_path = next((p for p in candidates if p.is_file()), None)
    if inv_path is None:
        return None
    try:
        loaded = catalog.load(journal.runbook)
        inv = load_inventory(inv_path)
        names = [t for t in journal.targets if t in inv.hosts]
        if not names:
            return None
        return Planner(catalog, loaded, inv).plan(method=journal.method, hosts=",".join(names))
    except (UsageError, ConfigError):
        return None


def write_reports(
    run_dir: Path, catalog: Project, plan: Plan | None = None, *, inventory: str | None = None
) -> list[Path]:
    """Read `run_dir/journal.jsonl`; write report.json, junit.xml, report.html, cmrunbook.log.

    Without `plan`, the run's plan is rebuilt from the journal when the runbook and inventory
    are still there, so steps never reached show up; otherwise only the journal's steps do.
    """
    with _no_cycle_collection():
        return _write_reports(run_dir, catalog, plan, inventory)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Reading a journal and building its reports makes trees of dicts, lists and elements,
    no reference cycles: reference counting frees them, and the cycle collector only walked
    them over and over as they grew (half the time of a 50,000-client report, and what made
    it grow faster than the clients)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_reports(
    run_dir: Path, catalog: Project, plan: Plan | None, inventory: str | None
) -> list[Path]:
    journal = load_journal(run_dir)
    if plan is None:
        plan = plan_from_journal(catalog, journal, inventory)
    report = build_report(journal, plan)
    out = journal.run_dir
    paths = []
    path = out / "report.json"
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(report_json_text(report))
    paths.append(path)
    tree = ET.ElementTree(_printable_xml(build_junit(report, plan)))
    ET.indent(tree)
    path = out / "junit.xml"
    tree.write(path, encoding="utf-8", xml_declaration=True)
    paths.append(path)
    path = out / "report.html"
    path.write_text(render_html(report, catalog.templates_dir()), encoding="utf-8")
    paths.append(path)
    path = out / "cmrunbook.log"
    path.write_bytes(b"\xef\xbb\xbf" + build_cmtrace(journal).encode("utf-8"))
    paths.append(path)
    return paths


def copy_reports(run_dir: Path, reports_dir: Path, files: list[Path] | None = None) -> Path:
    """Copy a run's reports and journal to `reports_dir/<run id>/`; returns that folder."""
    target = reports_dir / run_dir.resolve().name
    target.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in files] if files else list(REPORT_FILES)
    for name in [*names, "journal.jsonl"]:
        src = run_dir / name
        if src.is_file():
            shutil.copy2(src, target / name)
    return target


def _run_time(folder: Path) -> datetime:
    m = RUN_ID.match(folder.name)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(folder.stat().st_mtime, UTC)


def prune_reports(
    reports_dir: Path,
    keep_days: int | None = None,
    keep_runs: int | None = None,
    *,
    now: datetime | None = None,
) -> list[Path]:
    """Delete report folders older than `keep_days` or beyond the newest `keep_runs`.

    Only sub-folders that hold a report.json are considered, so a mistyped DIR never loses
    anything else. Returns the folders removed, oldest first.
    """
    if (keep_days is not None and keep_days < 0) or (keep_runs is not None and keep_runs < 0):
        raise UsageError("--keep-days and --keep-runs must not be negative")
    if not reports_dir.is_dir():
        return []
    runs = sorted(
        (p for p in reports_dir.iterdir() if p.is_dir() and (p / "report.json").is_file()),
        key=lambda p: (_run_time(p), p.name),
        reverse=True,
    )
    now = now or datetime.now(UTC)
    doomed: list[Path] = []
    for i, folder in enumerate(runs):
        too_many = keep_runs is not None and i >= keep_runs
        too_old = keep_days is not None and now - _run_time(folder) > timedelta(days=keep_days)
        if too_many or too_old:
            doomed.append(folder)
    for folder in doomed:
        shutil.rmtree(folder)
    return list(reversed(doomed))
