"""Tasks that write documents for people: `invoke checklist` and `invoke report`.

Thin like every task: parse options, call `checklist` / `reports`, map errors to the documented
exit codes through `cli_task` (2 for a usage or configuration error).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from cmrunbook.cli.common import COMMON_HELP, build_plan, cli_task
from cmrunbook.errors import UsageError

CHECKLIST_HELP = {
    **COMMON_HELP,
    "runbook": "Runbook id (see `invoke validate` or runbooks/).",
    "method": "Method of the KB article: 1, 2, 3, 4 or auto (each method, then its verification).",
    "format": "html (one self-contained printable page) or md (for a change ticket).",
    "out": "Write to this file instead of standard output.",
    "rollback": "The checklist of the runbook's rollback steps instead of the procedure.",
    "from_run": "A run folder (runs/<id>): the checklist with that run's results filled in.",
    "paper": "a4 or letter: the page size the HTML asks the printer for.",
    "scripts": "Append the PowerShell each step sends (default); --no-scripts leaves it out.",
}


@cli_task(positional=["runbook"], iterable=["set"], help=CHECKLIST_HELP)
def checklist(
    c: Any,
    runbook: str,
    method: str | None = None,
    format: str = "html",
    hosts: str | None = None,
    inventory: str | None = None,
    set: list[str] | None = None,
    out: str | None = None,
    rollback: bool = False,
    from_run: str | None = None,
    paper: str = "a4",
    scripts: bool = True,
) -> None:
    """Print a runbook as a per-host checklist to follow and sign (HTML or Markdown)."""
    from cmrunbook.docs.checklist import FORMATS, PAPERS, build_checklist, render_checklist
    from cmrunbook.record.journal_read import load_journal

    if format not in FORMATS:
        raise UsageError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    if paper not in PAPERS:
        raise UsageError(f"--paper {paper}: expected one of {', '.join(PAPERS)}")
    journal = None
    if from_run:
        journal = load_journal(Path(from_run))
        recorded = journal.runbook
        if runbook and recorded and runbook != recorded:
            raise UsageError(f"--from-run {from_run} is a run of {recorded}, not {runbook}")
        method = method or journal.method
        recorded_inv = journal.run.get("inventory")
        if inventory is None and recorded_inv and Path(str(recorded_inv)).is_file():
            inventory = str(recorded_inv)
        hosts = hosts or ",".join(journal.targets) or None
    plan_for = functools.partial(
        build_plan,
        runbook,
        inventory=inventory,
        method=method,
        hosts=hosts,
        overrides=list(set or []),
    )
    catalog, plan = plan_for(rollback=rollback)
    rollback_plan = None
    if plan.runbook.rollback and not rollback:
        _, rollback_plan = plan_for(rollback=True)
    doc = build_checklist(
        catalog, plan, journal=journal, rollback_plan=rollback_plan, paper=paper, scripts=scripts
    )
    text = render_checklist(doc, format, catalog.templates_dir())
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)


REPORT_HELP = {
    "rundir": "A run folder (runs/<id>) holding journal.jsonl.",
    "reports": "Also copy the reports to DIR/<run id>/ (e.g. a share the dashboards read).",
    "keep_days": "With --reports: delete report folders in DIR older than this many days.",
    "keep_runs": "With --reports: keep at most this many report folders in DIR (newest first).",
    "inventory": "Inventory to plan with, for step titles (default: the one the run used).",
}


@cli_task(positional=["rundir"], help=REPORT_HELP)
def report(
    c: Any,
    rundir: str,
    reports: str | None = None,
    keep_days: int | None = None,
    keep_runs: int | None = None,
    inventory: str | None = None,
) -> None:
    """(Re)write report.json, junit.xml, report.html and cmrunbook.log of a run folder."""
    from cmrunbook.load.project import Project
    from cmrunbook.record.reports import copy_reports, prune_reports, write_reports

    run_dir = Path(rundir)
    catalog = Project.find()
    written = write_reports(run_dir, catalog, None, inventory=inventory)
    for path in written:
        print(f"wrote {path}")
    if reports:
        target = copy_reports(run_dir, Path(reports), written)
        print(f"copied to {target}")
        if keep_days is not None or keep_runs is not None:
            for gone in prune_reports(Path(reports), keep_days=keep_days, keep_runs=keep_runs):
                print(f"pruned {gone}")
    elif keep_days is not None or keep_runs is not None:
        raise UsageError("--keep-days and --keep-runs apply to --reports DIR")
