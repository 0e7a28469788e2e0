"""Log monitors: wait for a site-system log to say a role change succeeded or failed.

Armed before the triggering step (the log's size is recorded), each poll reads only the bytes
appended since the last one (Ansible's win_wait_for re-reads the whole file), follows a rollover
to `.lo_`, splits the text into log messages (CMTrace multi-line aware) and stops at the first
failure, when every log has shown success, or at the timeout, reporting the last lines read.
"""

from __future__ import annotations

import base64
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cmrunbook.cmtrace import CMTraceStream, LogFormatError
from cmrunbook.logcatalog import Expectation

READ_LIMIT = 1 << 20  # bytes per log per poll; a log growing faster is read over several polls
TAIL = 12


@dataclass
class Watch:
    """One log being watched on one host."""

    log: str
    path: str
    offset: int
    success: list[re.Pattern[str]]
    failure: list[re.Pattern[str]]
    reboot: list[re.Pattern[str]]
    stream: CMTraceStream = field(default_factory=CMTraceStream)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL))
    outcome: str | None = None  # success | reboot | failure | unreadable
    matched: str | None = None
    bytes_read: int = 0


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
    """Catalog patterns, with `{Field}` replaced by the loop item's regex-escaped value."""

    def fill(pattern: str) -> re.Pattern[str]:
        if item:
            for key, value in item.items():
                pattern = pattern.replace("{" + key + "}", re.escape(str(value)))
        return re.compile(pattern)

    return (
        [fill(p) for p in exp.success],
        [fill(p) for p in exp.failure],
        [fill(p) for p in exp.reboot],
    )


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
        message = rec.message
        watch.tail.append(message)
        if watch.outcome is not None:
            continue
        if any(p.search(message) for p in watch.failure) or (
            rec.type == 3 and _mentions_failure(message)
        ):
            watch.outcome, watch.matched = "failure", message
        elif any(p.search(message) for p in watch.reboot):
            watch.outcome, watch.matched = "reboot", message
        elif any(p.search(message) for p in watch.success):
            watch.outcome, watch.matched = "success", message


def _mentions_failure(message: str) -> bool:
    """A CMTrace error entry (type 3) counts as failure only when it says so."""
    return bool(re.search(r"(?i)\b(fail(ed|ure)?|error)\b", message))


def wait_for_logs(
    watches: list[Watch],
    read: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
    *,
    timeout: float,
    poll: float,
    progress: Callable[[float, str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> WaitResult:
    """Poll until every log shows success, one shows failure, or the timeout passes.

    `read` runs the log_read script on the host with {log: {path, offset}} and returns its data.
    """
    start = clock()
    polls = 0
    while True:
        request = {
            w.log: {"path": w.path, "offset": w.offset} for w in watches if w.outcome is None
        }
        if request:
            data = read(request)
            polls += 1
            for w in watches:
                entry = data.get(w.log)
                if not entry or w.outcome is not None:
                    continue
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
        if all(w.outcome in ("success", "reboot") for w in watches):
            return WaitResult(
                "ok",
                any(w.outcome == "reboot" for w in watches),
                [f"{w.log}: {w.matched}" for w in watches],
                "; ".join(f"{w.log}: {w.matched}" for w in watches),
                polls,
            )
        elapsed = clock() - start
        if elapsed >= timeout:
            for w in watches:
                _consume(w, b"", final=True)
            pending = ", ".join(w.log for w in watches if w.outcome is None)
            return WaitResult(
                "timeout",
                False,
                _lines(watches),
                f"timed out after {timeout:.0f}s waiting for {pending}",
                polls,
            )
        if progress:
            last = next((w.tail[-1] for w in reversed(watches) if w.tail), "(nothing new yet)")
            progress(elapsed, last)
        sleep(min(poll, max(0.0, timeout - elapsed)))


def _lines(watches: list[Watch]) -> list[str]:
    return [f"{w.log}: {line}" for w in watches for line in w.tail]
