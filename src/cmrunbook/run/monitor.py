"""Log monitors: wait for a site-system log to say a role change succeeded or failed.

Armed before the triggering step (the log's size is recorded), each poll reads only the bytes
appended since the last one (Ansible's win_wait_for re-reads the whole file), follows a rollover
to `.lo_`, splits the text into log messages (CMTrace multi-line aware) and judges each message
by the catalog's patterns for this wait, and by nothing else: real logs write "error" and
"failed" on successful runs (an MSI log's "success or error status: 0.", a DP setup's "Failed to
open WDS service."), so a catch-all on those words would end waits that are going well. Error
entries no pattern knows are kept and shown if the wait times out.

The wait ends at the first failure, when every required log has shown success (and the second
signal, if the catalog asks for one, agrees), or at the timeout, which says it cannot tell.
`invoke log-check` judges a saved file through :func:`check_file`, the same code.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmrunbook.load.logcatalog import PATTERN_KINDS, Expectation
from cmrunbook.logs.cmtrace import CMTraceStream, LogFormatError, Record

READ_LIMIT = 1 << 20  # bytes per log per poll; a log growing faster is read over several polls
TAIL = 12
HINTS = 5  # unmatched error entries kept for the timeout message

#: What a second signal (``Expectation.confirm``) answers on each poll: (state, detail) with
#: state ``success``, ``failure`` or ``pending``.
Confirm = Callable[[], tuple[str, str]]


@dataclass
class Watch:
    """One log being watched on one host.

    ``path`` is None while the log does not exist: it was absent at arm time, and every
    ``candidates`` path (one per candidate log folder) is watched until one appears.
    """

    log: str
    path: str | None
    offset: int
    success: list[re.Pattern[str]]
    failure: list[re.Pattern[str]]
    reboot: list[re.Pattern[str]]
    required: bool = True
    candidates: list[str] = field(default_factory=list)
    stream: CMTraceStream = field(default_factory=CMTraceStream)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL))
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=HINTS))
    outcome: str | None = None  # success | reboot | failure | unreadable
    matched: str | None = None
    matched_line: int = 0
    pattern: int = -1  # index of the deciding pattern in the expectation's list of that kind
    bytes_read: int = 0

    def request(self) -> dict[str, Any]:
        """What log_read needs for this log: the path (or the candidates) and the offset."""
        return {"path": self.path, "offset": self.offset, "candidates": self.candidates}


@dataclass
class WaitResult:
    status: str  # ok | failed | timeout
    reboot_requested: bool
    lines: list[str]
    message: str
    polls: int


def compile_expectation(
    exp: Expectation, item: Mapping[str, Any] | None
) -> tuple[list[re.Pattern[str]], ...]:
    """Catalog patterns (success, failure, reboot), `{Field}` replaced by the loop item's
    regex-escaped value."""

    def fill(pattern: str) -> re.Pattern[str]:
        if item:
            for key, value in item.items():
                pattern = pattern.replace("{" + key + "}", re.escape(str(value)))
        return re.compile(pattern)

    return (
        [fill(p.re) for p in exp.success],
        [fill(p.re) for p in exp.failure],
        [fill(p.re) for p in exp.reboot],
    )


def make_watch(
    log: str,
    exp: Expectation,
    item: Mapping[str, Any] | None,
    *,
    path: str | None,
    offset: int,
    candidates: list[str] | None = None,
) -> Watch:
    """A watch judged by the catalog expectation `exp` (the monitor's and log-check's)."""
    success, failure, reboot = compile_expectation(exp, item)
    return Watch(log, path, offset, success, failure, reboot, exp.required, list(candidates or []))


def judge(watch: Watch, rec: Record) -> tuple[str, int] | None:
    """The verdict one log message gives: the first kind (and the index of the pattern of that
    kind) it matches, else None.

    Failure is tried first, then reboot, then success, so a line that matches a failure and a
    success pattern stops the wait.
    """
    for kind in PATTERN_KINDS:
        for i, pattern in enumerate(getattr(watch, kind)):
            if pattern.search(rec.message):
                return kind, i
    return None


def _consume(watch: Watch, raw: bytes, final: bool = False) -> None:
    """Judge the records completed by `raw`, bytes appended to the log since the last poll.

    The stream decodes incrementally, so a character split between two polls stays whole.
    """
    try:
        records = watch.stream.feed_bytes(raw, detect_now=True)
        if final:
            records += watch.stream.flush()
    except LogFormatError as exc:  # binary, or NUL-padded after a crash: stop, say why
        watch.outcome, watch.matched = "unreadable", str(exc)
        return
    for rec in records:
        watch.tail.append(rec.message)
        if watch.outcome is not None:
            continue
        verdict = judge(watch, rec)
        if verdict is not None:
            watch.outcome, watch.pattern = verdict
            watch.matched, watch.matched_line = rec.message, rec.first_line
        elif rec.type == 3:
            watch.errors.append(rec.message)


def check_file(path: Path, watch: Watch) -> Watch:
    """Judge a saved log as the monitor judges the appended bytes it polls (`invoke log-check`).

    The file is fed in the monitor's read size, so a line split between two reads is handled
    the same way; reading stops at the first verdict, as the wait does.
    """
    with path.open("rb") as fh:
        while watch.outcome is None:
            raw = fh.read(READ_LIMIT)
            _consume(watch, raw, final=not raw)
            if not raw:
                break
            watch.bytes_read += len(raw)
    return watch


def wait_for_logs(
    watches: list[Watch],
    read: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
    *,
    timeout: float,
    poll: float,
    confirm: Confirm | None = None,
    progress: Callable[[float, str], None] | None = None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> WaitResult:
    """Poll until the wait is decided (see the module docstring) or the timeout passes.

    `sleep` waits between two polls and `clock` tells the time: the run's clock, whose sleep
    ends the wait on Ctrl-C (by raising), or a test's.

    `read` runs the log_read script on the host with {log: {path, offset, candidates}} and
    returns its data; `confirm`, when the catalog asks for a second signal, is asked each poll.
    """
    start = clock()
    polls = 0
    while True:
        # The second signal first, the logs after: a log line written before the signal changed
        # (2301 before the DPs have the content) is then read in the same poll.
        second = confirm() if confirm is not None else ("success", "")
        request = {w.log: w.request() for w in watches if w.outcome is None}
        if request:
            data = read(request)
            polls += 1
            for w in watches:
                entry = data.get(w.log)
                if not entry or w.outcome is not None:
                    continue
                if entry.get("path"):
                    w.path = str(entry["path"])  # appeared in one of the candidate folders
                raw = b"".join(base64.b64decode(c) for c in entry.get("chunks") or [])
                w.bytes_read += len(raw)
                w.offset = int(entry.get("offset", w.offset))
                if raw:
                    _consume(w, raw)
        failed = [w for w in watches if w.outcome in ("failure", "unreadable")]
        if failed:
            w = failed[0]
            said = "reports failure" if w.outcome == "failure" else "cannot be read as a log"
            return WaitResult(
                "failed", False, _lines(watches), f"{w.log} {said}: {w.matched}", polls
            )
        needed = [w for w in watches if w.required]
        logs_ok = all(w.outcome in ("success", "reboot") for w in needed)
        if second[0] == "failure":
            return WaitResult("failed", False, _lines(watches), second[1], polls)
        decided = [w for w in watches if w.outcome in ("success", "reboot")]
        said = "; ".join(f"{w.log}: {w.matched}" for w in decided)
        if second[0] == "success" and (logs_ok or confirm is not None):
            if confirm is not None:
                said = "; ".join(s for s in (said or "no log line seen yet", second[1]) if s)
            return WaitResult(
                "ok",
                any(w.outcome == "reboot" for w in watches),
                [f"{w.log}: {w.matched}" for w in decided],
                said,
                polls,
            )
        elapsed = clock() - start
        if elapsed >= timeout:
            for w in watches:
                _consume(w, b"", final=True)
            return WaitResult(
                "timeout", False, _lines(watches), _cannot_tell(watches, timeout, second), polls
            )
        if progress:
            last = next((w.tail[-1] for w in reversed(watches) if w.tail), "(nothing new yet)")
            progress(elapsed, second[1] if logs_ok and second[1] else last)
        sleep(min(poll, max(0.0, timeout - elapsed)))


def distribution_verdict(
    package_id: str, rows: list[dict[str, Any]], baseline: list[dict[str, Any]]
) -> tuple[str, str]:
    """The ``distribution-status`` second signal: has the update reached every DP?

    `rows` and `baseline` are SMS_PackageStatusDistPointsSummarizer rows (dp, state, version)
    now and when the wait was armed, before the update. Success: every DP installed (State 0) at
    a newer SourceVersion than before. Failure: a DP in INSTALL_FAILED (3) that was not already
    failed before the update (an old failure is retried by the update: still pending).
    """
    before = {str(r["dp"]).lower(): r for r in baseline}
    failed, waiting = [], 0
    for row in rows:
        old = before.get(str(row["dp"]).lower())
        state, version = int(row["state"]), int(row["version"])
        if state == 3 and not (old and int(old["state"]) == 3):
            failed.append(str(row["dp"]))
        elif state != 0 or (old is not None and version <= int(old["version"])):
            waiting += 1
    if failed:
        return "failure", (
            f"distribution status: {package_id} failed to install on {', '.join(failed)} "
            "(State 3, INSTALL_FAILED): see distmgr.log and PkgXferMgr.log"
        )
    if not rows:
        return "pending", f"distribution status: no distribution point row for {package_id} yet"
    if waiting:
        return "pending", (
            f"distribution status: {package_id} installed on {len(rows) - waiting} of "
            f"{len(rows)} distribution point(s)"
        )
    return "success", (
        f"distribution status: {package_id} installed on all {len(rows)} distribution point(s)"
    )


def _cannot_tell(watches: list[Watch], timeout: float, second: tuple[str, str]) -> str:
    """The timeout message: which log said nothing known, and what it said that may matter."""
    pending = [w for w in watches if w.required and w.outcome is None]
    silent = [w.log + ("" if w.required else " (not required)") for w in watches if not w.outcome]
    waited = ", ".join(silent) if pending else "the second signal"
    parts = [f"timed out after {timeout:.0f}s waiting for {waited}"]
    if pending:
        parts.append("cannot tell: no known line seen")
    if second[1] and second[0] == "pending":
        parts.append(second[1])
    for w in watches:
        if w.outcome is None and w.path is None and w.candidates:
            parts.append(f"{w.log} never appeared in any of: {'; '.join(w.candidates)}")
        if w.errors:
            parts.append(f"{w.log} error entries no pattern knows: {' | '.join(w.errors)}")
    return "; ".join(parts)


def _lines(watches: list[Watch]) -> list[str]:
    return [f"{w.log}: {line}" for w in watches for line in w.tail]
