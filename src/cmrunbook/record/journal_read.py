"""Reading a run's journal (`runs/<id>/journal.jsonl`) back into per-host, per-step records.

The engine appends one JSON object per line and flushes after each, so a journal may end
anywhere: a run killed mid-step has a `step-start` without its `step-end`, no `host-end` and no
`run-end`, and possibly a last line cut in the middle. Checklists filled from a run and the run
reports are audit records, so they must come out of such a journal too: this loader never
refuses a readable journal; it marks what is missing as "interrupted" and lists what it could
not read in `Journal.problems`.

Events of different hosts interleave; each is assigned to its host by its `host` field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cmrunbook.errors import UsageError
from cmrunbook.record.vocabulary import (
    DONE_STATUSES,
    FAILED_STATUSES,
    STATUS_ORDER,
    Event,
    Status,
    Wording,
)

JOURNAL_NAME = "journal.jsonl"
#: The run folder's folder of scripts as sent (see `sent_script`).
SCRIPTS_DIR = "scripts"
#: How a `script` event names its file: the SHA-256 of what follows the script's first line.
_SCRIPT_FILE = re.compile(rf"^{SCRIPTS_DIR}/[0-9a-f]{{64}}\.ps1$")


class JournalError(UsageError):
    """The journal cannot be found or holds no readable event (exit code 2)."""


@dataclass
class ItemResult:
    """One `step-end`: the result of a step, or of one loop item of it."""

    item: str | None
    status: str
    message: str
    data: Any
    duration: float | None
    log_lines: list[str]
    time: str | None


@dataclass
class StepRecord:
    """One execution of a planned step on a host, from its `step-start` to its last `step-end`."""

    host: str
    key: str
    citation: str | None
    title: str | None
    on: str | None
    started: str | None
    results: list[ItemResult] = field(default_factory=list)
    #: A verification that failed, after which the run went on to the next method: it found
    #: the fault, as `--method auto` expects before escalating, so it is not a failure.
    found_fault: bool = False
    #: The files of the scripts sent for it (`sent_script` reads one back whole).
    scripts: list[str] = field(default_factory=list)

    @property
    def stage(self) -> str:
        """The plan stage the step belongs to (`method:3` of `method:3/m3.disable-...`)."""
        return self.key.split("/", 1)[0]

    @property
    def status(self) -> str:
        """The worst status of its results; "interrupted" when it started and never ended."""
        if not self.results:
            return Status.INTERRUPTED
        return worst(r.status for r in self.results)

    @property
    def ended(self) -> str | None:
        return self.results[-1].time if self.results else None

    @property
    def duration(self) -> float | None:
        known = [r.duration for r in self.results if r.duration is not None]
        return sum(known) if known else None

    @property
    def message(self) -> str:
        """The message of the result that decided the status (the first failure, say)."""
        if not self.results:
            return "started, but the journal has no result: the run was stopped during this step"
        status = self.status
        return next(
            (r.message for r in self.results if r.status == status), self.results[-1].message
        )

    @property
    def log_lines(self) -> list[str]:
        return [line for r in self.results for line in r.log_lines]

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def failed(self) -> bool:
        """It needs a person's attention: failed, non-compliant or cut off, and not a
        verification that found the fault before escalating."""
        return self.status in FAILED_STATUSES and not self.found_fault


@dataclass
class HostRecord:
    """Everything the journal says about one host, in the order it happened."""

    name: str
    steps: list[StepRecord] = field(default_factory=list)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    reboots: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: Its `script` events, in the order sent: steps', probes' and the engine's own.
    scripts: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    first_time: str | None = None
    last_time: str | None = None

    @property
    def status(self) -> str:
        return str(self.end.get("status")) if self.end else Status.INTERRUPTED

    @property
    def message(self) -> str:
        if self.end:
            return str(self.end.get("message") or "")
        open_step = next((s for s in reversed(self.steps) if not s.results), None)
        if open_step:
            return f"no host-end: the run stopped during {open_step.key}"
        return "no host-end: the run stopped before this host finished"

    @property
    def steps_done(self) -> int:
        """Steps of the plan this host got done, each counted once: a loop step is one step
        whatever its items, and a step run again on resume is one step. (The engine's own
        count in host-end is per item, which made "39 / 35 steps" against the plan's count.)"""
        return len({s.key for s in self.steps if s.done})

    @property
    def duration(self) -> float | None:
        if self.end and isinstance(self.end.get("duration"), int | float):
            return float(self.end["duration"])
        return seconds_between(self.first_time, self.last_time)

    def step(self, key: str) -> StepRecord | None:
        """The last execution of a step (a resumed run may have started it twice)."""
        return next((s for s in reversed(self.steps) if s.key == key), None)

    def failures(self) -> list[StepRecord]:
        return [s for s in self.steps if s.failed]

    def mark_found_faults(self) -> None:
        """Mark each failed step of a failed verification the run escalated past (a later step
        of another stage started on this host) as having found the fault."""
        failed_stages = {
            str(s.get("stage")) for s in self.stages if s.get("status") == Status.FAILED
        }
        for n, step in enumerate(self.steps):
            stage = step.stage
            if not stage.startswith("verify:") or stage not in failed_stages:
                continue
            escalated = any(later.stage != stage for later in self.steps[n + 1 :])
            step.found_fault = escalated and step.status == Status.FAILED


@dataclass
class Journal:
    """A loaded journal: the `run` event, per-host records, the `run-end` (if any)."""

    path: Path
    run: dict[str, Any]
    hosts: dict[str, HostRecord]
    end: dict[str, Any] | None
    events: list[dict[str, Any]]
    problems: list[str]

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def runbook(self) -> str | None:
        value = self.run.get("runbook")
        return str(value) if value is not None else None

    @property
    def method(self) -> str | None:
        value = self.run.get("method")
        return str(value) if value is not None else None

    @property
    def complete(self) -> bool:
        return self.end is not None

    @property
    def status(self) -> str:
        return str(self.end.get("status")) if self.end else Status.INTERRUPTED

    @property
    def exit_code(self) -> int | None:
        if self.end and isinstance(self.end.get("exit_code"), int):
            return int(self.end["exit_code"])
        return None

    @property
    def started(self) -> str | None:
        return self.run.get("time") or (self.events[0].get("time") if self.events else None)

    @property
    def ended(self) -> str | None:
        if self.end:
            return self.end.get("time")
        return next((e["time"] for e in reversed(self.events) if e.get("time")), None)

    @property
    def duration(self) -> float | None:
        if self.end and isinstance(self.end.get("duration"), int | float):
            return float(self.end["duration"])
        return seconds_between(self.started, self.ended)

    @property
    def targets(self) -> list[str]:
        """Hosts in the order the run named them, then any others the journal mentions."""
        named = [str(t) for t in self.run.get("targets") or []]
        known = set(named)  # a set: a run over 50,000 clients must not compare names pairwise
        return named + [h for h in self.hosts if h not in known]

    def host(self, name: str) -> HostRecord:
        return self.hosts.get(name) or HostRecord(name)

    def wording(self) -> Wording:
        """The KB words for this run's step keys, for text people read."""
        return Wording((s.key, s.citation) for rec in self.hosts.values() for s in rec.steps)


def worst(statuses: Any) -> str:
    """The worst of several statuses by `STATUS_ORDER`; unknown statuses rank as failures."""
    ranked = list(statuses)
    if not ranked:
        return Status.OK
    if len(ranked) == 1:  # nearly every step: one result (a report of a fleet asks 100,000 times)
        return ranked[0]
    return min(ranked, key=lambda s: _RANK.get(s, 0))


_RANK = {status: n for n, status in enumerate(STATUS_ORDER)}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def seconds_between(start: str | None, end: str | None) -> float | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return None
    try:
        return max(0.0, (b - a).total_seconds())
    except TypeError:  # one naive, one aware
        return None


def journal_path(run: Path) -> Path:
    """A run folder or the journal file itself -> the journal file."""
    return run / JOURNAL_NAME if run.is_dir() else run


def read_events(path: Path, *, strict: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Every readable event, and a note per line that could not be read.

    A last line cut short by a kill is expected and noted as such. A bad line elsewhere is
    skipped with its line number, so one corrupt write does not hide the rest of a report; with
    ``strict`` (resuming, where a lost step-end would re-run a step) it is an error instead.
    """
    lines = path.read_bytes().split(b"\n")
    final = len(lines) - 1 if lines[-1] == b"" else len(lines)  # the journal's last line
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    for n, line in enumerate(lines, 1):
        try:  # the usual line: whole, valid UTF-8 JSON, read without a copy of its text
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and "event" in event:
            events.append(event)
            continue
        text = line.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            event = json.loads(text)
            readable = isinstance(event, dict) and "event" in event
            reason = "is not a journal event"
        except json.JSONDecodeError:
            readable, reason = False, "is not complete JSON"
        if readable:
            events.append(event)
            continue
        cut = n == final and reason == "is not complete JSON"
        if strict and not cut:
            raise JournalError(f"{path}:{n}: journal line {reason}")
        where = "last line (cut short when the run was stopped)" if cut else f"line {n}"
        problems.append(f"{path.name}: {where} {reason}; ignored")
    return events, problems


def load_journal(run: Path) -> Journal:
    """Load `run` (a run folder or its journal.jsonl), tolerating a journal cut short."""
    path = journal_path(Path(run))
    if not path.is_file():
        raise JournalError(f"no journal at {path}")
    events, problems = read_events(path)
    if not events:
        raise JournalError(f"{path} holds no readable event")
    run_event: dict[str, Any] = {}
    end: dict[str, Any] | None = None
    hosts: dict[str, HostRecord] = {}

    def host_of(event: dict[str, Any]) -> HostRecord:
        name = str(event["host"])
        rec = hosts.get(name)
        if rec is None:
            rec = hosts[name] = HostRecord(name)
        t = event.get("time")
        if t:
            rec.first_time = rec.first_time or t
            rec.last_time = t
        return rec

    for event in events:
        kind = event.get("event")
        if kind == Event.RUN:
            if not run_event:
                run_event = event
                for name in event.get("targets") or []:
                    hosts.setdefault(str(name), HostRecord(str(name)))
            continue
        if kind == Event.RUN_END:
            end = event
            continue
        if "host" not in event:
            continue
        rec = host_of(event)
        if kind == Event.PROBE:
            rec.probes[str(event.get("probe"))] = event
        elif kind == Event.STEP_START:
            _start(rec, event)
        elif kind == Event.STEP_END:
            _end(rec, event)
        elif kind == Event.REBOOT:
            rec.reboots.append(event)
        elif kind == Event.STAGE_END:
            rec.stages.append(event)
        elif kind == Event.HOST_END:
            rec.end = event
        elif kind == Event.SCRIPT:
            _script(rec, event)
    if not run_event:
        problems.insert(0, f"{path.name}: no 'run' event; runbook and method are unknown")
    for rec in hosts.values():
        rec.mark_found_faults()
    return Journal(path, run_event, hosts, end, events, problems)


def _start(rec: HostRecord, event: dict[str, Any]) -> None:
    key = str(event.get("key"))
    item = event.get("item")
    last = rec.steps[-1] if rec.steps else None
    # A loop step starts once per item: items of one execution stay in one record.
    same_loop = (
        last is not None
        and last.key == key
        and item is not None
        and item not in {r.item for r in last.results}
    )
    if same_loop:
        return
    rec.steps.append(
        StepRecord(
            host=rec.name,
            key=key,
            citation=event.get("citation"),
            title=event.get("title"),
            on=event.get("on"),
            started=event.get("time"),
        )
    )


def _end(rec: HostRecord, event: dict[str, Any]) -> None:
    key = str(event.get("key"))
    step = next((s for s in reversed(rec.steps) if s.key == key), None)
    if step is None:  # an end without its start: keep the result anyway
        step = StepRecord(rec.name, key, None, None, event.get("on"), None)
        rec.steps.append(step)
    lines = event.get("log_lines") or []
    duration = event.get("duration")
    step.results.append(
        ItemResult(
            item=None if event.get("item") is None else str(event.get("item")),
            status=str(event.get("status") or Status.FAILED),
            message=str(event.get("message") or ""),
            data=event.get("data"),
            duration=float(duration) if isinstance(duration, int | float) else None,
            log_lines=[str(line) for line in lines] if isinstance(lines, list) else [str(lines)],
            time=event.get("time"),
        )
    )


def _script(rec: HostRecord, event: dict[str, Any]) -> None:
    """A script sent: the host's, and its step's when it is the script of the step that was
    started last (its name is the step's key, with the loop item or `#site` after it)."""
    rec.scripts.append(event)
    name, file = str(event.get("name")), event.get("file")
    step = rec.steps[-1] if rec.steps else None
    if step is not None and name.split("#", 1)[0] == step.key and isinstance(file, str):
        step.scripts.append(file)


def sent_script(run_dir: Path, event: dict[str, Any]) -> str:
    """The whole script a `script` event of `run_dir`'s journal records, as it was sent: its
    first line from the event, the rest from the file it names. A name that is not a script
    file of the folder (a journal edited by hand) is refused, never followed elsewhere."""
    file = str(event.get("file"))
    if not _SCRIPT_FILE.match(file):
        raise JournalError(f"{run_dir}: the script {event.get('name')!r} names no script file")
    path = run_dir / file
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rest = fh.read()
    except OSError as exc:
        raise JournalError(f"{path}: {exc.strerror or exc}") from exc
    return f"{event.get('header')}\n{rest}"
