"""A real run from start to end: run folder, locks, confirmations, execution, summary, exit code.

Everything that can refuse (destructive steps without --yes, a lock held, bad credentials source)
refuses before the first remote call, so a refused run changes nothing on any host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import getpass
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from cmrunbook.errors import (
    EXIT_INTERRUPTED,
    EnvironmentFailure,
    Interrupted,
    LockHeld,
    UsageError,
    os_error_text,
)
from cmrunbook.load.inventory import HostView
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import is_read_only_check
from cmrunbook.plan.planner import Plan
from cmrunbook.record.journal import JournalWriter, ResumeState, new_run_dir
from cmrunbook.record.journal_read import JOURNAL_NAME, read_events
from cmrunbook.remote import Remote
from cmrunbook.run.clock import Clock, SystemClock
from cmrunbook.run.console import TextConsole, resume_command
from cmrunbook.run.execute import (
    HostOutcome,
    Options,
    RunInterrupted,
    Runner,
    Sessions,
    destructive_listing,
)
from cmrunbook.run.locks import RUN_LOCK, HostLocks, host_lock_keys, lock_dir
from cmrunbook.run.sitebatch import contacted
from cmrunbook.text import printable

EXIT_OK, EXIT_FAILED = 0, 1


def destructive_steps(plan: Plan, resume: ResumeState | None = None) -> list[str]:
    """The destructive steps to confirm before the run starts: on --resume, only those still
    to run (a step the resumed run completed, or a host it finished, is not asked about again).

    An escalating (auto) plan enters a method only when verification says the failure is still
    there, so its methods' steps are confirmed as each is entered (`HostRun._consent`), not here.
    """
    lines = []
    for hp in plan.hosts:
        prior = resume.hosts.get(hp.target.name) if resume else None
        if prior and prior.finished in ("ok", "non-compliant", "unknown"):
            continue
        done = prior.done if prior else set()
        for stage in hp.stages:
            if plan.escalates and stage.kind == "method":
                continue
            pending = [ps for ps in stage.steps if ps.key not in done]
            lines += destructive_listing(hp.target.name, pending)
    return lines


def consent_of(resume: ResumeState | None) -> str | None:
    """The consent the resumed run was given at its start: "--yes" (every destructive step,
    also those an auto run asks about as it enters a method), "confirmed" (the steps listed
    then), or None."""
    return resume.run.get("consent") if resume else None


def confirm_destructive(
    plan: Plan, options: Options, console: TextConsole, resume: ResumeState | None = None
) -> str | None:
    """Refuse, or ask once listing every destructive step still to run, before anything runs.

    Returns the consent to journal with the run ("--yes", "confirmed" or None when nothing was
    asked). A resumed run keeps the consent its start was given, and asks only about steps
    that the operator was not asked about then. Ctrl-C at the question is `Interrupted`."""
    if options.yes:
        return "--yes"
    kept = set(resume.run.get("consented") or []) if resume else set()
    steps = [line for line in destructive_steps(plan, resume) if line not in kept]
    if not steps:
        return consent_of(resume)
    listing = "\n  ".join(steps)
    if options.non_interactive:
        raise UsageError(
            f"this run has destructive steps and --non-interactive cannot ask:\n  {listing}\n"
            "Review them with --dry-run, then rerun with --yes. Nothing was changed."
        )
    console.print(f"These steps remove or uninstall something:\n  {listing}")
    try:
        confirmed = console.confirm("Run them?")
    except KeyboardInterrupt:
        raise Interrupted("interrupted at the question; nothing was changed") from None
    if not confirmed:
        raise UsageError("not confirmed; nothing was changed")
    return "confirmed"


def execute_plan(
    catalog: Project,
    plan: Plan,
    options: Options,
    *,
    runs_dir: Path,
    connect: Callable[[str], Remote],
    resume: ResumeState | None = None,
    request: dict[str, Any] | None = None,
    console: TextConsole | None = None,
    after: Callable[[Path], None] | None = None,
    warnings: list[str] | None = None,
    clock: Clock | None = None,
) -> int:
    """Run the plan and return the exit code (0 all ok, 1 anything failed or non-compliant).

    ``warnings`` (insecure WinRM settings) go into the journal's run or resume event, from
    which report.json carries them. ``clock`` is what the run's waits sleep on (real time
    unless a test drives it)."""
    console = console or TextConsole()
    if not is_read_only_check(plan.runbook):
        # Only a check that changes nothing may leave hosts' lines out: in a run that changes
        # things, a line such as "could not set back ..." on the 201st host must be seen.
        console.host_lines = sys.maxsize
    if consent_of(resume) == "--yes":
        # --yes at the start answers for the whole run, however often it is resumed.
        options = dataclasses.replace(options, yes=True)
    consent = confirm_destructive(plan, options, console, resume)
    consented = destructive_steps(plan) if consent == "confirmed" else []
    # The hosts' keys first: a run refused for its hosts leaves no empty run folder behind.
    contact = [hp.target for hp in plan.hosts if contacted(plan.runbook, hp, options.via)]
    keys = host_lock_keys(contact + _site_servers(plan), plan.inventory)
    run_dir = resume.run_dir if resume else new_run_dir(runs_dir, plan.runbook.id)
    try:
        with _ctrl_c_ends_at_the_summary() as finishing:
            return _execute(
                catalog,
                plan,
                options,
                keys=keys,
                run_dir=run_dir,
                connect=connect,
                resume=resume,
                request=request,
                console=console,
                after=after,
                warnings=warnings or [],
                clock=clock or SystemClock(),
                consent=(consent, consented),
                finishing=finishing,
            )
    except OSError as exc:
        raise _stopped(exc, run_dir, plan.runbook.id, new=resume is None) from exc


def _stopped(exc: OSError, run_dir: Path, runbook: str, *, new: bool) -> Exception:
    """What a failure of the jump host's files during a run becomes (attack 2c, 4i).

    A run that journaled nothing leaves no run folder (as a refused run); else the journal is
    kept as it is, resumable: its writer stops at the first failed write, and --resume cuts a
    torn last line. A name too long comes from the inventory (exit 2); no room, or any other
    failure of the machine, is an environment failure (exit 4), never "non-compliant" (1).
    """
    if new and not _journaled(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        then = "the run did not start"
    else:
        then = f"the run stopped; continue with: {resume_command(runbook, run_dir)}"
    message = f"{os_error_text(exc)}; {then}"
    return UsageError(message) if exc.errno == errno.ENAMETOOLONG else EnvironmentFailure(message)


def _journaled(run_dir: Path) -> bool:
    """Whether the run folder's journal holds the run's request (what --resume needs)."""
    try:
        events = read_events(run_dir / JOURNAL_NAME)[0]
    except OSError:  # no journal, or none that can be read
        return False
    return any(e.get("event") == "run" for e in events)


def _execute(
    catalog: Project,
    plan: Plan,
    options: Options,
    *,
    keys: dict[str, str],
    run_dir: Path,
    connect: Callable[[str], Remote],
    resume: ResumeState | None,
    request: dict[str, Any] | None,
    console: TextConsole,
    after: Callable[[Path], None] | None,
    warnings: list[str],
    clock: Clock,
    consent: tuple[str | None, list[str]],
    finishing: list[bool],
) -> int:
    targets = [hp.target.name for hp in plan.hosts]
    with _locked(keys, run_dir, new=resume is None):
        if resume:
            # Read again under the lock: the journal read before it may miss the last events of
            # a run that ended (or was killed) in between, and those steps must not run twice.
            resume = ResumeState.load(run_dir)
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
                    warnings=warnings,
                    consent=consent[0],
                    consented=consent[1],
                )
            else:
                journal.write(
                    "resume",
                    argv=sys.argv[1:],
                    user=_user(),
                    restore_only=options.restore_only,
                    warnings=warnings,
                )
            console.print(f"Run folder: {run_dir}")
            sessions = Sessions(connect)
            runner = Runner(
                catalog,
                plan,
                sessions,
                journal,
                console,
                options,
                resume,
                clock=clock,
                stop=console.stopping,
            )
            interrupted = False
            # The inventory and the plan live as long as the run: left out of the cycle
            # collector's passes, which otherwise walk 50,000 clients' plans again and again.
            gc.freeze()
            try:
                outcomes = runner.run()
            except RunInterrupted as exc:
                outcomes, interrupted = exc.outcomes, True
            except KeyboardInterrupt:
                # A second Ctrl-C while the hosts were stopping: they have stopped (the run
                # waited for their threads) and journaled their ends; the summary table has
                # no rows, the reports read the journal.
                outcomes, interrupted = [], True
            finally:
                gc.unfreeze()
                finishing[0] = True
                sessions.close()
            # A check that could not decide (unknown) is reported, not failed; a site-wide
            # change left outstanding is a failure whatever the hosts did.
            site_lines = runner.sites.summary({s.id: s.restored for s in plan.runbook.site_states})
            ok = all(o.status in ("ok", "unknown") for o in outcomes)
            code = EXIT_OK if ok and not runner.sites.unresolved() else EXIT_FAILED
            status = "ok" if code == EXIT_OK else "failed"
            if interrupted:
                code, status = EXIT_INTERRUPTED, "interrupted"
            journal.write("run-end", status=status, exit_code=code)
        finally:
            journal.close()
    if options.restore_only and not site_lines:
        site_lines = ["nothing to set back: the run left no site-wide change outstanding"]
    summary = "\n".join(([summary_table(outcomes)] if outcomes else []) + site_lines)
    (run_dir / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    rows = [(o.host, o.status, o.message) for o in outcomes]
    check = plan.runbook.id.endswith(("-check", "-precheck"))
    console.summary(summary, rows, site_lines, check=check)
    if after:
        after(run_dir)
    if interrupted:
        print(
            f"Interrupted. Continue with: {resume_command(plan.runbook.id, run_dir)}",
            file=sys.stderr,
        )
    if runner.sites.unresolved():
        print(
            "Site-wide changes are still outstanding. Set them back with: "
            + resume_command(plan.runbook.id, run_dir, "--rollback"),
            file=sys.stderr,
        )
    return code


@contextlib.contextmanager
def _ctrl_c_ends_at_the_summary() -> Iterator[list[bool]]:
    """While the run works, Ctrl-C interrupts it (a second one stops waiting for the hosts);
    once it is finishing (the caller sets the flag it is given), Ctrl-C is only noted, so
    that every run ends with its journal's end, summary, reports and exit code. Installed in
    the main thread only, where Python handles signals, and not where SIGINT is ignored (a
    background job's)."""
    finishing = [False]
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        yield finishing
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if not finishing[0]:
            raise KeyboardInterrupt
        print("Ctrl-C: finishing the summary and reports first", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield finishing
    finally:
        signal.signal(signal.SIGINT, previous)


def _site_servers(plan: Plan) -> list[HostView]:
    """The site servers whose site-wide state the runbook changes and that are not targets:
    locked too, so that two runs on DPs of one site never change the same images at once."""
    if not plan.runbook.site_states:
        return []
    targets = {hp.target.name for hp in plan.hosts}
    servers = {s.name: s for s in (plan.inventory.provider_of(hp.target) for hp in plan.hosts)}
    return [servers[name] for name in sorted(servers.keys() - targets)]


@contextlib.contextmanager
def _locked(keys: dict[str, str], run_dir: Path, *, new: bool) -> Iterator[None]:
    """Hold the hosts' locks in the jump host's lock folder, and the run folder's own lock in
    it (so a --resume of a run that still works is refused, whatever --runs it names). A
    resume tries its folder first, to say that; a new run its hosts first, so that one refused
    by a held lock leaves no run folder behind."""
    hosts = HostLocks(lock_dir(), keys, run_dir.name)
    folder = HostLocks(
        run_dir, {RUN_LOCK: f"run folder {run_dir} (a run still working in it)"}, run_dir.name
    )
    with contextlib.ExitStack() as held:
        try:
            for locks in (hosts, folder) if new else (folder, hosts):
                held.enter_context(locks)
        except LockHeld:
            if new:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            raise
        yield


def summary_table(outcomes: list[HostOutcome]) -> str:
    """The summary printed and saved as summary.txt: host names and messages come from the
    inventory and the hosts, so every cell is shown as text (`printable`)."""
    rows: list[tuple[str, ...]] = [("host", "steps done", "result", "duration", "message")]
    for o in outcomes:
        cells = (o.host, str(o.steps_done), o.status, f"{o.duration:.1f}s")
        # The message's first line, split after `printable`: a CR is shown, not a line end.
        first = printable(o.message).split("\n")[0]
        rows.append((*(printable(c, lines=False) for c in cells), first))
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
