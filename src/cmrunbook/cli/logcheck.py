"""`invoke log-check`: judge a saved site-system log with the log monitor's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from cmrunbook.cli.common import cli_task
from cmrunbook.errors import UsageError

LOG_CHECK_HELP = {
    "file": "A saved site-system log (MCSSetup.log, MCSMSI.log, distmgr.log, ...).",
    "log": "Catalog log name the file is (runbooks/_logs.yaml), e.g. MCSSetup.log.",
    "event": "The wait's expectation in the catalog, e.g. install, uninstall, boot-image-updated.",
    "package_id": "For distmgr.log: the package (boot image) ID the wait is for.",
}


@cli_task(positional=["file"], help=LOG_CHECK_HELP)
def log_check(
    c: Any, file: str, log: str = "", event: str = "", package_id: str | None = None
) -> None:
    """Judge a saved log with the log monitor's rules; the last line is the verdict.

    Confirms the catalog's UNCONFIRMED patterns on a site before a real run: exit 0 success or
    reboot, 1 failure or pending (no line of the patterns seen), 2 bad input.
    """
    import re

    from cmrunbook.load.logcatalog import PATTERN_KINDS
    from cmrunbook.load.project import Project
    from cmrunbook.run.monitor import check_file, make_watch

    logs = Project.find().logs
    if not log or not event:
        raise UsageError(
            f"log-check needs --log NAME and --event EVENT; logs: {', '.join(logs.logs)}"
        )
    if log not in logs.logs:
        raise UsageError(f"--log {log!r} is not in the catalog; known: {', '.join(logs.logs)}")
    if event not in logs.logs[log].expect:
        known = ", ".join(logs.logs[log].expect)
        raise UsageError(f"--event {event!r}: {log} has no such expectation; known: {known}")
    exp = logs.expectation(log, event)
    needs_id = any("{PackageID}" in p.re for k in PATTERN_KINDS for p in getattr(exp, k))
    if needs_id and not re.fullmatch(r"[A-Za-z0-9]{8}", package_id or ""):
        raise UsageError(f"{log} {event} needs --package-id, 8 letters and digits (a PackageID)")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"{file}: no such file")
    item = {"PackageID": package_id.upper()} if package_id else None
    w = check_file(path, make_watch(log, exp, item, path=str(path), offset=0))
    print(f"{path}: judged as {log} {event} by runbooks/_logs.yaml")
    for line in w.errors:
        print(f"  error entry, no pattern (does not decide): {line}")
    if w.outcome == "unreadable":
        print(f"failure: {log} cannot be read as a log: {w.matched}")
        raise Exit(code=1)
    if w.outcome is None:
        print(
            f"pending: no line of the {log} {event} patterns seen; a run would wait until its "
            "timeout and say it cannot tell"
        )
        raise Exit(code=1)
    pattern = getattr(exp, w.outcome)[w.pattern]
    evidence = f"seen in {pattern.seen_in}"
    if pattern.seen_in is None:
        evidence = f"UNCONFIRMED: {pattern.unconfirmed}; this file is such a log if it is real"
    print(f"  decided by {w.outcome} pattern {pattern.re!r} ({evidence})")
    if exp.confirm and w.outcome != "failure":
        print(f"  note: a run also waits for the {exp.confirm} before it ends")
    print(f"{w.outcome}: line {w.matched_line}: {w.matched}")
    if w.outcome == "failure":
        raise Exit(code=1)
