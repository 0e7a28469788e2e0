"""`invoke remediate` and `invoke check`: plan a runbook, then dry-run it or run it over WinRM.

Each task is thin: its options become one RunRequest, which the rest reads; the engine's
errors become the documented exit codes (0 ok, 1 failed or non-compliant, 2 usage or
configuration error, 3 a host's lock is held, 4 the jump host failed the run: disk full, a
file it cannot write).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from cmrunbook.cli.common import COMMON_HELP, EXIT_OK, build_plan, cli_task
from cmrunbook.errors import UsageError


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunRequest:
    """Everything a `remediate` or `check` command line asks for, defined once: the tasks'
    signatures and `--help` texts are made from these fields (`run_task_signature`), the task
    builds one RunRequest from its arguments, and planning, the engine's options and the
    journal's record of the request all read it."""

    runbook: str = field(metadata={"help": "Runbook id (see `invoke list`)."})
    method: str | None = _option(
        None, "Method of the KB article: 1, 2, 3, 4 or auto (escalates, verifying after each)."
    )
    inventory: str | None = _option(None, COMMON_HELP["inventory"])
    hosts: str | None = _option(None, COMMON_HELP["hosts"])
    set: tuple[str, ...] = _option((), COMMON_HELP["set"])  # the option is --set
    dry_run: bool = _option(False, "Show every step and condition; touch nothing, contact no host.")
    show_scripts: bool = _option(False, "With --dry-run: print the full PowerShell of every step.")
    out: str | None = _option(
        None, "With --dry-run: write one .ps1 file per host and step under this folder."
    )
    rollback: bool = _option(
        False,
        "Run the runbook's rollback steps instead of the procedure; with --resume RUN, only set "
        "back the site-wide changes RUN left outstanding (multicast: the OS images' flag).",
    )
    yes: bool = _option(
        False, "Run destructive steps without asking (they are listed in the dry run)."
    )
    forks: int = _option(5, "How many target hosts run at once (default {default}).")
    non_interactive: bool = _option(
        False, "Never prompt: manual and unconfirmed destructive steps fail clearly."
    )
    assume_manual_done: bool = _option(
        False, "Treat manual (console-only) steps as done by a person beforehand."
    )
    resume: str | None = _option(
        None, "Continue the run in this run folder after each host's last completed step."
    )
    runs: str | None = _option(
        None, "Folder for run folders (journal, scripts, reports); default runs/."
    )
    reports: str | None = _option(
        None, "Also copy each run's reports into this folder (for scheduled runs)."
    )
    keep_days: int = _option(30, "With --reports: delete report folders older than this many days.")
    step_timeout: float = _option(
        600.0, "Seconds allowed for one remote script (default {default:g})."
    )
    time_scale: float = _option(
        1.0, "Multiply log-wait timeouts, polls and reboot waits (e.g. 0.01 in the lab)."
    )
    # `auto` is the default: a client with WinRM is checked on itself, the others from one
    # reading of their site, which decides each name over all its current SMS_R_System records
    # as a client's own query does (docs/reference/FLEET-COMPLIANCE.md, "Modes").
    via: str = _option(
        "auto",
        "Client checks: auto (WinRM clients directly, the rest from one reading of their site), "
        "direct (each client over WinRM, or its own query on the site), site (every client "
        "from its site, one command per site). Only read-only checks read from the site. "
        "Default {default}.",
    )

    @classmethod
    def from_task(cls, runbook: str, options: dict[str, Any]) -> RunRequest:
        """From a task's keyword arguments (invoke gives `--set` as a list, or None)."""
        given = {**options, "set": tuple(options.get("set") or ())}
        return cls(runbook=runbook, **given)

    def journal_record(self) -> dict[str, Any]:
        """What the journal keeps of the request: enough for `--resume` to plan the run again."""
        return {
            "runbook": self.runbook,
            "method": self.method,
            "inventory": self.inventory,
            "hosts": self.hosts,
            "overrides": list(self.set),
            "rollback": self.rollback,
        }

    def resumed_from(self, recorded: dict[str, Any]) -> RunRequest:
        """This request with the plan of the run being resumed (its journal's record); the
        engine's options (forks, waits, prompts) stay as given now."""
        return dataclasses.replace(
            self,
            runbook=recorded.get("runbook", self.runbook),
            method=recorded.get("method"),
            inventory=recorded.get("inventory"),
            hosts=recorded.get("hosts"),
            set=tuple(recorded.get("overrides") or ()),
            rollback=bool(recorded.get("rollback")),
        )

    def engine_options(self, *, restore_only: bool) -> Any:
        from cmrunbook.run.execute import Options

        return Options(
            forks=int(self.forks),
            yes=bool(self.yes),
            non_interactive=bool(self.non_interactive),
            assume_manual_done=bool(self.assume_manual_done),
            step_timeout=float(self.step_timeout),
            time_scale=float(self.time_scale),
            restore_only=restore_only,
            via=self.via,
        )


def run_task_signature(
    positional: str, *, omit: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> tuple[inspect.Signature, dict[str, str]]:
    """A task's signature and help texts from RunRequest's fields: invoke reads the options of
    a task from its function's signature, so this is where the option list is written out.
    `positional` names the runbook argument; `omit` leaves options out; `defaults` changes some
    (check runs 20 hosts at once)."""
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    helps: dict[str, str] = {}
    for f in dataclasses.fields(RunRequest):
        if f.name in omit:
            continue
        name = positional if f.name == "runbook" else f.name
        default = (defaults or {}).get(f.name, f.default)
        if f.name == "set":
            default = None  # invoke's iterable option: a list, empty when not given
        kwargs = {} if default is dataclasses.MISSING else {"default": default}
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, **kwargs))
        helps[name] = f.metadata["help"].format(default=default)
    return inspect.Signature(params), helps


def _with_signature(signature: inspect.Signature) -> Callable[[Any], Any]:
    def apply(fn: Any) -> Any:
        fn.__signature__ = signature
        return fn

    return apply


def run_runbook(request: RunRequest) -> int:
    """Plan, then dry-run or execute; shared by `remediate` and `check`. Returns the exit code.

    `--rollback --resume RUN` sets back only the site-wide changes RUN left outstanding (see
    record/sitestate.py); the run stays resumable (a resumed target makes its changes again)."""
    from cmrunbook.run.sitebatch import VIA_CHOICES

    if request.via not in VIA_CHOICES:
        raise UsageError(f"--via {request.via}: expected one of {', '.join(VIA_CHOICES)}")
    state = None
    restore_only = False
    if request.resume:
        from cmrunbook.record.journal import ResumeState

        state = ResumeState.load(Path(request.resume))
        recorded = state.run.get("request") or {}
        # --rollback on a run that was a rollback itself just resumes it.
        restore_only = request.rollback and not recorded.get("rollback")
        request = request.resumed_from(recorded)
    catalog, plan = build_plan(
        request.runbook,
        inventory=request.inventory,
        method=request.method,
        hosts=request.hosts,
        overrides=list(request.set),
        rollback=request.rollback,
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
    if request.dry_run:
        from cmrunbook.docs.dryrun import print_dry_run

        out_dir = Path(request.out) if request.out else None
        print_dry_run(plan, catalog, sys.stdout, show_scripts=request.show_scripts, out_dir=out_dir)
        return EXIT_OK
    from cmrunbook.run.connect import credentials_for, open_host
    from cmrunbook.run.orchestrate import execute_plan

    opts = request.engine_options(restore_only=restore_only)
    inv = plan.inventory
    creds = credentials_for(inv, interactive=not opts.non_interactive)
    record = {**request.journal_record(), "inventory": plan.inventory.path}
    return execute_plan(
        catalog,
        plan,
        opts,
        runs_dir=Path(request.runs) if request.runs else catalog.work_dir / "runs",
        connect=lambda name: open_host(inv.hosts[name], inv, creds),
        resume=state,
        request=record,
        warnings=warnings,
        after=_reports_hook(catalog, plan, request.reports, request.keep_days),
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


REMEDIATE_SIGNATURE, REMEDIATE_HELP = run_task_signature("runbook")


@cli_task(positional=["runbook"], iterable=["set"], help=REMEDIATE_HELP)
@_with_signature(REMEDIATE_SIGNATURE)
def remediate(c: Any, runbook: str, **options: Any) -> None:
    """Fix a known OSD failure with a runbook: dry run, or run over WinRM on the inventory."""
    code = run_runbook(RunRequest.from_task(runbook, options))
    if code:
        raise Exit(code=code)


CHECK_SIGNATURE, CHECK_HELP = run_task_signature(
    "name", omit=("method", "rollback", "yes"), defaults={"forks": 20}
)
CHECK_HELP["name"] = (
    "Check name: client-hotfix, site-hotfix or nt4 (the runbook id without -check)."
)


@cli_task(positional=["name"], iterable=["set"], help=CHECK_HELP)
@_with_signature(CHECK_SIGNATURE)
def check(c: Any, name: str, **options: Any) -> None:
    """Run a read-only check runbook; exit 1 when any host is non-compliant or unreachable."""
    from cmrunbook.load.project import Project
    from cmrunbook.load.runbook import CHECK_SUFFIXES

    known = Project.find().ids()
    candidates = (name, *(name + suffix for suffix in CHECK_SUFFIXES))
    runbook = next((r for r in candidates if r in known), "")
    if not runbook:
        checks = [r for r in known if r.endswith(CHECK_SUFFIXES)]
        raise UsageError(f"no check '{name}'; known: {', '.join(checks)}")
    code = run_runbook(RunRequest.from_task(runbook, options))
    if code:
        raise Exit(code=code)
