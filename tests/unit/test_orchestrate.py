"""A whole run in-process: execute_plan on fake hosts and a manual clock (tests/fakes.py).

Run folder, journal, summary and exit code; the refusals before any host is touched; the
credential tried on one host before the others; --resume skipping what is done; Ctrl-C.
"""

from __future__ import annotations

import io
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeSite, ManualClock, result_line
from test_execute import BROKEN, DP, HEALTHY, IMAGES, METHOD_1

from cmrunbook.cli.common import build_plan
from cmrunbook.errors import UsageError
from cmrunbook.record.journal import ResumeState
from cmrunbook.remote import TransportError
from cmrunbook.run.console import HOST_LINES, TextConsole
from cmrunbook.run.execute import Options
from cmrunbook.run.orchestrate import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, execute_plan

ROOT = Path(__file__).resolve().parents[2]
UNATTENDED = Options(yes=True, non_interactive=True, assume_manual_done=True)


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMRUNBOOK_ROOT", str(ROOT))
    monkeypatch.chdir(ROOT)


def site() -> FakeSite:
    fake = FakeSite(clock=ManualClock())
    fake.on("multicast-images", result_line(data=IMAGES))
    fake.on("large-multicast-image", result_line(data=False))
    fake.on("verify.multicast", HEALTHY)
    return fake


class Runs:
    """execute_plan for the multicast runbook into one runs folder; what it printed."""

    def __init__(self, tmp_path: Path, fake: FakeSite, host_lines: int = HOST_LINES) -> None:
        self.folder = tmp_path / "runs"
        self.fake = fake
        self.out = io.StringIO()
        self.host_lines = host_lines

    def __call__(
        self,
        method: str = "1",
        hosts: str = DP,
        options: Options = UNATTENDED,
        resume: Path | None = None,
    ) -> int:
        catalog, plan = build_plan(
            "multicast", inventory=None, method=method, hosts=hosts, overrides=[]
        )
        return execute_plan(
            catalog,
            plan,
            options,
            runs_dir=self.folder,
            connect=self.fake.connect,
            resume=ResumeState.load(resume) if resume else None,
            console=TextConsole(self.out, interactive=False, host_lines=self.host_lines),
            clock=self.fake.clock,
        )

    def dirs(self) -> list[Path]:
        return sorted(self.folder.glob("*-multicast*")) if self.folder.is_dir() else []

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        (run,) = self.dirs()
        lines = (run / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        evs = [json.loads(line) for line in lines]
        return [e for e in evs if kind is None or e["event"] == kind]


def test_a_run_that_verifies_exits_0_with_its_journal_and_summary(tmp_path: Path) -> None:
    runs = Runs(tmp_path, site())
    assert runs() == EXIT_OK
    (run,) = runs.dirs()
    evs = runs.events()
    assert evs[0]["event"] == "run" and evs[0]["targets"] == [DP] and evs[0]["method"] == "1"
    assert evs[-1] == {**evs[-1], "event": "run-end", "status": "ok", "exit_code": 0}
    summary = (run / "summary.txt").read_text(encoding="utf-8")
    assert DP in summary and "verified after Method 1" in summary
    assert summary.strip() in runs.out.getvalue()
    # Every script the hosts ran is kept beside the journal.
    assert (run / "scripts").is_dir() and any((run / "scripts").rglob("*.ps1"))


def test_a_run_that_changes_things_prints_every_host_s_lines(tmp_path: Path) -> None:
    """The console's host limit is for read-only fleet checks: a run that changes a site prints
    every host's lines (a "could not set back" on any host must be seen), whatever the limit."""
    runs = Runs(tmp_path, site(), host_lines=0)
    assert runs() == EXIT_OK
    shown = runs.out.getvalue()
    assert "More than 0 hosts" not in shown
    assert f"{DP} " in shown and "-> ok" in shown


def test_a_failed_host_makes_the_run_exit_1(tmp_path: Path) -> None:
    fake = site()
    fake.on("verify.multicast", BROKEN)
    runs = Runs(tmp_path, fake)
    assert runs() == EXIT_FAILED
    assert runs.events()[-1]["status"] == "failed"
    assert "still failing after Method 1" in runs.out.getvalue()


def test_destructive_steps_without_yes_are_refused_before_anything_runs(tmp_path: Path) -> None:
    fake = site()
    runs = Runs(tmp_path, fake)
    options = Options(non_interactive=True, assume_manual_done=True)
    with pytest.raises(UsageError) as refused:
        runs(options=options)
    assert "--non-interactive cannot ask" in str(refused.value)
    assert "Nothing was changed" in str(refused.value)
    assert f"{DP}: [Method 1, step 3] Reinstall WDS" in str(refused.value)
    assert fake.calls == [] and fake.connected == []
    assert runs.dirs() == []  # no run folder either


def test_rejected_credentials_are_not_sent_to_any_other_host(tmp_path: Path) -> None:
    fake = site()
    hosts = "cm07-dp01,cm07-dp02,cm07-site01"
    for host in hosts.split(","):
        fake.on("*", TransportError(host, "unauthorized", "rejected (HTTP 401)"), host=host)
    runs = Runs(tmp_path, fake)
    assert runs(hosts="cm07-dp01,cm07-dp02") == EXIT_FAILED
    # One logon was tried, on the site server (each target's first script runs there); the
    # other target needs it too, and is not tried with the credential it rejected.
    assert fake.connected == ["cm07-site01"] and len(fake.calls) == 1
    outcomes = {e["host"]: e for e in runs.events("host-end")}
    statuses = sorted(e["status"] for e in outcomes.values())
    assert statuses == ["not-tried", "unreachable"], outcomes
    not_tried = next(e for e in outcomes.values() if e["status"] == "not-tried")
    assert "cm07-site01: not tried again: it rejected the credentials" in not_tried["message"]


def test_resume_runs_only_what_the_stopped_run_left(tmp_path: Path) -> None:
    fake = site()
    fake.on("m1.uninstall-wds", TransportError(DP, "refused", "connection refused"), host=DP)
    runs = Runs(tmp_path, fake)
    assert runs() == EXIT_FAILED
    first = fake.sent()
    assert first == METHOD_1[:-1]  # stopped at the WDS removal
    (run,) = runs.dirs()
    fake.on("m1.uninstall-wds", result_line(changed=True), host=DP)
    fake.calls.clear()
    assert runs(resume=run) == EXIT_OK
    # The probes come from the journal and the done steps are not run again.
    assert fake.sent() == [
        "method:1/m1.uninstall-wds",
        "method:1/m1.install-wds",
        "verify:1/verify.multicast",
    ]
    resumed = runs.events("resume")
    assert len(resumed) == 1 and runs.events()[-1]["status"] == "ok"
    assert runs.dirs() == [run]


class CtrlCOnSleep(ManualClock):
    """Ctrl-C as a terminal sends it, when a host first waits: SIGINT to the main thread, which
    is waiting for the hosts; the wait then lasts until the run's stop event is set."""

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        assert stop is not None
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        assert stop.wait(timeout=30), "Ctrl-C never reached the run"
        return super().sleep(seconds, stop)


@pytest.fixture
def ctrl_c_handler() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal: a suite started as a background job
    starts with SIGINT ignored, and the signal would never reach the run."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_handler")
def test_ctrl_c_stops_every_host_and_exits_130(tmp_path: Path) -> None:
    fake = site()
    fake.clock = CtrlCOnSleep()
    fake.on("m1.wait-image-multicast", result_line(ok=False, message="not processed yet"))
    runs = Runs(tmp_path, fake)
    assert runs() == EXIT_INTERRUPTED
    (end,) = runs.events("host-end")
    assert end["status"] == "interrupted"
    assert runs.events()[-1]["status"] == "interrupted"
    assert fake.sent().count("method:1/m1.wait-image-multicast") == 1
    assert "m1.toggle-dp-multicast" not in " ".join(fake.sent())
    (run,) = runs.dirs()
    assert "interrupted" in (run / "summary.txt").read_text(encoding="utf-8")
    assert fake.clock.slept == []
