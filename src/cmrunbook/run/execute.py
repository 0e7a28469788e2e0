"""Running a plan for real: per target host, in parallel up to --forks, journaled step by step.

A host's failure stops that host's procedure only. Probes are taken once per host and kept in the
journal (Method 3 re-enables the images it found before disabling them, also after a resume);
probes of site-wide state once per site (see record/sitestate.py), whose changes one target of a
site holds at a time and which are set back when a target stops with them changed.
Log monitors are armed before their triggering step; reboots compare boot times and wait for
WinRM to answer again. The transport is injected (`connect`): this module never sees credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cmrunbook.load.catalog import all_steps
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import Probe, SiteStateSpec, is_read_only_check
from cmrunbook.plan.planner import HostPlan, Plan, PlannedStep, Stage
from cmrunbook.record.journal import JournalWriter, ResumeState, step_id
from cmrunbook.record.sitestate import SiteStates
from cmrunbook.record.vocabulary import Event
from cmrunbook.remote import CommandResult, Remote, TransportError
from cmrunbook.render.engine import EngineScript, EngineScripts
from cmrunbook.render.result import ScriptResult, parse_result
from cmrunbook.render.steps import Scripts, render_probe, render_step
from cmrunbook.run.clock import Clock, SystemClock
from cmrunbook.run.console import resume_command, span
from cmrunbook.run.monitor import (
    READ_LIMIT,
    TAIL,
    Confirm,
    distribution_verdict,
    make_watch,
    wait_for_logs,
)
from cmrunbook.run.sitebatch import (
    SiteReadings,
    batched,
    contacted,
    replaced_by_site,
    verdict,
)


class StepFailed(Exception):
    """Ends a host's procedure with a message for the summary."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status


INTERRUPTED_MESSAGE = "interrupted (Ctrl-C); --resume continues from here"


class VerifyInconclusive(StepFailed):
    """A verification that can neither pass nor say "still broken": no escalation on it.

    `verdict` is the verification script's: "unknown" (cannot tell, e.g. no multicast key in
    any registry view) or "not-settled" (the change is still being applied, e.g. the key is
    written but not signed yet). Only positive evidence of failure may send a host into the next
    method's destructive steps (fidelity F3, F4).
    """

    def __init__(self, verdict: str, message: str) -> None:
        super().__init__(message, "stopped")
        self.verdict = verdict


#: What the operator can do when a verification was inconclusive, by verdict.
INCONCLUSIVE_ADVICE = {
    "unknown": "check the DP by hand (the verify step's click path), then --resume",
    "not-settled": 'give the site more time (the article: "wait awhile"; a DP whose key stays '
    "unsigned for several hours may need a restart), then --resume",
}


def destructive_listing(host: str, steps: Iterable[PlannedStep]) -> list[str]:
    """How a confirmation names each destructive step that will run: host, citation, title."""
    return [
        f"{host}: [{ps.citation}] {ps.step.title} (on {ps.run_on})"
        for ps in steps
        if ps.step.destructive and not ps.skip_reason
    ]


class RunInterrupted(Exception):
    """Ctrl-C during a run: every host stopped at its next step or poll; their outcomes."""

    def __init__(self, outcomes: list[HostOutcome]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


@dataclass
class Options:
    forks: int = 5
    yes: bool = False
    non_interactive: bool = False
    assume_manual_done: bool = False
    step_timeout: float = 600.0
    reboot_timeout: float = 900.0
    time_scale: float = 1.0
    #: `--rollback --resume`: only set back the site-wide changes the run left outstanding.
    restore_only: bool = False
    #: `--via`: how client checks reach the clients (see sitebatch.VIA_CHOICES).
    via: str = "direct"


@dataclass
class HostOutcome:
    host: str
    status: str = "ok"
    message: str = ""
    steps_done: int = 0
    duration: float = 0.0


class Sessions:
    """One WinRM shell per host per run; a host's shell serves one command at a time.

    The run has one credential, and a domain locks its account after a few wrong passwords:
    so hosts log on one at a time until one host has accepted the credential (a Remote with
    ``open`` logs on and opens its shell alone; any other runs its first script), and once any
    host rejects it, hosts not yet reached are not tried with it at all (their call raises a
    ``not-tried`` TransportError naming the host that rejected it).
    """

    def __init__(self, connect: Callable[[str], Remote]) -> None:
        self._connect = connect
        self._slots: dict[str, tuple[threading.Lock, list[Remote | None]]] = {}
        self._guard = threading.Lock()
        #: Hosts that have run a script in this run, whatever happened to them later.
        self.answered: set[str] = set()
        self._first = threading.Lock()  # held by the host trying the credential first
        self._accepted = threading.Event()
        self._rejected_by: str | None = None

    def _slot(self, host: str) -> tuple[threading.Lock, list[Remote | None]]:
        with self._guard:
            return self._slots.setdefault(host, (threading.Lock(), [None]))

    def run(self, host: str, script: str, deadline: float) -> CommandResult:
        lock, cell = self._slot(host)
        with lock:
            if host not in self.answered and not self._accepted.is_set():
                with self._first:
                    if not self._accepted.is_set():  # else: accepted while this host waited
                        ran = self._call(host, cell, lambda r: _log_on(r, script, deadline))
                        if ran is not None:
                            return ran
            result = self._call(host, cell, lambda remote: remote.run(script, deadline=deadline))
            assert result is not None
            return result

    def _call(
        self,
        host: str,
        cell: list[Remote | None],
        action: Callable[[Remote], CommandResult | None],
    ) -> CommandResult | None:
        rejected_by = self._rejected_by
        if rejected_by is not None and host not in self.answered:
            why = (
                "not tried again: it rejected the credentials"
                if rejected_by == host
                else f"not tried: credentials rejected by {rejected_by}"
            )
            raise TransportError(host, "not-tried", why)
        remote = cell[0]
        if remote is None:
            remote = cell[0] = self._connect(host)
        try:
            result = action(remote)
        except TransportError as exc:
            self._drop(cell)
            if exc.kind == "unauthorized":
                self._rejected_by = self._rejected_by or host
            elif exc.kind == "fault":  # a WS-Man fault comes on an authenticated connection
                self._accepted.set()
            raise
        self.answered.add(host)
        self._accepted.set()
        return result

    def reset(self, host: str) -> None:
        """Forget a host's shell (it is rebooting); the next run opens a new one."""
        lock, cell = self._slot(host)
        with lock:
            self._drop(cell)

    @staticmethod
    def _drop(cell: list[Remote | None]) -> None:
        if cell[0] is not None:
            with contextlib.suppress(Exception):  # the shell may be gone with its host
                cell[0].close()
            cell[0] = None

    def close(self) -> None:
        for lock, cell in list(self._slots.values()):
            with lock:
                self._drop(cell)


def _log_on(remote: Remote, script: str, deadline: float) -> CommandResult | None:
    """Log on to a host: open its shell if the Remote can do that alone (None), else run the
    script, whose logon is the first thing it does (its result)."""
    opener = getattr(remote, "open", None)
    if opener is None:
        return remote.run(script, deadline=deadline)
    opener(deadline=deadline)
    return None


class Console(Protocol):
    def step(self, host: str, text: str) -> None: ...
    def progress(self, host: str, text: str) -> None: ...
    def confirm(self, question: str) -> bool: ...


@dataclass
class Runner:
    """Runs one plan; `run()` returns each target's outcome."""

    catalog: Project
    plan: Plan
    sessions: Sessions
    journal: JournalWriter
    console: Console
    options: Options
    resume: ResumeState | None = None
    prompt_lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    #: Every wait of the run sleeps on this clock, which the stop event (Ctrl-C) cuts short.
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        self.sites = SiteStates(self.journal, self.resume.site_events if self.resume else ())
        self.scripts = Scripts(self.catalog)
        #: A check that changes nothing on any host: a step's start is written before the step
        #: runs but not waited onto the disk (`durable`), since no change can follow it; one a
        #: power cut took only makes --resume read that host again.
        self.read_only = is_read_only_check(self.plan.runbook)
        self.readings = SiteReadings(self.catalog, self.plan, self.scripts)

    def run(self) -> list[HostOutcome]:
        try:
            self._set_back_outstanding()
        except KeyboardInterrupt:
            # Ctrl-C while setting back what a killed run left: journaled as any interruption
            # (run-end, summary, the --rollback --resume hint), not a bare traceback.
            self.stop.set()
            raise RunInterrupted([]) from None
        if self.options.restore_only:
            return []
        # How many targets still need each host: a host's shell closes when the last one is done
        # (a thousand clients would otherwise wait for a thousand serial closes at the end).
        self._users: dict[str, int] = {}
        for hp in self.plan.hosts:
            for name in {hp.target.name} | {ps.run_on for ps in hp.all_steps()}:
                self._users[name] = self._users.get(name, 0) + 1
        self._users_lock = threading.Lock()
        direct, by_site = self._tasks()
        with ThreadPoolExecutor(max_workers=max(1, self.options.forks)) as pool:
            futures = [pool.submit(self._direct, hp) for hp in direct]
            futures += [pool.submit(self._site_clients, hps) for hps in by_site]
            try:
                return self._in_plan_order([f.result() for f in futures])
            except KeyboardInterrupt:
                # Only the main thread sees Ctrl-C: tell the hosts, which stop after their
                # current remote call (a step or a log poll) and journal where they are.
                self.stop.set()
                raise RunInterrupted(self._in_plan_order([f.result() for f in futures])) from None

    def _tasks(self) -> tuple[list[HostPlan], list[list[HostPlan]]]:
        """The targets run each in its own task, and the clients never contacted (read only
        from their site), one list per site server (the hosts their steps run on): those only
        take their verdicts from one reading, and a thread each only made 50,000 of them queue
        on the GIL and the journal."""
        rb, via = self.plan.runbook, self.options.via
        direct: list[HostPlan] = []
        by_site: dict[str, list[HostPlan]] = {}
        for hp in self.plan.hosts:
            if contacted(rb, hp, via):
                direct.append(hp)
            else:
                servers = sorted({ps.run_on for ps in hp.all_steps()} - {hp.target.name})
                by_site.setdefault(",".join(servers), []).append(hp)
        return direct, list(by_site.values())

    def _hosts(self, hps: list[HostPlan]) -> list[HostOutcome]:
        return [self._host(hp) for hp in hps]

    def _direct(self, hp: HostPlan) -> list[HostOutcome]:
        """A target run on its own hosts, its events journaled in one batch that is written
        whenever the host waits (a remote call, a pause, a question: `HostRun._settle_journal`)
        and at its end: two writes for a one-step check instead of one per event, and a
        write-ahead event still on disk before the remote call it precedes."""
        with self.journal.batch():
            return self._hosts([hp])

    def _site_clients(self, hps: list[HostPlan]) -> list[HostOutcome]:
        """One site's clients read from the site, one after the other in one thread, their
        events journaled in batches; each is journaled and reported as if it ran its step."""
        with self.journal.batch():
            return self._hosts(hps)

    def _in_plan_order(self, done: list[list[HostOutcome]]) -> list[HostOutcome]:
        by_name = {o.host: o for outcomes in done for o in outcomes}
        return [by_name[hp.target.name] for hp in self.plan.hosts]

    def _set_back_outstanding(self) -> None:
        """Set back the site-wide changes the resumed run left outstanding (it was killed, or
        its own setting back failed), before any target goes on: a run never leaves a change
        to the next one, and each target that is resumed makes its changes again."""
        owners = {h for items in self.sites.ledger.outstanding.values() for h in items.values()}
        for hp in self.plan.hosts:
            if hp.target.name in owners:
                HostRun(self, hp).set_back()

    def _host(self, hp: HostPlan) -> HostOutcome:
        try:
            return HostRun(self, hp).execute()
        finally:
            for name in {hp.target.name} | {ps.run_on for ps in hp.all_steps()}:
                with self._users_lock:
                    self._users[name] -= 1
                    last = self._users[name] == 0
                if last:
                    self.sessions.reset(name)


class HostRun:
    """The procedure for one target host."""

    def __init__(self, runner: Runner, hp: HostPlan) -> None:
        self.r = runner
        self.hp = hp
        self.name = hp.target.name
        self.engine = EngineScripts(runner.catalog, runner.plan, hp)
        prior = runner.resume.hosts.get(self.name) if runner.resume else None
        self.done: set[str] = set(prior.done) if prior else set()
        self.stages_done: dict[str, str] = dict(prior.stages) if prior else {}
        self.probes: dict[str, Any] = dict(prior.probes) if prior else {}
        self.armed: dict[str, dict[str, Any]] = dict(prior.armed) if prior else {}
        self.finished = prior.finished if prior else None
        # Change steps whose change was set back after a stop run again before the target goes
        # on: the steps after them expect the change made.
        self.done -= runner.sites.reopened(self.name)
        self.site = hp.target.site_code
        # Why the change asked for a restart (RestartNeeded / 3010, a setup log's prompt) since
        # the last one; journaled, so a resumed run restarts for a request made before it.
        self.restart_asked: list[str] = list(prior.restart_asked) if prior else []
        self.outcome = HostOutcome(self.name)
        self.contacted = False
        # What the check steps said (data.compliance); "unknown" wins over "compliant".
        self.compliance: tuple[str, str] | None = None

    # -- the procedure --------------------------------------------------------------------
    def execute(self) -> HostOutcome:
        start = self.r.clock.now()
        j = self.r.journal
        if self.finished in ("ok", "non-compliant", "unknown"):
            self.outcome.status = self.finished
            self.outcome.message = "finished in the run being resumed"
            self.r.console.step(self.name, f"already {self.finished} in the resumed run")
            return self.outcome
        if self.r.resume:
            j.write("host-resume", host=self.name, done=sorted(self.done))
        try:
            self._stages()
        except StepFailed as exc:
            self.outcome.status = exc.status
            self.outcome.message = str(exc)
        except TransportError as exc:
            if exc.kind == "not-tried":
                self.outcome.status = "not-tried"
            else:
                self.outcome.status = "failed" if self.contacted else "unreachable"
            self.outcome.message = self._transport_failure(exc)
        finally:
            self.set_back()
        self.outcome.duration = self.r.clock.now() - start
        j.write(
            "host-end",
            host=self.name,
            status=self.outcome.status,
            message=self.outcome.message,
            steps_done=self.outcome.steps_done,
            duration=round(self.outcome.duration, 3),
        )
        self.r.console.step(
            self.name, f"{self.outcome.status.upper()}: {self.outcome.message}".rstrip(": ")
        )
        return self.outcome

    def _stages(self) -> None:
        stages = self.hp.stages
        escalate = self.r.plan.escalates
        for index, stage in enumerate(stages):
            previous = self.stages_done.get(stage.name)
            if previous is not None:
                if stage.kind == "verify" and previous == "passed":
                    self.outcome.message = f"verified in the resumed run ({stage.title})"
                    return
                if stage.kind == "verify" and previous == "failed" and escalate:
                    continue
            if stage.kind == "method" and escalate:
                self._consent(stage)
            try:
                passed = self._stage(stage)
            except VerifyInconclusive as exc:
                self.r.journal.write(
                    "stage-end", host=self.name, stage=stage.name, status=exc.verdict
                )
                raise StepFailed(
                    f"{stage.title}: {exc}; stopped without escalating: "
                    + INCONCLUSIVE_ADVICE.get(exc.verdict, "--resume when it is known"),
                    "stopped",
                ) from None
            if stage.kind != "verify":
                continue
            self.r.journal.write(
                "stage-end",
                host=self.name,
                stage=stage.name,
                status="passed" if passed else "failed",
            )
            if passed:
                self.outcome.message = (
                    "multicast already works; nothing to do"
                    if stage.name == "verify:0"
                    else f"verified after {stage.title.removeprefix('Verify after ')}"
                )
                return
            more = any(s.kind == "method" for s in stages[index + 1 :])
            if not (escalate and more):
                raise StepFailed(
                    f"still failing after {stage.title.removeprefix('Verify after ')}"
                    + self._next_hint(stage)
                )
            self.r.console.step(
                self.name, f"{stage.title}: still failing; escalating to the next method"
            )
        if self.compliance is not None and self.outcome.status == "ok":
            # A check that could not decide is not a pass: say so in the summary and report.
            state, message = self.compliance
            if state == "unknown":
                self.outcome.status = "unknown"
            self.outcome.message = self.outcome.message or message
        if self.outcome.status == "ok" and not self.outcome.message:
            self.outcome.message = "all steps done"

    def _consent(self, stage: Stage) -> None:
        """Before --method auto enters a method with destructive steps still to run, ask.

        A fixed --method asks once, for all of them, before the run starts
        (`orchestrate.confirm_destructive`); auto cannot know upfront which methods a host will
        need, so it asks as each is entered, listing that method's steps. --yes answers for the
        operator; --non-interactive without --yes stops the host there, with the list.
        """
        # A loop step is done item by item (`key#item`), never as a whole: it stays listed until
        # the method ends, so a resumed run asks again rather than running its other items.
        pending = [ps for ps in stage.steps if ps.key not in self.done]
        listing = destructive_listing(self.name, pending)
        if not listing:
            return
        j = self.r.journal
        if self.r.options.yes:
            j.write("consent", host=self.name, stage=stage.name, steps=listing, answer="--yes")
            return
        shown = "\n  ".join(listing)
        if self.r.options.non_interactive:
            j.write("consent", host=self.name, stage=stage.name, steps=listing, answer="cannot ask")
            raise StepFailed(
                f"{stage.title} has destructive steps and --non-interactive cannot ask:\n  "
                f"{shown}\nNothing of {stage.title} was run. Review them with --dry-run, then "
                f"continue with: {resume_command(self.r.plan.runbook.id, j.run_dir, '--yes')}",
                "stopped",
            )
        self._settle_journal()
        with self.r.prompt_lock:
            ok = self.r.console.confirm(
                f"[{self.name}] {stage.title} removes or uninstalls something:\n  {shown}\n"
                "Run them?"
            )
        self._check_stop()  # a question cut short by Ctrl-C is no answer
        answer = "confirmed" if ok else "declined"
        j.write("consent", host=self.name, stage=stage.name, steps=listing, answer=answer)
        if not ok:
            raise StepFailed(f"{stage.title} not confirmed; nothing of it was run", "stopped")

    def _next_hint(self, stage: Stage) -> str:
        ids = [m.id for m in self.r.plan.runbook.methods]
        current = stage.name.split(":", 1)[1]
        if current in ids and ids.index(current) + 1 < len(ids):
            return f"; next: --method {ids[ids.index(current) + 1]}"
        return "; no method left: open a support case"

    def _stage(self, stage: Stage) -> bool:
        """Run a stage; False only for a verification that reports failure."""
        groups = list(_loop_groups(stage.steps))
        for group in groups:
            probe_id = group[0].step.for_each
            if probe_id is None:
                for ps in group:
                    if not self._step(stage, ps, None):
                        return False
                continue
            runnable = [ps for ps in group if not ps.skip_reason]
            for ps in group:
                if ps.skip_reason:
                    self._skip(ps, None, ps.skip_reason)
            if not runnable:
                continue
            items = self._probe(probe_id)
            if not items:
                for ps in runnable:
                    self._skip(ps, None, f"probe {probe_id} found nothing to loop over")
                continue
            for item in items:
                for ps in runnable:
                    if not self._step(stage, ps, item):
                        return False
        return True

    # -- one step ---------------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self.r.stop.is_set():
            raise StepFailed(INTERRUPTED_MESSAGE, "interrupted")

    def _pause(self, seconds: float) -> None:
        """Wait between two checks or polls; ends the step as interrupted on Ctrl-C, within a
        second, rather than after the wait (the run's clock watches the stop event)."""
        self._settle_journal()
        self.r.clock.sleep(seconds, self.r.stop)
        self._check_stop()

    def _settle_journal(self) -> None:
        """Before this host waits (a remote call, a pause, a question, another target): what it
        journaled is written, and on disk if a write-ahead event is among it. A host's events
        wait in its batch only while it computes, so a kill loses none that a wait preceded."""
        self.r.journal.settle()

    def _step(
        self, stage: Stage, ps: PlannedStep, item: dict[str, Any] | None, setting_back: bool = False
    ) -> bool:
        """Run one step (or one loop item of it); `setting_back` runs a restore step after a
        stop: again, and even when the run is being stopped."""
        item_id = _item_id(item)
        sid = step_id(ps.key, item_id)
        if sid in self.done and not setting_back:
            return True
        if not setting_back:
            self._check_stop()
        skip = ps.skip_reason
        via = self.r.options.via
        if replaced_by_site(self.r.plan.runbook, ps, self.hp, via):
            skip = "--via site: checked from the site's inventory"
        elif via == "site" and batched(self.r.plan.runbook, ps, via):
            skip = None  # --via site reads every client from its site, WinRM or not
        if skip:
            self._skip(ps, item_id, skip)
            return True
        step = ps.step
        if step.when_probe:
            value = self._probe(step.when_probe.probe)
            if value != step.when_probe.equals:
                self._skip(ps, item_id, f"probe {step.when_probe.probe} reported {value!r}")
                return True
        if not setting_back:
            self._site_change(ps, item_id)
        j = self.r.journal
        j.write(
            "step-start",
            host=self.name,
            key=ps.key,
            item=item_id,
            on=ps.run_on,
            citation=ps.citation,
            title=step.title,
            durable=not self.r.read_only,
        )
        self.r.console.step(
            self.name, f"[{ps.citation}] {step.title}" + (f" ({item_id})" if item_id else "")
        )
        started = self.r.clock.now()
        for armed in ps.arms:
            self._arm(armed, item)
        try:
            status, message, data, lines = self._perform(stage, ps, item)
        except StepFailed as exc:
            self._end(ps, item_id, exc.status, str(exc), None, getattr(exc, "lines", []), started)
            if stage.kind == "verify" and exc.status == "failed":
                return False
            raise
        except TransportError as exc:
            self._end(ps, item_id, "failed", self._transport_failure(exc), None, [], started)
            raise
        self._end(ps, item_id, status, message, data, lines, started)
        self._site_restored(ps, item_id, compensated=setting_back)
        return True

    # -- site-wide state ----------------------------------------------------------------------
    def _site_change(self, ps: PlannedStep, item_id: str | None) -> None:
        """Before a step that changes site-wide state: the state saved, the site held by this
        target (waiting for another that holds it), and the change journaled ahead."""
        effect = ps.step.site_state
        if effect is None or effect.effect == "restore":
            return
        state = self._site_state(effect.state)
        for probe_id in (state.items, *state.read_by):
            self._probe(probe_id)

        def waiting(holder: str) -> None:
            self.r.console.step(
                self.name, f"waiting: {holder} holds {state.title} of site {self.site} changed"
            )

        self._settle_journal()
        if not self.r.sites.open(self.site, self.name, self.r.stop, waiting):
            raise StepFailed(INTERRUPTED_MESSAGE, "interrupted")
        self.r.sites.record(
            Event.SITE_CHANGED,
            site=self.site,
            state=state.id,
            item=item_id,
            host=self.name,
            step=step_id(ps.key, item_id),
        )

    def _site_restored(self, ps: PlannedStep, item_id: str | None, *, compensated: bool) -> None:
        """After a completed restore: the item is set back; with nothing of the site left
        changed by this target, the next target of the site may go on."""
        effect = ps.step.site_state
        if effect is None or effect.effect == "change":
            return
        if item_id in self.r.sites.outstanding(self.site, effect.state):
            self.r.sites.record(
                Event.SITE_RESTORED,
                site=self.site,
                state=effect.state,
                item=item_id,
                host=self.name,
                step=step_id(ps.key, item_id),
                compensated=compensated,
            )
        if not self.r.sites.holds(self.site, self.name):
            self.r.sites.close(self.site, self.name)

    def _site_state(self, state_id: str) -> SiteStateSpec:
        state = self.r.plan.runbook.site_state(state_id)
        assert state is not None  # the catalog checks every site_state reference
        return state

    def set_back(self) -> None:
        """Run the restore step for every item this target left changed (failure, timeout,
        Ctrl-C, or a killed run being resumed), then let the next target of the site go on.
        An item whose restore fails stays outstanding: the summary names it."""
        rb = self.r.plan.runbook
        try:
            for state in rb.site_states:
                mine = [
                    item
                    for item, host in self.r.sites.outstanding(self.site, state.id).items()
                    if host == self.name
                ]
                if mine:
                    self._compensate(state, mine)
        finally:
            self.r.sites.close(self.site, self.name)

    def _compensate(self, state: SiteStateSpec, items: list[str]) -> None:
        step = next(s for _, s in all_steps(self.r.plan.runbook) if s.id == state.restore)
        provider = self.r.plan.inventory.provider_of(self.hp.target)
        ps = PlannedStep(
            key=f"set-back/{step.id}",
            step=step,
            citation=step.kb,
            run_on=provider.name,
            note="set back after the run stopped",
        )
        stage = Stage("set-back", "Set back site-wide changes", "set-back", [ps])
        saved = {_item_id(i): i for i in self._probe(state.items)}
        self.r.console.step(
            self.name, f"setting back {state.title} for {', '.join(items)} (the run stopped)"
        )
        for item_id in items:
            item = saved.get(item_id)
            try:
                if item is None:
                    raise StepFailed(f"{item_id} is not among the items saved before the change")
                self._step(stage, ps, item, setting_back=True)
            except StepFailed as exc:
                self.r.console.step(self.name, f"could not set back {item_id}: {exc}")
            except TransportError as exc:
                why = self._transport_failure(exc)
                self.r.console.step(self.name, f"could not set back {item_id}: {why}")

    def _perform(
        self, stage: Stage, ps: PlannedStep, item: dict[str, Any] | None
    ) -> tuple[str, str, Any, list[str]]:
        kind = ps.step.kind
        if kind == "manual":
            return self._manual(ps)
        if kind == "reboot":
            return self._reboot(ps)
        if kind == "wait_log":
            return self._wait(ps, item)
        if batched(self.r.plan.runbook, ps, self.r.options.via):
            result = self._from_site(ps)
        else:
            script = render_step(
                self.r.catalog, self.r.plan, self.hp, ps, item, scripts=self.r.scripts
            )
            assert script is not None
            name = f"{ps.key}#{_item_id(item)}" if item else ps.key
            result = self._settle(ps, name, script, self._script(ps.run_on, name, script))
        if result.reboot_required:
            self._restart_asked(f"{ps.key} asked for a restart")
        data = result.data
        compliance = data.get("compliance") if isinstance(data, dict) else None
        decided = self.compliance is not None and self.compliance[0] == "unknown"
        if result.ok and compliance in ("compliant", "unknown") and not decided:
            self.compliance = (str(compliance), result.message)
        if not result.ok:
            if compliance == "non-compliant":
                raise StepFailed(result.message or "non-compliant", "non-compliant")
            verdict = data.get("verdict") if isinstance(data, dict) else None
            if stage.kind == "verify" and verdict in ("unknown", "not-settled"):
                raise VerifyInconclusive(str(verdict), result.message)
            raise StepFailed(result.message or "the script reported failure")
        status = "changed" if result.changed else "ok"
        return status, result.message, data, []

    def _from_site(self, ps: PlannedStep) -> ScriptResult:
        """This client's result from its site's one reading (made now if no target of the
        site has made it yet)."""
        reading, rows = self.r.readings.reading(
            self.hp, ps, lambda script: self._script(ps.run_on, f"{ps.key}#site", script)
        )
        if not reading.ok:
            raise StepFailed(reading.message or f"{ps.run_on}: the site reading failed")
        required = reading.data.get("required") if isinstance(reading.data, dict) else None
        return verdict(reading, rows, self.name, str(required))

    def _settle(
        self, ps: PlannedStep, name: str, script: str, result: ScriptResult
    ) -> ScriptResult:
        """Run the check again until it passes or its settle time (plan) is over.

        The site applies some changes asynchronously, for up to hours (the MP signing a DP's
        multicast key); Ctrl-C still ends the wait at once.
        """
        scale = self.r.options.time_scale
        clock = self.r.clock
        until = clock.now() + ps.settle * scale
        poll = max(0.05, min(300.0, ps.settle / 10) * scale)
        total = ps.settle * scale
        while not result.ok and clock.now() < until:
            waited = span(total - (until - clock.now()))
            self.r.console.progress(
                self.name, f"not yet ({waited} of {span(total)}): {result.message[:80]}"
            )
            self._pause(min(poll, max(0.0, until - clock.now())))
            result = self._script(ps.run_on, name, script)
        return result

    def _restart_asked(self, why: str) -> None:
        self.restart_asked.append(why)
        self.r.journal.write("restart-asked", host=self.name, reason=why)

    def _end(
        self,
        ps: PlannedStep,
        item_id: str | None,
        status: str,
        message: str,
        data: Any,
        lines: list[str],
        started: float,
    ) -> None:
        duration = self.r.clock.now() - started
        self.r.journal.write(
            "step-end",
            host=self.name,
            key=ps.key,
            item=item_id,
            status=status,
            message=message,
            data=data,
            duration=round(duration, 3),
            log_lines=lines,
        )
        if status not in ("failed", "interrupted", "stopped"):
            self.done.add(step_id(ps.key, item_id))
            self.outcome.steps_done += 1
        self.r.console.step(
            self.name,
            f"  -> {status}" + (f": {message}" if message else "") + f" ({duration:.1f}s)",
        )

    def _skip(self, ps: PlannedStep, item_id: str | None, reason: str) -> None:
        sid = step_id(ps.key, item_id)
        if sid in self.done:
            return
        self.r.journal.write(
            "step-end",
            host=self.name,
            key=ps.key,
            item=item_id,
            status="skipped",
            message=reason,
            data=None,
            duration=0,
            log_lines=[],
        )
        self.done.add(sid)
        self.r.console.step(self.name, f"[{ps.citation}] {ps.step.title}: skipped ({reason})")

    # -- remote calls -----------------------------------------------------------------------
    def _transport_failure(self, exc: TransportError) -> str:
        """The error as the operator should read it.

        A host that answered earlier in this run and now refuses or drops the connection is far
        more likely restarting (an installer or a person rebooted it) than missing its WinRM
        listener, and the way on is to wait and resume, not to check the listener.
        """
        if exc.host in self.r.sessions.answered and exc.kind in ("refused", "reset"):
            hint = (
                "it answered earlier in this run, so it may be restarting; --resume when it is back"
            )
            return str(TransportError(exc.host, exc.kind, exc.message, hint))
        return str(exc)

    def _script(self, host: str, name: str, script: str) -> ScriptResult:
        self.r.journal.save_script(self.name, host, name, script)
        self._settle_journal()  # write-ahead: what this thread journaled is on disk first
        res = self.r.sessions.run(host, script, self.r.options.step_timeout)
        self.contacted = True
        parsed = parse_result(res.stdout)
        if parsed is None:
            detail = (res.stderr or res.stdout).strip().splitlines()
            tail = " | ".join(detail[-5:]) if detail else f"exit code {res.exit_code}, no output"
            raise StepFailed(f"{host}: the script ended without a result: {tail}")
        return parsed

    def _engine(self, host: str, made: EngineScript) -> ScriptResult:
        return self._script(host, f"engine-{made.name}", made.text)

    def _probe(self, probe_id: str) -> Any:
        if probe_id in self.probes:
            return self.probes[probe_id]
        rb = self.r.plan.runbook
        probe = rb.probe(probe_id)
        assert probe is not None
        host, script = render_probe(self.r.catalog, self.r.plan, self.hp, probe)

        def take() -> Any:
            result = self._script(host, f"probe-{probe.id}", script)
            if not result.ok:
                raise StepFailed(f"probe {probe_id} failed on {host}: {result.message}")
            return _probe_value(probe, result.data)

        if any(probe_id in (s.items, *s.read_by) for s in rb.site_states):
            # Site-wide: once per site, before any change, shared by its targets. The script
            # without its header (which names the target) tells whether two targets' probes
            # would ask the same question.
            digest = hashlib.sha256(script.split("\n", 1)[-1].encode()).hexdigest()[:16]
            self._settle_journal()  # another target may be reading it: a wait
            value = self.r.sites.snapshot(
                self.site, probe_id, digest, self.name, lambda: (host, take())
            )
            # The site server answered for this target, whichever target asked it first: a
            # target that fails later has "failed", not "unreachable", as when each probed.
            self.contacted = True
        else:
            value = take()
        self.probes[probe_id] = value
        self.r.journal.write("probe", host=self.name, probe=probe_id, on=host, value=value)
        return value

    def _manual(self, ps: PlannedStep) -> tuple[str, str, Any, list[str]]:
        step = ps.step
        if self.r.options.assume_manual_done:
            return "manual-confirmed", "assumed done (--assume-manual-done)", None, []
        if self.r.options.non_interactive:
            raise StepFailed(
                f"manual step needs a person: {step.click_path} Rerun with --assume-manual-done "
                "once it is done, or without --non-interactive to confirm it."
            )
        self._settle_journal()
        with self.r.prompt_lock:
            ok = self.r.console.confirm(
                f"[{self.name}] MANUAL: {step.title}\n  {step.click_path}\n"
                f"  Expect: {step.expect}\n  Done?"
            )
        self._check_stop()  # a question cut short by Ctrl-C is no answer
        if not ok:
            raise StepFailed(f"manual step not confirmed: {step.title}", "stopped")
        return "manual-confirmed", "confirmed by the operator", None, []

    # -- log monitors -----------------------------------------------------------------------
    def _wait_step(self, key: str) -> PlannedStep:
        return next(s for s in self.hp.all_steps() if s.key == key)

    def _arm(self, wait_key: str, item: dict[str, Any] | None) -> None:
        wait_ps = self._wait_step(wait_key)
        w = wait_ps.step.wait
        assert w is not None
        aid = step_id(wait_key, _item_id(item))
        if aid in self.armed:
            return
        dirs = self.hp.target.vars.get("log_dirs") or self.r.catalog.logs.dirs
        result = self._engine(wait_ps.run_on, self.engine.log_arm(wait_ps.run_on, w.logs, dirs))
        if not result.ok:
            raise StepFailed(f"cannot arm the log monitor on {wait_ps.run_on}: {result.message}")
        for log in w.logs:
            if self.r.catalog.logs.expectation(log, w.expect).confirm:
                # The second signal's state before the trigger: what "newer" is measured from.
                result.data[log]["baseline"] = self._dist_status(wait_ps, item)
        self.armed[aid] = result.data
        self.r.journal.write(
            "log-armed", host=self.name, key=aid, on=wait_ps.run_on, logs=result.data
        )

    def _wait(
        self, ps: PlannedStep, item: dict[str, Any] | None
    ) -> tuple[str, str, Any, list[str]]:
        w = ps.step.wait
        assert w is not None
        aid = step_id(ps.key, _item_id(item))
        if aid not in self.armed:
            # Resumed after the trigger ran in a run that died before arming was journaled: read
            # the whole log from the start rather than miss the lines.
            self._arm(ps.key, item)
            for entry in self.armed[aid].values():
                entry["size"] = 0
        armed = self.armed[aid]
        watches, confirm = [], None
        for log in w.logs:
            exp = self.r.catalog.logs.expectation(log, w.expect)
            entry = armed[log]
            watches.append(
                make_watch(
                    log,
                    exp,
                    item,
                    path=entry.get("path"),
                    offset=int(entry["size"]),
                    candidates=list(entry.get("candidates") or []),
                )
            )
            if exp.confirm:
                confirm = self._confirm(ps, item, list(entry.get("baseline") or []))
        scale = self.r.options.time_scale
        timeout, poll = w.timeout * scale, max(0.05, w.poll * scale)

        def read(request: dict[str, dict[str, Any]]) -> dict[str, Any]:
            self._check_stop()
            res = self._engine(ps.run_on, self.engine.log_read(ps.run_on, request, READ_LIMIT))
            if not res.ok:
                raise StepFailed(f"cannot read {', '.join(request)} on {ps.run_on}: {res.message}")
            return res.data or {}

        logs = ", ".join(w.logs)

        def progress(elapsed: float, last: str) -> None:
            self.r.console.progress(
                self.name, f"waiting for {logs} ({span(elapsed)} of {span(timeout)}): {last[:100]}"
            )

        outcome = wait_for_logs(
            watches,
            read,
            timeout=timeout,
            poll=poll,
            confirm=confirm,
            progress=progress,
            sleep=self._pause,
            clock=self.r.clock.now,
        )
        if outcome.reboot_requested:
            self._restart_asked(f"{ps.key}: the log asked for a restart")
        if outcome.status != "ok":
            # A resumed wait goes on after the lines already judged, not back to the failure line.
            for watch in watches:
                armed[watch.log] = {**armed[watch.log], "size": watch.offset, "path": watch.path}
            self.r.journal.write("log-armed", host=self.name, key=aid, on=ps.run_on, logs=armed)
            shown = "\n    ".join(outcome.lines[-TAIL:]) or "(no new lines)"
            raise StepFailedWithLines(
                f"{outcome.message}\n    last lines read:\n    {shown}", outcome.lines
            )
        return (
            "ok",
            outcome.message,
            {"polls": outcome.polls, "bytes": sum(x.bytes_read for x in watches)},
            outcome.lines,
        )

    def _dist_status(self, ps: PlannedStep, item: dict[str, Any] | None) -> list[Any]:
        """The package's distribution status rows (dp, state, version) on the SMS Provider."""
        package_id = str((item or {}).get("PackageID", ""))
        res = self._engine(ps.run_on, self.engine.dist_status(ps.run_on, package_id))
        if not res.ok:
            raise StepFailed(f"cannot read the distribution status of {package_id}: {res.message}")
        return list(res.data or [])

    def _confirm(
        self, ps: PlannedStep, item: dict[str, Any] | None, baseline: list[Any]
    ) -> Confirm:
        """The distribution-status second signal, asked on each poll of the wait."""
        package_id = str((item or {}).get("PackageID", ""))
        return lambda: distribution_verdict(package_id, self._dist_status(ps, item), baseline)

    # -- reboots ------------------------------------------------------------------------------
    def _reboot(self, ps: PlannedStep) -> tuple[str, str, Any, list[str]]:
        host = ps.run_on
        # "If you are prompted, restart the server" (001, Method 4 steps 6 and 10): only the
        # change's own request counts, not a restart another change left pending on the machine
        # (PendingFileRenameOperations and the like; fidelity F13).
        reasons = list(self.restart_asked)
        if ps.step.reboot == "if_pending" and not reasons:
            return "skipped", "the change before it did not ask for a restart", None, []
        before = self._engine(host, self.engine.boot_time(host)).data
        self._engine(host, self.engine.restart(host, reason=f"cmrunbook: {ps.citation}"))
        self.r.sessions.reset(host)
        after = self._await_boot(host, before)
        self.restart_asked = []
        self.r.journal.write(
            "reboot", host=self.name, on=host, before=before, after=after, reasons=reasons
        )
        return (
            "changed",
            f"restarted ({', '.join(reasons) or 'always'}); back up since {after}",
            {"before": before, "after": after},
            [],
        )

    def _await_boot(self, host: str, before: Any) -> Any:
        scale = self.r.options.time_scale
        clock = self.r.clock
        total = self.r.options.reboot_timeout * scale
        start = clock.now()
        deadline = start + total
        self._pause(min(5.0, 5.0 * scale))
        last_error = "no answer yet"
        while clock.now() < deadline:
            try:
                now = self._engine(host, self.engine.boot_time(host)).data
                if now != before:
                    return now
                last_error = "still the old boot time (not restarted yet)"
                seen = "up, not restarted yet"
            except TransportError as exc:
                last_error = str(exc)  # for the failure at the deadline
                seen = "not answering"  # as a restarting host does: not a failure here
            waited = f"{span(clock.now() - start)} of {span(total)}"
            self.r.console.progress(self.name, f"waiting for {host} to restart ({waited}): {seen}")
            self._pause(max(0.05, 5.0 * scale))
        raise StepFailed(
            f"{host} did not come back within {self.r.options.reboot_timeout * scale:.0f}s: "
            + last_error
        )


class StepFailedWithLines(StepFailed):
    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.lines = lines


def _loop_groups(steps: list[PlannedStep]) -> Iterator[list[PlannedStep]]:
    """Consecutive steps looping over the same probe run item by item together."""
    group: list[PlannedStep] = []
    for ps in steps:
        if group and ps.step.for_each and ps.step.for_each == group[-1].step.for_each:
            group.append(ps)
            continue
        if group:
            yield group
        group = [ps]
    if group:
        yield group


def _item_id(item: dict[str, Any] | None) -> str | None:
    if item is None:
        return None
    for key in ("PackageID", "Name", "id"):
        if key in item:
            return str(item[key])
    return str(sorted(item.items()))


def _probe_value(probe: Probe, data: Any) -> Any:
    if probe.returns == "list":
        if data is None:
            return []
        items = data if isinstance(data, list) else [data]
        return [dict(i) for i in items if isinstance(i, dict)]
    if probe.returns == "bool":
        return bool(data)
    return data
