"""`invoke schedule`: run a runbook on a schedule from the jump host (systemd, cron, Windows)."""

from __future__ import annotations

import sys
from typing import Any

from invoke.exceptions import Exit

from cmrunbook.cli.common import COMMON_HELP, EXIT_USAGE, cli_task
from cmrunbook.errors import UsageError

SCHEDULE_HELP = {
    "runbook": "Runbook id to run on schedule.",
    "every": "15m, 30m, 1h, 6h, hourly, daily, daily@02:30, weekly, weekly@sun 03:00.",
    "format": "systemd (default on Linux), cron, or windows (Task Scheduler XML).",
    "install": "Write the unit files (systemd), add the crontab line (cron), or write the XML.",
    "unit_dir": "systemd: where the units go (default ~/.config/systemd/user); windows: the "
    "folder for the XML.",
    "action": "remediate or check: the task the job runs (default: check for a -check or "
    "-precheck runbook, else remediate).",
    "inventory": COMMON_HELP["inventory"],
    "hosts": COMMON_HELP["hosts"],
    "method": "Method to run (remediate only), e.g. auto.",
    "reports": "Folder for the run reports (default: reports/ in the project).",
    "env_file": "File holding CMRUNBOOK_USER/CMRUNBOOK_PASSWORD for the job (never printed).",
    "run_as": "windows: the service account the task runs as (its keyring holds the password).",
    "name": "Name of the job (default: cmrunbook-<action>-<runbook>).",
}


@cli_task(positional=["runbook"], help=SCHEDULE_HELP)
def schedule(
    c: Any,
    runbook: str,
    every: str | None = None,
    format: str | None = None,
    install: bool = False,
    unit_dir: str | None = None,
    action: str | None = None,
    inventory: str | None = None,
    hosts: str | None = None,
    method: str | None = None,
    reports: str | None = None,
    env_file: str | None = None,
    run_as: str | None = None,
    name: str | None = None,
) -> None:
    """Run a runbook on a schedule from the jump host: systemd timer, cron line, or Windows task."""
    from cmrunbook.cli import scheduling as sched
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import Project
    from cmrunbook.load.runbook import CHECK_SUFFIXES

    if not every:
        raise UsageError("--every is required, e.g. --every 15m, --every daily@02:30")
    project = Project.find()
    project.load(runbook)  # an unknown or broken runbook fails now, not at 02:30
    if action is None:
        # A read-only check is scheduled as `invoke check`, as a person would run it.
        action = "check" if runbook.endswith(CHECK_SUFFIXES) else "remediate"
    job = sched.Job.build(
        root=project.work_dir,
        runbook=runbook,
        every=every,
        action=action,
        inventory=inventory,
        hosts=hosts,
        method=method,
        reports=reports,
        env_file=env_file,
        run_as=run_as,
        name=name,
    )
    fmt = format or sched.default_format()
    inv = load_inventory(project.inventory(str(job.inventory) if job.inventory else None))
    sched.prepare(
        job,
        fmt,
        install=install,
        unit_dir=unit_dir,
        creds=inv.file.credentials,
        inventory_given=job.inventory is not None,
        err=sys.stderr,
    )
    try:
        sched.emit(job, fmt, install=install, unit_dir=unit_dir, out=sys.stdout, err=sys.stderr)
    except sched.InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise Exit(code=EXIT_USAGE) from None
