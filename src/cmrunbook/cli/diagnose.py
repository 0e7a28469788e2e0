"""`invoke diagnose`: which known failure is in these logs, local files or fetched over WinRM.

Thin, like every task: options in, engine calls, documented exit codes out. `diagnose` exits
like grep (0 nothing known found, 1 a known failure found, 2 a file or host could not be read),
so that a scheduled job can alert on it.

invoke gives a task exactly one value per positional argument, and a positional argument is
always required: more files go after ``--`` (``invoke diagnose smsts.log -- OSDLaunch.log``),
or as a folder or a quoted glob; with ``--host`` the positional names the logs to fetch
(``invoke diagnose all --host cm07-dp01``).
"""

from __future__ import annotations

import glob
import shlex
import sys
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from cmrunbook.cli.common import COMMON_HELP, cli_task
from cmrunbook.errors import UsageError

_LOG_SUFFIXES = (".log", ".lo_")

DIAGNOSE_HELP = {
    "file": "A log file (smsts.log, OSDLaunch.log, ...), a folder of logs, or a quoted glob; "
    "more files after --: `invoke diagnose a.log -- b.log c.log`. With --host: which logs "
    "to fetch (smsts.log, OSDLaunch.log or all).",
    "host": "Fetch the logs from these inventory hosts over WinRM (names, globs, roles, "
    "group:NAME, as --hosts elsewhere): `invoke diagnose all --host NAME`.",
    "inventory": COMMON_HELP["inventory"],
    "json": "Print a machine-readable result (JSON) instead of text.",
    "non_interactive": "Never prompt for a password (for scheduled runs).",
    "max_mb": "With --host: fetch at most this many MB per log (the end of a larger one; "
    "default 4, which keeps the fetch within WinRM 2.0's 150 MB per-shell memory quota).",
}

#: MB fetched per log by default. The fetch holds each log as bytes, as base64 (4/3 as many
#: UTF-16 characters) and as the JSON result line built from it: about 10 times the log's size
#: in the remote shell. WinRM 2.0 hosts (XP, Server 2008 with WMF 2.0) limit a shell to
#: MaxMemoryPerShellMB, 150 by default (Group Policy "Specify maximum amount of memory in MB
#: per Shell": "If you disable or do not configure this policy setting, the value 150 is used
#: by default"; 1024 only from Server 2016): 16 MB would need ~160 MB, 4 MB ~40 MB, leaving
#: room for a second log (smsts.log and OSDLaunch.log) in the same shell.
FETCH_MAX_MB = 4


def expand_files(given: list[str]) -> list[str]:
    """Files as given; a folder means its *.log and *.lo_ files; a glob is expanded here."""
    out: list[str] = []
    for item in given:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in _LOG_SUFFIXES
            )
            if not found:
                raise UsageError(f"folder {item} has no *.log or *.lo_ file")
            out.extend(found)
        elif any(ch in item for ch in "*?[") and not path.exists():
            matched = sorted(glob.glob(item))
            if not matched:
                raise UsageError(f"no file matches {item}")
            out.extend(matched)
        else:
            out.append(item)
    return out


@cli_task(positional=["file"], help=DIAGNOSE_HELP)
def diagnose(
    c: Any,
    file: str,
    host: str | None = None,
    inventory: str | None = None,
    json: bool = False,
    non_interactive: bool = False,
    max_mb: int = FETCH_MAX_MB,
) -> None:
    """Which known failure is in these logs: KB, matching lines, cause, and the fixing command."""
    from cmrunbook.load.project import Project
    from cmrunbook.logs import diagnose as dx

    remainder = getattr(c, "remainder", "") or ""
    given = [file, *(shlex.split(remainder, posix=True) if remainder else [])]
    wanted: list[str] = []
    if host:
        # With --host the positional names the logs to fetch, not local files.
        wanted, given = _wanted_logs(given), []
    catalog = Project.find()
    signatures, warnings = dx.load_signatures(catalog, inventory)
    if not signatures:
        raise UsageError(f"no runbook in {catalog.runbooks_dir} has symptoms to match")
    result = dx.Diagnosis(warnings=warnings)
    for path in expand_files(given):
        result.files.append(dx.diagnose_file(Path(path), signatures))
    if host:
        result.files.extend(
            _from_hosts(
                catalog,
                signatures,
                host,
                inventory,
                wanted,
                interactive=not non_interactive,
                max_bytes=max(1, max_mb) << 20,
            )
        )
    if json:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        dx.print_json(result)
    else:
        dx.print_report(result)
    if result.exit_code:
        raise Exit(code=result.exit_code)


def _wanted_logs(names: list[str]) -> list[str]:
    """`all`, `smsts.log`, `OSDLaunch.log` (any case): the logs `--host` fetches."""
    known = {"smsts.log", "osdlaunch.log"}
    out: set[str] = set()
    for n in names:
        low = n.lower()
        if low in ("all", "*"):
            out |= known
        elif low in known:
            out.add(low)
        else:
            raise UsageError(
                f"with --host, name the logs to fetch: smsts.log, OSDLaunch.log or all (got {n!r})"
            )
    return sorted(out)


def _from_hosts(
    catalog: Any,
    signatures: list[Any],
    patterns: str,
    inventory: str | None,
    wanted: list[str],
    *,
    interactive: bool,
    max_bytes: int,
) -> list[Any]:
    """Fetch and diagnose the standard logs of each selected host; a host that cannot be
    reached becomes an unreadable entry (exit 2), and the other hosts still run."""
    from cmrunbook.load.inventory import insecure_warnings, load_inventory
    from cmrunbook.logs import diagnose as dx
    from cmrunbook.remote import TransportError
    from cmrunbook.render.fetch import fetch_script
    from cmrunbook.render.result import parse_result
    from cmrunbook.run.connect import credentials_for, open_host
    from cmrunbook.text import printable

    inv = load_inventory(catalog.inventory(inventory))
    hosts = inv.select(patterns)
    no_winrm = [h.name for h in hosts if not h.has_winrm]
    if no_winrm and len(no_winrm) == len(hosts):
        raise UsageError(f"no WinRM on {', '.join(no_winrm)} (winrm: false in {inv.path})")
    # A fetch logs on to the hosts as a run does: the same insecure settings are said first.
    for line in insecure_warnings(inv, [h.name for h in hosts if h.has_winrm]):
        print(f"warning: {printable(line)}", file=sys.stderr)
    creds = credentials_for(inv, interactive=interactive)
    candidates = [
        p for p in (*dx.SMSTS_CANDIDATES, *dx.OSDLAUNCH_CANDIDATES) if dx.log_name(p) in wanted
    ]
    reports: list[Any] = []
    for h in hosts:
        if not h.has_winrm:
            reports.append(dx.FileReport(name=h.name, error="no WinRM (winrm: false); skipped"))
            continue
        script = fetch_script(catalog.renderer, h.name, candidates, max_bytes)
        try:
            with open_host(h, inv, creds) as remote:
                out = remote.run(script, deadline=dx.FETCH_DEADLINE)
        except TransportError as exc:
            reports.append(dx.FileReport(name=h.name, error=f"cannot fetch logs: {exc}"))
            continue
        result = parse_result(out.stdout)
        if result is None or not result.ok:
            why = result.message if result else (out.stderr.strip() or f"exit code {out.exit_code}")
            reports.append(dx.FileReport(name=h.name, error=f"the fetch script failed: {why}"))
            continue
        try:
            logs = dx.decode_fetch(h.name, result.data, max_bytes)
        except ValueError as exc:
            reports.append(dx.FileReport(name=h.name, error=str(exc)))
            continue
        if not logs:
            reports.append(
                dx.FileReport(
                    name=h.name,
                    format="-",
                    encoding="-",
                    note="no smsts.log or OSDLaunch.log at the standard locations: "
                    + "; ".join(candidates),
                )
            )
            continue
        reports.extend(dx.diagnose_fetched(log, signatures) for log in logs)
    return reports
