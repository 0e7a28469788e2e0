"""The executor in-process: the multicast runbook run by a Runner on fake hosts and a manual
clock (tests/fakes.py), no lab, no socket, no sleep.

What a user checks after a run: which scripts went to which host in what order, each host's
outcome, and the journal. Each test scripts the answers a real site would give to the steps
that matter and lets every other script report ok.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeLogs, FakeSite, ManualClock, cmtrace, result_line

from cmrunbook.cli.common import build_plan
from cmrunbook.record.journal import JournalWriter
from cmrunbook.remote import TransportError
from cmrunbook.run.execute import HostOutcome, Options, Runner, Sessions

ROOT = Path(__file__).resolve().parents[2]
DP = "cm07-dp02"
SITE = "cm07-site01"
IMAGES = [{"PackageID": "C0700010", "Name": "Boot image (x86)"}]
HEALTHY = result_line(message="multicast works", data={"verdict": "healthy"})
BROKEN = result_line(ok=False, message="SerializedMCSKey is empty", data={"verdict": "broken"})
UNKNOWN = result_line(ok=False, message="no multicast key", data={"verdict": "unknown"})
NOT_SETTLED = result_line(
    ok=False, message="SignedSerializedMCSKey is still empty", data={"verdict": "not-settled"}
)
METHOD_1 = [
    "probe/large-multicast-image",
    "probe/multicast-images",
    "method:1/m1.clear-image-multicast",
    "method:1/m1.wait-image-multicast",
    "method:1/m1.set-image-multicast",
    "method:1/m1.toggle-dp-multicast",
    "method:1/m1.uninstall-wds",
    "method:1/m1.install-wds",
]


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMRUNBOOK_ROOT", str(ROOT))
    monkeypatch.chdir(ROOT)


class Console:
    """What the operator saw, and the answers they give to questions."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []
        self.lines: list[str] = []

    def step(self, host: str, text: str) -> None:
        self.lines.append(f"{host} {text}")

    def progress(self, host: str, text: str) -> None:
        self.lines.append(f"{host} ... {text}")

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)


class Run:
    """One Runner over the multicast runbook; its outcomes and journal once it ended."""

    def __init__(self, tmp_path: Path, site: FakeSite, method: str, hosts: str = DP) -> None:
        self.site = site
        self.catalog, self.plan = build_plan(
            "multicast", inventory=None, method=method, hosts=hosts, overrides=[]
        )
        self.dir = tmp_path / "run"
        self.dir.mkdir()
        self.clock = site.clock or ManualClock()
        self.stop = threading.Event()

    def __call__(self, console: Console | None = None, **options: Any) -> dict[str, HostOutcome]:
        self.console = console or Console()
        opts = {"yes": True, "non_interactive": True, "assume_manual_done": True, **options}
        journal = JournalWriter(self.dir)
        self.runner = Runner(
            self.catalog,
            self.plan,
            Sessions(self.site.connect),
            journal,
            self.console,
            Options(**opts),
            stop=self.stop,
            clock=self.clock,
        )
        try:
            return {o.host: o for o in self.runner.run()}
        finally:
            journal.close()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = (self.dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        evs = [json.loads(line) for line in lines]
        return [e for e in evs if kind is None or e["event"] == kind]

    def stages(self) -> list[str]:
        return [f"{e['stage']} {e['status']}" for e in self.events("stage-end")]

    def step_status(self, key: str) -> str:
        (end,) = [e for e in self.events("step-end") if e["key"] == key]
        return str(end["status"])


def multicast_site(clock: ManualClock | None = None) -> FakeSite:
    site = FakeSite(clock=clock)
    site.on("multicast-images", result_line(data=IMAGES))
    site.on("large-multicast-image", result_line(data=False))
    return site


# -- order, and a failure that stops one host only ---------------------------------------------


def test_method_1_runs_its_steps_in_order_on_their_hosts_and_verifies(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify.multicast", HEALTHY)
    run = Run(tmp_path, site, "1")
    outcome = run()[DP]
    assert (outcome.status, outcome.message) == ("ok", "verified after Method 1")
    assert site.sent() == [*METHOD_1, "verify:1/verify.multicast"]
    on_dp = {"method:1/m1.uninstall-wds", "method:1/m1.install-wds", "verify:1/verify.multicast"}
    assert set(site.sent(DP)) == on_dp
    assert run.step_status("method:1/m1.restart-after-wds") == "skipped"  # nothing asked for it
    starts = [(e["key"], e["item"]) for e in run.events("step-start")]
    assert starts[:3] == [
        ("precheck/pre.site-reset", None),
        ("method:1/m1.clear-image-multicast", "C0700010"),
        ("method:1/m1.wait-image-multicast", None),
    ]
    assert len(run.events("step-end")) == 10  # every step, the skipped ones too
    (end,) = run.events("host-end")
    assert end["status"] == "ok" and end["steps_done"] == outcome.steps_done


def test_a_failed_step_stops_that_host_only(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify.multicast", HEALTHY)
    site.on(
        "m1.uninstall-wds", result_line(ok=False, message="WDS removal failed"), host="cm07-dp01"
    )
    run = Run(tmp_path, site, "1", hosts="cm07-dp01,cm07-dp02")
    outcomes = run(forks=1)
    assert outcomes["cm07-dp01"].status == "failed"
    assert "WDS removal failed" in outcomes["cm07-dp01"].message
    assert outcomes[DP].status == "ok"
    assert "method:1/m1.install-wds" not in site.sent("cm07-dp01")
    assert "verify:1/verify.multicast" not in site.sent("cm07-dp01")
    assert site.sent(DP)[-1] == "verify:1/verify.multicast"


def test_an_unreachable_host_is_unreachable_and_the_others_go_on(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify.multicast", HEALTHY)
    refused = TransportError("cm07-dp01", "refused", "connection refused at http://x:5985/wsman")
    site.on("m1.uninstall-wds", refused, host="cm07-dp01")
    outcomes = Run(tmp_path, site, "1", hosts="cm07-dp01,cm07-dp02")(forks=2)
    assert outcomes["cm07-dp01"].status == "failed"  # its site server answered for it before
    assert "connection refused" in outcomes["cm07-dp01"].message
    assert outcomes[DP].status == "ok"


# -- verification: healthy, broken, unknown, not settled; escalation --------------------------


def test_a_healthy_dp_needs_nothing(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify.multicast", HEALTHY)
    run = Run(tmp_path, site, "auto")
    outcome = run()[DP]
    assert (outcome.status, outcome.message) == ("ok", "multicast already works; nothing to do")
    assert not any(k.startswith("method:") for k in site.sent())
    assert run.stages() == ["verify:0 passed"]


def test_broken_escalates_to_the_next_method_with_consent(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify:0/verify.multicast", BROKEN)
    site.on("verify:1/verify.multicast", BROKEN)
    site.on("verify:2/verify.multicast", HEALTHY)
    run = Run(tmp_path, site, "auto")
    outcome = run()[DP]
    assert (outcome.status, outcome.message) == ("ok", "verified after Method 2")
    assert run.stages() == ["verify:0 failed", "verify:1 failed", "verify:2 passed"]
    consent = run.events("consent")
    assert [(e["stage"], e["answer"]) for e in consent] == [("method:1", "--yes")]
    assert not any(k.startswith("method:3") for k in site.sent())


@pytest.mark.parametrize(
    ("verdict", "advice"),
    [(UNKNOWN, "check the DP by hand"), (NOT_SETTLED, "give the site more time")],
)
def test_auto_never_escalates_on_unknown_or_not_settled(
    tmp_path: Path, verdict: str, advice: str
) -> None:
    site = multicast_site()
    site.on("verify:0/verify.multicast", BROKEN)
    site.on("verify:1/verify.multicast", verdict)
    run = Run(tmp_path, site, "auto")
    outcome = run()[DP]
    assert outcome.status == "stopped"
    assert "stopped without escalating" in outcome.message and advice in outcome.message
    assert not any(k.startswith("method:2") for k in site.sent())
    status = json.loads(verdict.split(" ", 1)[1])["data"]["verdict"]
    assert run.stages() == ["verify:0 failed", f"verify:1 {status}"]


def test_unknown_before_any_method_enters_none(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify.multicast", UNKNOWN)
    run = Run(tmp_path, site, "auto")
    assert run()[DP].status == "stopped"
    assert not any(k.startswith("method:") for k in site.sent())


def test_the_settle_checks_again_on_the_clock_until_the_key_is_signed(tmp_path: Path) -> None:
    clock = ManualClock()
    site = multicast_site(clock)
    site.on("verify:0/verify.multicast", BROKEN)
    site.on("verify:1/verify.multicast", NOT_SETTLED, NOT_SETTLED, NOT_SETTLED, HEALTHY)
    run = Run(tmp_path, site, "auto")
    outcome = run()[DP]
    assert (outcome.status, outcome.message) == ("ok", "verified after Method 1")
    assert site.sent().count("verify:1/verify.multicast") == 4
    # verify_settle is 4 h: a check every 24 min (a tenth, at most 5 min), on the clock only.
    assert clock.slept == [300.0] * 3


def test_not_settled_for_the_whole_settle_stops_not_settled(tmp_path: Path) -> None:
    clock = ManualClock()
    site = multicast_site(clock)
    site.on("verify:0/verify.multicast", BROKEN)
    site.on("verify:1/verify.multicast", NOT_SETTLED)
    run = Run(tmp_path, site, "auto")
    outcome = run()[DP]
    assert outcome.status == "stopped" and "not-settled" in run.stages()[-1]
    assert sum(clock.slept) == pytest.approx(14400)  # the whole verify_settle, not more
    assert site.sent().count("verify:1/verify.multicast") == 1 + len(clock.slept)


# -- consent before destructive steps ------------------------------------------------------------


def test_auto_without_yes_and_without_a_terminal_stops_before_a_destructive_method(
    tmp_path: Path,
) -> None:
    site = multicast_site()
    site.on("verify.multicast", BROKEN)
    run = Run(tmp_path, site, "auto")
    outcome = run(yes=False)[DP]
    assert outcome.status == "stopped"
    assert "--non-interactive cannot ask" in outcome.message
    assert "m1.toggle-dp-multicast" not in " ".join(site.sent())
    assert not any(k.startswith("method:") for k in site.sent())
    (consent,) = run.events("consent")
    assert consent["answer"] == "cannot ask" and len(consent["steps"]) == 2


def test_a_declined_method_runs_nothing_of_it(tmp_path: Path) -> None:
    site = multicast_site()
    site.on("verify.multicast", BROKEN)
    run = Run(tmp_path, site, "auto")
    console = Console(False)
    outcome = run(console, yes=False, non_interactive=False)[DP]
    assert (outcome.status, outcome.message) == (
        "stopped",
        "Method 1 not confirmed; nothing of it was run",
    )
    (question,) = console.questions
    assert "Uninstall" in question or "uninstall" in question.lower()
    assert not any(k.startswith("method:") for k in site.sent())
    assert run.events("consent")[0]["answer"] == "declined"


# -- log waits ---------------------------------------------------------------------------------

MCS_UNINSTALLED = cmtrace("mcs.msi exited with return code: 0")
MSI_INSTALLED = cmtrace(
    "Windows Installer installed the product. Product Name: ConfigMgr MCS. "
    "Installation success or error status: 0.",
    component="MSI",
)
MCS_FAILED = cmtrace("mcs.msi exited with return code: 1603", type_=3)


def method_3_site(logs: FakeLogs, clock: ManualClock) -> FakeSite:
    site = multicast_site(clock)
    site.on("verify.multicast", HEALTHY)
    site.on("log-arm", logs.arm)
    site.on("log-read", logs.read)
    return site


def test_a_log_wait_ends_when_the_required_log_says_success(tmp_path: Path) -> None:
    logs, clock = FakeLogs(), ManualClock()
    earlier = cmtrace("an earlier install: mcs.msi exited with return code: 0")
    logs.written(0, "MCSSetup.log", earlier)  # before the arming
    logs.written(2, "MCSSetup.log", MCS_UNINSTALLED)
    logs.written(3, "MCSSetup.log", MCS_UNINSTALLED)  # the install wait's: both logs needed
    logs.written(4, "MCSMSI.log", MSI_INSTALLED)
    site = method_3_site(logs, clock)
    run = Run(tmp_path, site, "3")
    outcome = run()[DP]
    assert outcome.status == "ok", outcome.message
    assert run.step_status("method:3/m3.wait-mcs-uninstall") == "ok"
    (wait,) = [e for e in run.events("step-end") if e["key"] == "method:3/m3.wait-mcs-uninstall"]
    assert wait["data"]["polls"] == 2 and "return code: 0" in wait["message"]
    assert "an earlier install" not in wait["message"]  # only what came after the arming
    assert run.step_status("method:3/m3.wait-mcs-install") == "ok"
    assert clock.slept[:1] == [10.0]  # the catalog's poll, on the clock


def test_a_failure_line_ends_the_wait_at_once_and_stops_the_host(tmp_path: Path) -> None:
    logs, clock = FakeLogs(), ManualClock()
    logs.written(1, "MCSSetup.log", MCS_FAILED)
    site = method_3_site(logs, clock)
    run = Run(tmp_path, site, "3")
    outcome = run()[DP]
    assert outcome.status == "failed"
    assert "MCSSetup.log reports failure" in outcome.message and "1603" in outcome.message
    assert run.step_status("method:3/m3.wait-mcs-uninstall") == "failed"
    assert logs.reads == 1 and clock.slept == []
    assert not any("enable-dp-multicast" in k for k in site.sent())
    # The images cleared before the wait are set back.
    assert site.sent()[-1] == "set-back/m3.set-image-multicast"


def test_a_log_that_says_nothing_times_out_cannot_tell(tmp_path: Path) -> None:
    logs, clock = FakeLogs(), ManualClock()
    logs.written(1, "MCSSetup.log", cmtrace("Deinstalling component"))
    site = method_3_site(logs, clock)
    run = Run(tmp_path, site, "3")
    outcome = run()[DP]
    assert outcome.status == "failed"
    assert "timed out after 1800s waiting for MCSSetup.log, MCSMSI.log" in outcome.message
    assert "cannot tell" in outcome.message and "Deinstalling component" in outcome.message
    assert sum(clock.slept) == pytest.approx(1800)
    assert logs.reads == 1 + len(clock.slept)
    # A wait that cannot tell stops the host as a failure does: the images it cleared are set
    # back, each journaled.
    assert site.sent()[-1] == "set-back/m3.set-image-multicast"
    assert [e["item"] for e in run.events("site-restored")] == ["C0700010"]


# -- restart --------------------------------------------------------------------------------------


def test_a_restart_asked_for_waits_for_a_new_boot_time(tmp_path: Path) -> None:
    clock = ManualClock()
    site = multicast_site(clock)
    site.on("verify.multicast", HEALTHY)
    site.on("m1.uninstall-wds", result_line(changed=True, reboot_required=True))
    down = TransportError(DP, "refused", "connection refused at http://x:5985/wsman")
    booted = [
        result_line(data="20261202T0800"),
        result_line(data="20261202T0800"),
        down,
        result_line(data="20261202T0815"),
    ]
    site.on("boot-time", *booted, host=DP)
    run = Run(tmp_path, site, "1")
    outcome = run()[DP]
    assert outcome.status == "ok", outcome.message
    assert run.step_status("method:1/m1.restart-after-wds") == "changed"
    (reboot,) = run.events("reboot")
    assert (reboot["before"], reboot["after"]) == ("20261202T0800", "20261202T0815")
    assert reboot["reasons"] == ["method:1/m1.uninstall-wds asked for a restart"]
    keys = site.sent(DP)
    assert keys.index("engine/restart") < keys.index("method:1/m1.install-wds")
    assert DP in site.closed  # the old shell is dropped with the host going down
    assert clock.slept == [5.0, 5.0, 5.0]


def test_a_host_that_does_not_come_back_fails_after_the_reboot_timeout(tmp_path: Path) -> None:
    clock = ManualClock()
    site = multicast_site(clock)
    site.on("m1.uninstall-wds", result_line(changed=True, reboot_required=True))
    site.on("boot-time", result_line(data="20261202T0800"), host=DP)
    run = Run(tmp_path, site, "1")
    outcome = run(reboot_timeout=60)[DP]
    assert outcome.status == "failed"
    assert f"{DP} did not come back within 60s" in outcome.message
    assert "method:1/m1.install-wds" not in site.sent()


# -- Ctrl-C ---------------------------------------------------------------------------------------


class StopOnSleep(ManualClock):
    """A clock that sets the run's stop event (as Ctrl-C does) when the run first sleeps."""

    stop: threading.Event

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        self.stop.set()
        return super().sleep(seconds, stop)


def test_ctrl_c_in_a_settle_ends_the_step_interrupted_and_sets_back(tmp_path: Path) -> None:
    clock = StopOnSleep()
    site = multicast_site(clock)
    site.on("m1.wait-image-multicast", result_line(ok=False, message="not processed yet"))
    run = Run(tmp_path, site, "1")
    clock.stop = run.stop
    outcome = run()[DP]
    assert outcome.status == "interrupted"
    assert run.step_status("method:1/m1.wait-image-multicast") == "interrupted"
    assert site.sent().count("method:1/m1.wait-image-multicast") == 1  # not checked again
    assert clock.slept == []  # the wait ended at once
    # The image cleared before the wait is set back even though the run is stopping.
    assert site.sent()[-1] == "set-back/m3.set-image-multicast"
    assert [e["item"] for e in run.events("site-restored")] == ["C0700010"]
