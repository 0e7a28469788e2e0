"""The words of a run record, in one place: journal event kinds, statuses, and the human text.

The journal, report.json and junit.xml are read by other programs, so the strings here are a
file format: `Status` and `Event` are `str` enums whose values are exactly what is written on
disk (a member compares equal to, and serialises as, its string). The writer, the reader, the
reports and the checklist all name them from here, so they cannot drift apart.

People read report.html, the CMTrace log and the checklist: there a step is named by its KB
citation and a stage by its title, never by the plan's internal key (`method:3/m3.wait-...`),
and a WMI (DMTF) time such as `20261202130230.662023+000` is written as a date and a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum


class Event(StrEnum):
    """The `event` field of a journal line."""

    RUN = "run"
    RUN_END = "run-end"
    PROBE = "probe"
    STEP_START = "step-start"
    STEP_END = "step-end"
    STAGE_END = "stage-end"
    REBOOT = "reboot"
    RESTART_ASKED = "restart-asked"
    CONSENT = "consent"
    LOG_ARMED = "log-armed"
    HOST_END = "host-end"
    SCRIPT = "script"
    """A script about to be sent: its first line and the file holding the rest
    (`journal.JournalWriter.save_script`)."""
    HOST_RESUME = "host-resume"
    SITE_STATE = "site-state"
    """A site-wide state saved before the run first changes it (record/sitestate.py)."""
    SITE_CHANGED = "site-changed"
    SITE_RESTORED = "site-restored"


#: The events `sitestate.Ledger.replay` rebuilds the site-wide state from.
SITE_EVENTS = frozenset({Event.SITE_STATE, Event.SITE_CHANGED, Event.SITE_RESTORED})


class Status(StrEnum):
    """The `status` of a step, host or run (and of an item of a loop step)."""

    OK = "ok"
    CHANGED = "changed"
    SKIPPED = "skipped"
    MANUAL_CONFIRMED = "manual-confirmed"
    NON_COMPLIANT = "non-compliant"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """A step, host or run whose end the journal does not record (the run was killed)."""
    UNKNOWN = "unknown"
    """A read-only check that could not decide (reported, not failed)."""
    UNREACHABLE = "unreachable"
    NOT_TRIED = "not-tried"
    STOPPED = "stopped"


#: A step that ended in one of these did what it was for (counted as done).
DONE_STATUSES = frozenset({Status.OK, Status.CHANGED, Status.MANUAL_CONFIRMED})
#: A step that ended in one of these is not run again on resume (a failed one is).
SETTLED_STATUSES = DONE_STATUSES | {Status.SKIPPED, Status.NON_COMPLIANT}
#: A step or host in one of these needs a person's attention (reports list it as a failure).
FAILED_STATUSES = frozenset(
    {
        Status.FAILED,
        Status.NON_COMPLIANT,
        Status.INTERRUPTED,
        Status.UNREACHABLE,
        Status.NOT_TRIED,
        Status.STOPPED,
    }
)
#: Worst first: a step that looped over several items takes the worst status of its items.
STATUS_ORDER = (
    Status.FAILED,
    Status.NON_COMPLIANT,
    Status.INTERRUPTED,
    Status.CHANGED,
    Status.MANUAL_CONFIRMED,
    Status.OK,
    Status.SKIPPED,
)

#: The mark of a status in report.html and the checklist.
STATUS_MARK = {
    Status.OK: "✔",
    Status.CHANGED: "✔",
    Status.MANUAL_CONFIRMED: "✔",
    Status.SKIPPED: "–",
    Status.FAILED: "✘",
    Status.NON_COMPLIANT: "✘",
    Status.INTERRUPTED: "…",
}

#: What report.html, junit.xml and the CMTrace log say of a verification that found the fault
#: before `--method auto` went on to the next method: that is what it is there for.
FAULT_FOUND = "fault found, as expected before escalating"

# ---------------------------------------------------------------- human text

#: A WMI datetime (CIM_DATETIME, DMTF form): yyyymmddHHMMSS.mmmmmm then the UTC offset in
#: minutes (Win32_OperatingSystem.LastBootUpTime, as the journal's reboot events hold it).
_DMTF = re.compile(r"\b(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)\.\d{1,6}(?:([+-])(\d{3}))?(?![\d])")
_STAGE = re.compile(r"\b(verify|method):(\d+)\b(?!/)")


def human_time(text: str) -> str:
    """Every DMTF datetime in `text` as `YYYY-MM-DD HH:MM:SS UTC` (or `UTC+hh:mm`)."""

    def one(m: re.Match[str]) -> str:
        y, mo, d, h, mi, s, sign, offset = m.groups()
        zone = "UTC"
        if offset and int(offset):
            hours, minutes = divmod(int(offset), 60)
            zone = f"UTC{sign}{hours:02d}:{minutes:02d}"
        return f"{y}-{mo}-{d} {h}:{mi}:{s} {zone}"

    return _DMTF.sub(one, text)


def stage_label(stage: str) -> str:
    """A plan stage as the planner titles it (`verify:2` -> `Verify after Method 2`)."""
    if stage == "precheck":
        return "Pre-checks"
    if stage == "steps":
        return "Procedure"
    if stage == "verify:0":
        return "Is it still broken?"
    kind, _, number = stage.partition(":")
    if kind == "verify" and number:
        return f"Verify after Method {number}"
    if kind == "method" and number:
        return f"Method {number}"
    return stage


class Wording:
    """Turns a run's internal names into the words of its KB, for text people read.

    Built from the steps a journal started (key, citation): a step key in a message becomes its
    citation, prefixed with its stage's title where one citation serves several stages (the
    verification after each method), and a bare stage name becomes its title.
    """

    def __init__(self, steps: Iterable[tuple[str, str | None]]) -> None:
        """`steps`: (key, citation) of every step of the run, in any order, repeats allowed."""
        cited = {key: citation for key, citation in steps}
        stages: dict[str | None, set[str]] = {}
        for key, citation in cited.items():
            stages.setdefault(citation, set()).add(key.split("/", 1)[0])
        self._labels: dict[str, str] = {}
        for key, citation in cited.items():
            stage = key.split("/", 1)[0]
            if not citation:
                self._labels[key] = stage_label(stage)
            elif len(stages[citation]) > 1:
                self._labels[key] = f"{stage_label(stage)} ({citation})"
            else:
                self._labels[key] = citation
        self._keys = (
            re.compile("|".join(re.escape(k) for k in sorted(self._labels, key=len, reverse=True)))
            if self._labels
            else None
        )

    def step(self, key: str) -> str:
        """The human name of one step key."""
        return self._labels.get(key) or self.text(key)

    def text(self, text: str) -> str:
        """`text` with step keys, stage names and DMTF times in human words."""
        if self._keys is not None:
            text = self._keys.sub(lambda m: self._labels[m.group(0)], text)
        text = _STAGE.sub(lambda m: stage_label(m.group(0)), text)
        return human_time(text)
