"""`invoke remediate` and `invoke check`: plan a runbook, then dry-run it or run it over WinRM.

Each task is thin: it parses options, calls the engine, and turns engine errors into the
documented exit codes (0 ok, 1 failed or non-compliant, 2 usage or configuration error,
3 a host's lock is held, 4 the jump host failed the run: disk full, a file it cannot write).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from cmrunbook.cli.common import (
    COMMON_HELP,
    EXIT_OK,
    build_plan,
    cli_task,
)
from cmrunbook.errors import UsageError

REMEDIATE_HELP = {
    **COMMON_HELP,
    "runbook": "Runbook id (see `invoke validate` or runbooks/).",
    "method": "Method of the KB article: 1, 2, 3, 4 or auto (escalates, verifying after each).",
    "dry_run": "Show every step and condition; touch nothing, contact no host.",
    "show_scripts": "With --dry-run: print the full PowerShell of every step.",
    "out": "With --dry-run: write one .ps1 file per host and step under this folder.",
    "rollback": "Run the runbook's rollback steps instead of the procedure; with --resume RUN, "
    "only set back the site-wide changes RUN left outstanding (multicast: the OS images' flag).",
    "yes": "Run destructive steps without asking (they are listed in the dry run).",
    "forks": "How many target hosts run at once (default 5).",
    "non_interactive": "Never prompt: manual and unconfirmed destructive steps fail clearly.",
    "assume_manual_done": "Treat manual (console-only) steps as done by a person beforehand.",
    "resume": "Continue the run in this run folder after each host's last completed step.",
    "runs": "Folder for run folders (journal, scripts, reports); default runs/.",
    "reports": "Also copy each run's reports into this folder (for scheduled runs).",
    "keep_days": "With --reports: delete report folders older than this many days.",
    "step_timeout": "Seconds allowed for one remote script (default 600).",
    "time_scale": "Multiply log-wait timeouts, polls and reboot waits (e.g. 0.05 in the lab).",
}


def _run_options(*, restore_only: bool = False, **kw: Any) -> Any:
    from cmrunbook.run.execute import Options

    return Options(
        forks=int(kw["forks"]),
        yes=bool(kw["yes"]),
        non_interactive=bool(kw["non_interactive"]),
        assume_manual_done=bool(kw["assume_manual_done"]),
        step_timeout=float(kw["step_timeout"]),
        time_scale=float(kw["time_scale"]),
        restore_only=restore_only,
    )


def run_runbook(
    runbook: str,
    *,
    method: str | None,
    inventory: str | None,
    hosts: str | None,
    overrides: list[str],
    dry_run: bool,
    show_scripts: bool,
    out: str | None,
    rollback: bool,
    resume: str | None,
    runs: str | None,
    reports: str | None,
    keep_days: int,
    **options: Any,
) -> int:
    """Plan, then dry-run or execute; shared by `remediate` and `check`. Returns the exit code.

    `--rollback --resume RUN` sets back only the site-wide changes RUN left outstanding (see
    sitestate.py); the run stays resumable (a resumed target makes its changes again)."""
    state = None
    restore_only = False
    if resume:
        from cmrunbook.record.journal import ResumeState

        state = ResumeState.load(Path(resume))
        request = state.run.get("request") or {}
        runbook = request.get("runbook", runbook)
        method, inventory = request.get("method"), request.get("inventory")
        hosts, overrides = request.get("hosts"), list(request.get("overrides") or [])
        # --rollback on a run that was a rollback itself just resumes it.
        restore_only = rollback and not request.get("rollback")
        rollback = bool(request.get("rollback"))
    catalog, plan = build_plan(
        runbook,
        inventory=inventory,
        method=method,
        hosts=hosts,
        overrides=overrides,
        rollback=rollback,
    )
    if restore_only and not plan.runbook.site_states:
        raise UsageError(
            f"--rollback --resume sets back site-wide changes, and runbook {plan.runbook.id} "
            f"declares none; roll it back with: invoke remediate {plan.runbook.id} --rollback"
        )
    from cmrunbook.load.inventory import insecure_warnings
    from cmrunbook.run.console import printable

    used = {hp.target.name for hp in plan.hosts} | {
        ps.run_on for hp in plan.hosts for ps in hp.all_steps()
    }
    warnings = insecure_warnings(plan.inventory, sorted(used))
    for line in warnings:
        print(f"warning: {printable(line)}", file=sys.stderr)
    if dry_run:
        from cmrunbook.docs.dryrun import print_dry_run

        print_dry_run(
            plan, catalog, sys.stdout, show_scripts=show_scripts, out_dir=Path(out) if out else None
        )
        return EXIT_OK
    from cmrunbook.load.project import project_root
    from cmrunbook.run.connect import credentials_for, open_host
    from cmrunbook.run.orchestrate import execute_plan

    opts = _run_options(restore_only=restore_only, **options)
    inv = plan.inventory
    creds = credentials_for(inv, interactive=not opts.non_interactive)
    request = {
        "runbook": runbook, "method": method, "inventory": plan.inventory.path, "hosts": hosts,
        "overrides": overrides, "rollback": rollback,
    }  # fmt: skip
    return execute_plan(
        catalog,
        plan,
        opts,
        runs_dir=Path(runs) if runs else project_root() / "runs",
        connect=lambda name: open_host(inv.hosts[name], inv, creds),
        resume=state,
        request=request,
        warnings=warnings,
        after=_reports_hook(catalog, plan, reports, keep_days),
    )


def _reports_hook(catalog: Any, plan: Any, reports: str | None, keep_days: int) -> Any:
    def write(run_dir: Path) -> None:
        from cmrunbook.record.reports import copy_reports, prune_reports, write_reports

        written = write_reports(run_dir, catalog, plan)
        print(f"Reports: {', '.join(str(p) for p in written)}")
        if reports:
            copy_reports(run_dir, Path(reports))
            prune_reports(Path(reports), keep_days=keep_days)

    return write


@cli_task(positional=["runbook"], iterable=["set"], help=REMEDIATE_HELP)
def remediate(
    c: Any,
    runbook: str,
    method: str | None = None,
    inventory: str | None = None,
    hosts: str | None = None,
    set: list[str] | None = None,  # the option is --set
    dry_run: bool = False,
    show_scripts: bool = False,
    out: str | None = None,
    rollback: bool = False,
    yes: bool = False,
    forks: int = 5,
    non_interactive: bool = False,
    assume_manual_done: bool = False,
    resume: str | None = None,
    runs: str | None = None,
    reports: str | None = None,
    keep_days: int = 30,
    step_timeout: float = 600.0,
    time_scale: float = 1.0,
) -> None:
    """Fix a known OSD failure with a runbook: dry run, or run over WinRM on the inventory."""
    code = run_runbook(
        runbook, method=method, inventory=inventory, hosts=hosts, overrides=list(set or []),
        dry_run=dry_run, show_scripts=show_scripts, out=out, rollback=rollback, yes=yes,
        forks=forks, non_interactive=non_interactive, assume_manual_done=assume_manual_done,
        resume=resume, runs=runs, reports=reports, keep_days=keep_days,
        step_timeout=step_timeout, time_scale=time_scale,
    )  # fmt: skip
    if code:
        raise Exit(code=code)


CHECK_HELP = {
    k: v for k, v in REMEDIATE_HELP.items() if k not in ("runbook", "method", "rollback", "yes")
}
CHECK_HELP["name"] = (
    "Check name: client-hotfix, site-hotfix or nt4 (the runbook id without -check)."
)


@cli_task(positional=["name"], iterable=["set"], help=CHECK_HELP)
def check(
    c: Any,
    name: str,
    inventory: str | None = None,
    hosts: str | None = None,
    set: list[str] | None = None,  # the option is --set
    dry_run: bool = False,
    show_scripts: bool = False,
    out: str | None = None,
    forks: int = 20,
    non_interactive: bool = False,
    assume_manual_done: bool = False,
    resume: str | None = None,
    runs: str | None = None,
    reports: str | None = None,
    keep_days: int = 30,
    step_timeout: float = 600.0,
    time_scale: float = 1.0,
) -> None:
    """Run a read-only check runbook; exit 1 when any host is non-compliant or unreachable."""
    options = {k: v for k, v in locals().items() if k not in ("c", "name")}  # for remediate
    from cmrunbook.load.catalog import Catalog
    from cmrunbook.load.project import project_root
    from cmrunbook.load.runbook import CHECK_SUFFIXES

    known = Catalog(project_root()).ids()
    candidates = (name, *(name + suffix for suffix in CHECK_SUFFIXES))
    runbook = next((r for r in candidates if r in known), "")
    if not runbook:
        checks = [r for r in known if r.endswith(CHECK_SUFFIXES)]
        raise UsageError(f"no check '{name}'; known: {', '.join(checks)}")
    remediate.body(c, runbook, **options)
