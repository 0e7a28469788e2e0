"""The invoke collection: `invoke remediate`, `check`, `validate`, `schema`, and the rest.

Each task is thin: it parses options, calls the engine, and turns engine errors into the
documented exit codes (0 ok, 1 failed or non-compliant, 2 usage or configuration error,
3 a host's lock is held, 4 the jump host failed the run: disk full, a file it cannot write).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from cmrunbook.cli.common import (
    COMMON_HELP,
    EXIT_OK,
    EXIT_USAGE,
    build_plan,
    cli_errors,
    help_if_asked,
)
from cmrunbook.errors import ConfigError, UsageError

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
    from cmrunbook.text import printable

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
        runs_dir=Path(runs) if runs else catalog.work_dir / "runs",
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


@task(positional=["runbook"], iterable=["set"], help=REMEDIATE_HELP, auto_shortflags=False)
@cli_errors
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
    help_if_asked(runbook, "remediate")
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


@task(positional=["name"], iterable=["set"], help=CHECK_HELP, auto_shortflags=False)
@cli_errors
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
    from cmrunbook.load.project import Project

    help_if_asked(name, "check")
    known = Project.find().ids()
    runbook = next((r for r in (name, f"{name}-check", f"{name}-precheck") if r in known), "")
    if not runbook:
        checks = [r for r in known if r.endswith(("-check", "-precheck"))]
        raise UsageError(f"no check '{name}'; known: {', '.join(checks)}")
    remediate.body(c, runbook, **options)


@task(help={"inventory": "Also check this inventory (default: every file under inventory/)."})
@cli_errors
def validate(c: Any, inventory: str | None = None) -> None:
    """Check every runbook, the log catalog and the inventories; list all errors, exit 2 if any."""
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import Project
    from cmrunbook.load.schema import stale_schemas
    from cmrunbook.plan.planner import retyped_vars

    project = Project.find()
    loaded, problems = project.load_all()
    inventories = [Path(inventory)] if inventory else project.inventories()
    for path in inventories:
        try:
            inv = load_inventory(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            problems.extend(retyped_vars(inv, [lr.runbook for lr in loaded]))
    for name in stale_schemas(project.schema_dir):
        print(f"error: schema/{name} is stale: run `invoke schema`", file=sys.stderr)
        problems.append(None)  # type: ignore[arg-type]
    for p in problems:
        if p is not None:
            print(f"error: {p}", file=sys.stderr)
    for lr in loaded:
        rb = lr.runbook
        print(f"ok  {rb.id:<22} {rb.source.kb:<10} {rb.title}")
    print(f"ok  {len(inventories)} inventory file(s)" if not problems else "")
    if problems:
        raise Exit(code=EXIT_USAGE)


@task
@cli_errors
def schema(c: Any) -> None:
    """Regenerate schema/*.schema.json from the runbook and inventory models."""
    from cmrunbook.load.project import Project
    from cmrunbook.load.schema import write_schemas

    for path in write_schemas(Project.find().schema_dir):
        print(f"wrote {path}")


LOG_CHECK_HELP = {
    "file": "A saved site-system log (MCSSetup.log, MCSMSI.log, distmgr.log, ...).",
    "log": "Catalog log name the file is (runbooks/_logs.yaml), e.g. MCSSetup.log.",
    "event": "The wait's expectation in the catalog, e.g. install, uninstall, boot-image-updated.",
    "package_id": "For distmgr.log: the package (boot image) ID the wait is for.",
}


@task(positional=["file"], help=LOG_CHECK_HELP, auto_shortflags=False)
@cli_errors
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

    help_if_asked(file, "log-check")
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
        print(f"pending: no line of the {log} {event} patterns seen; a run would wait until its "
              "timeout and say it cannot tell")  # fmt: skip
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


LAB_HELP = {
    "lab_file": "Lab file (YAML) describing sites, hosts, faults and delays (default: built in).",
    "port": "Port on 127.0.0.1 for the WS-Management server (default 55985).",
    "speed": "Run the lab's delays this many times faster (default 1).",
    "state": "Folder for the lab's inventory and credentials file (default lab-state/).",
    "from_inventory": "Simulate the sites and hosts of this inventory (e.g. one written by "
    "`invoke inventory from-site`); --lab-file then adds images, host state, delays and faults.",
    "fault": "With --from-inventory: HOST=KIND breaks a DP's multicast (image-flags, mcs-key, "
    "wds; repeatable).",
}


@task(help=LAB_HELP, iterable=["fault"], auto_shortflags=False)
@cli_errors
def lab(
    c: Any,
    lab_file: str | None = None,
    port: int = 55985,
    speed: float = 1.0,
    state: str = "lab-state",
    from_inventory: str | None = None,
    fault: list[str] | None = None,
) -> None:
    """Start the lab: simulated ConfigMgr hosts behind a WinRM server on 127.0.0.1 (Ctrl-C ends)."""
    import time

    from cmrunbook_lab.from_inventory import lab_file_from_inventory, parse_faults
    from cmrunbook_lab.serve import start_lab

    folder = Path(state)
    spec = None
    if from_inventory:
        spec = lab_file_from_inventory(
            Path(from_inventory), Path(lab_file) if lab_file else None, parse_faults(fault or [])
        )
    elif fault:
        raise UsageError("--fault needs --from-inventory (a lab file names its own faults)")
    running = start_lab(
        folder / "inventory.yaml",
        lab_file=Path(lab_file) if lab_file else None,
        spec=spec,
        port=port,
        speed=speed,
    )
    env_file = running.write_env_file(folder / "credentials.env")
    hosts = running.inventory.hosts
    print(
        f"Lab listening on http://127.0.0.1:{running.server.port}/wsman/<host> ({len(hosts)} hosts)"
    )
    print(f"Inventory: {running.inventory_path}")
    print("In another terminal:")
    print(f"  . {env_file}")
    print(f"  invoke remediate multicast --method 4 --inventory {running.inventory_path} --yes")
    print(f"  invoke check client-hotfix --inventory {running.inventory_path}")
    print("Ctrl-C stops the lab.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("lab stopped")
    finally:
        running.stop()


def _collection() -> Collection:
    from cmrunbook.cli.documents import checklist, report
    from cmrunbook.cli.inventory import inventory
    from cmrunbook.cli.operations import diagnose, schedule
    from cmrunbook.cli.publish import publish

    collection = Collection(
        remediate, check, checklist, diagnose, report, schedule, validate, schema, lab, log_check
    )
    collection.add_task(inventory)
    collection.add_task(publish)
    return collection


ns = _collection()
