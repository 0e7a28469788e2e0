"""A real run from start to end: run folder, locks, confirmations, execution, summary, exit code.

Everything that can refuse (destructive steps without --yes, a lock held, bad credentials source)
refuses before the first remote call, so a refused run changes nothing on any host.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cmrunbook.catalog import Catalog
from cmrunbook.console import TextConsole
from cmrunbook.errors import LockHeld, UsageError
from cmrunbook.execute import (
    HostOutcome,
    Options,
    Remote,
    RunInterrupted,
    Runner,
    Sessions,
    destructive_listing,
)
from cmrunbook.journal import JournalWriter, ResumeState, new_run_dir
from cmrunbook.locks import HostLocks
from cmrunbook.plan import Plan

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C


def destructive_steps(plan: Plan) -> list[str]:
    """The destructive steps to confirm before the run starts.

    An escalating (auto) plan enters a method only when verification says the failure is still
    there, so its methods' steps are confirmed as each is entered (`HostRun._consent`), not here.
    """
    return [
        line
        for hp in plan.hosts
        for stage in hp.stages
        if not (plan.escalates and stage.kind == "method")
        for line in destructive_listing(hp.target.name, stage.steps)
    ]


def confirm_destructive(plan: Plan, options: Options, console: TextConsole) -> None:
    """Refuse, or ask once listing every destructive step, before anything runs."""
    steps = destructive_steps(plan)
    if not steps or options.yes:
        return
    listing = "\n  ".join(steps)
    if options.non_interactive:
        raise UsageError(
            f"this run has destructive steps and --non-interactive cannot ask:\n  {listing}\n"
            "Review them with --dry-run, then rerun with --yes. Nothing was changed."
        )
    console.print(f"These steps remove or uninstall something:\n  {listing}")
    if not console.confirm("Run them?"):
        raise UsageError("not confirmed; nothing was changed")


def execute_plan(
    catalog: Catalog,
    plan: Plan,
    options: Options,
    *,
    runs_dir: Path,
    connect: Callable[[str], Remote],
    resume: ResumeState | None = None,
    request: dict[str, Any] | None = None,
    console: TextConsole | None = None,
    after: Callable[[Path], None] | None = None,
) -> int:
    """Run the plan and return the exit code (0 all ok, 1 anything failed or non-compliant)."""
    console = console or TextConsole()
    confirm_destructive(plan, options, console)
    run_dir = resume.run_dir if resume else new_run_dir(runs_dir, plan.runbook.id)
    targets = [hp.target.name for hp in plan.hosts]
    with _locked(runs_dir / ".locks", targets, run_dir, new=resume is None):
        journal = JournalWriter(run_dir, last_seq=resume.last_seq if resume else 0)
        try:
            if resume is None:
                journal.write(
                    "run",
                    runbook=plan.runbook.id,
                    kb=plan.runbook.source.kb,
                    method=plan.method,
                    rollback=plan.rollback,
                    inventory=plan.inventory.path,
                    targets=targets,
                    params={hp.target.name: hp.params for hp in plan.hosts},
                    request=request or {},
                    argv=sys.argv[1:],
                    user=_user(),
                    dry_run=False,
                )
            else:
                journal.write("resume", argv=sys.argv[1:], user=_user())
            console.print(f"Run folder: {run_dir}")
            sessions = Sessions(connect)
            runner = Runner(catalog, plan, sessions, journal, console, options, resume)
            interrupted = False
            try:
                outcomes = runner.run()
            except RunInterrupted as exc:
                outcomes, interrupted = exc.outcomes, True
            finally:
                sessions.close()
            # A check that could not decide (unknown) is reported, not failed.
            code = EXIT_OK if all(o.status in ("ok", "unknown") for o in outcomes) else EXIT_FAILED
            status = "ok" if code == EXIT_OK else "failed"
            if interrupted:
                code, status = EXIT_INTERRUPTED, "interrupted"
            journal.write("run-end", status=status, exit_code=code)
        finally:
            journal.close()
    summary = summary_table(outcomes)
    (run_dir / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    console.print("")
    console.print(summary)
    if after:
        after(run_dir)
    if interrupted:
        print(
            f"Interrupted. Continue with: invoke remediate {plan.runbook.id} --resume {run_dir}",
            file=sys.stderr,
        )
    return code


@contextlib.contextmanager
def _locked(folder: Path, targets: list[str], run_dir: Path, *, new: bool) -> Iterator[None]:
    """Hold the targets' locks; a run refused by a held lock leaves no empty run folder behind."""
    locks = HostLocks(folder, targets, run_dir.name)
    try:
        locks.__enter__()
    except LockHeld:
        if new:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    try:
        yield
    finally:
        locks.__exit__(None, None, None)


def summary_table(outcomes: list[HostOutcome]) -> str:
    rows = [("host", "steps done", "result", "duration", "message")]
    for o in outcomes:
        rows.append(
            (
                o.host,
                str(o.steps_done),
                o.status,
                f"{o.duration:.1f}s",
                o.message.splitlines()[0] if o.message else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return "\n".join(lines)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")
