"""Multicast verification and escalation for real: the CLI against the lab.

`--method auto` escalates only when verification positively says "still broken" (WDS missing or
stopped, or SerializedMCSKey empty after the settle time); "cannot tell" (no multicast key in any
registry view) and "not settled" (the key written but not signed yet) stop the host with what was
seen. A method with destructive steps is entered only with consent. A restart "if prompted"
follows the change's own request, not whatever else is pending on the machine.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from conftest import Lab, custom_lab_file, events
from helpers_engine import run_cli
from test_run_multicast import RUN, SCALE, SPEED, multicast, stage_trail, step_ends
from test_run_resume import after_step_start, kill_when

from cmrunbook.record.journal import JournalWriter, ResumeState
from cmrunbook_lab.hosts import SESSION_MANAGER_KEY

WOW_MCS = r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\SMS\MCS"
NATIVE_MCS = r"HKLM:\SOFTWARE\Microsoft\SMS\MCS"
#: The lab runs fast enough that a 2 h signing takes 3.6 s; the engine's 4 h settle is 72 s.
FAST_LAB = 2000.0


def lab_with(make_lab: Any, tmp_path: Path, change: Any, speed: float = SPEED) -> Lab:
    return make_lab(custom_lab_file(tmp_path, change), speed=speed)


def host_end(evs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in evs if e["event"] == "host-end")


def test_the_dry_run_and_the_checklist_show_the_settle_and_where_it_is_set() -> None:
    words = "for up to 4 h 00 min (parameter verify_settle=14400s)"
    dry = run_cli("remediate", "multicast", "--method", "auto", "--hosts", "cm07-dp02", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # Verified after each of the four methods; the first check (verify:0) is final at once.
    assert dry.stdout.count(words) == 4
    unconfirmed = next(x for x in dry.stdout.splitlines() if "UNCONFIRMED parameters" in x)
    assert "verify_settle=14400" in unconfirmed
    shorter = run_cli(
        "remediate",
        "multicast",
        "--method",
        "1",
        "--hosts",
        "cm07-dp02",
        "--dry-run",
        "--set",
        "verify_settle=1800",
    )
    assert "for up to 30 min 0 s (parameter verify_settle=1800s)" in shorter.stdout
    md = run_cli(
        "checklist", "multicast", "--method", "3", "--hosts", "cm07-dp02", "--format", "md"
    )
    assert md.returncode == 0, md.stderr
    assert r"for up to 4 h 00 min (parameter verify\_settle=14400s)" in md.stdout


def test_x64_2007_dp_with_its_keys_under_wow6432node_verifies_healthy(
    make_lab: Any, tmp_path: Path
) -> None:
    def change(data: dict[str, Any]) -> None:
        data["hosts"]["cm07-dp01"]["dp"]["multicast_fault"] = "none"

    lab = lab_with(make_lab, tmp_path, change)
    reg = lab.world.host("cm07-dp01").registry
    # 32-bit ConfigMgr 2007 on x64 Windows: the key is in the 32-bit view only.
    assert reg.get(WOW_MCS, "SignedSerializedMCSKey") and not reg.key_exists(NATIVE_MCS)
    # auto without --yes: a healthy DP needs no consent, so --non-interactive does not refuse.
    res = lab.cli(
        "remediate",
        "multicast",
        "--method",
        "auto",
        "--hosts",
        "cm07-dp01",
        "--non-interactive",
        "--assume-manual-done",
        time_scale=SCALE,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "multicast already works; nothing to do" in res.stdout
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == ["verify:0 passed"]
    (verify,) = [e for e in evs if e["event"] == "step-end" and e["key"].startswith("verify:0")]
    assert verify["data"]["verdict"] == "healthy" and WOW_MCS in verify["message"]
    assert not any(k.startswith("method:") for k in step_ends(evs))


def test_a_dp_with_no_multicast_key_stops_cannot_tell_and_never_escalates(
    make_lab: Any, tmp_path: Path
) -> None:
    """WDS without its Transport Server is positive evidence (Method 1 reinstalls it); then the
    key is nowhere the runbook looks (the 2012 R2 "HKLM\\Software\\SMS\\MCS" of a blog post)."""

    def change(data: dict[str, Any]) -> None:
        dp = data["hosts"]["cm07-dp02"]["dp"]
        dp.update(multicast_fault="none", wds=["WDS", "WDS-Deployment"])
        dp["mcs_key"] = r"HKLM:\SOFTWARE\SMS\MCS"

    lab = lab_with(make_lab, tmp_path, change)
    # A missing key is looked for again for the whole settle time (it may yet be written).
    res = multicast(lab, "auto", "cm07-dp02", "--set", "verify_settle=600")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cannot tell: no multicast key in" in res.stdout
    assert "stopped without escalating" in res.stdout
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == ["verify:0 failed", "method:1", "verify:1 unknown"]
    end = host_end(evs)
    assert end["status"] == "stopped" and "Verify after Method 1: cannot tell" in end["message"]
    assert not any(k.startswith(("method:2", "method:3", "method:4")) for k in step_ends(evs))
    # The lab saw no Method 3/4 either: the multicast role was never uninstalled.
    assert not any("multicast uninstall" in h for h in lab.world.dps["cm07-dp02"].history)
    assert lab.world.host("cm07-dp02").services["WDSServer"] == "Running"


def signing_lab(make_lab: Any, tmp_path: Path, signing: float) -> Lab:
    """cm07-dp02 broken by its image flags (Method 1 mends it at once); the MP signs the new key
    `signing` seconds (speed 1) after the DP writes it. Its WDS removal needs no restart: at
    this speed a restart would take the host down before its answer to the restart command."""

    def change(data: dict[str, Any]) -> None:
        data["hosts"]["cm07-dp02"]["dp"].update(
            multicast_fault="image-flags", wds_uninstall_reboot=False
        )
        data["delays"].update(image_flags=0, mcs_signing=signing)

    return lab_with(make_lab, tmp_path, change, speed=FAST_LAB)


def test_slow_signing_is_waited_for_and_does_not_escalate(make_lab: Any, tmp_path: Path) -> None:
    lab = signing_lab(make_lab, tmp_path, signing=7200)  # 2 h
    res = multicast(lab, "auto", "cm07-dp02")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 1" in res.stdout
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == ["verify:0 failed", "method:1", "verify:1 passed"]
    assert "multicast key signed by the MP" in lab.world.dps["cm07-dp02"].history
    assert lab.world.multicast_healthy("cm07-dp02")


def test_unsigned_at_the_deadline_stops_not_settled_and_resume_continues(
    make_lab: Any, tmp_path: Path
) -> None:
    lab = signing_lab(make_lab, tmp_path, signing=20000)  # 5.5 h: longer than the settle
    res = multicast(lab, "auto", "cm07-dp02", "--set", "verify_settle=600")
    assert res.returncode == 1, res.stdout + res.stderr
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == ["verify:0 failed", "method:1", "verify:1 not-settled"]
    end = host_end(evs)
    assert end["status"] == "stopped"
    assert "SignedSerializedMCSKey is still empty" in end["message"]
    assert not any(k.startswith("method:2") for k in step_ends(evs))

    deadline = time.monotonic() + 60
    while not lab.world.multicast_healthy("cm07-dp02") and time.monotonic() < deadline:
        time.sleep(0.2)  # the MP signs it in the lab's own time
        lab.world.tick()
    assert lab.world.multicast_healthy("cm07-dp02")
    again = lab.cli("remediate", "multicast", "--resume", str(run), *RUN, time_scale=SCALE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "verified after Method 1" in again.stdout
    resumed = events(run)[len(evs) :]
    assert stage_trail(resumed) == ["verify:1 passed"]
    assert not any(k.startswith("method:") for k in step_ends(resumed))


def test_ctrl_c_ends_a_settle_at_once(make_lab: Any, tmp_path: Path) -> None:
    """In real time (--time-scale 1) the settle re-checks every 5 minutes for 4 hours; Ctrl-C
    ends it without waiting for the next check. (No wait between clearing and setting the
    images' option, which would take 30 minutes at this scale.)"""
    lab = signing_lab(make_lab, tmp_path, signing=1_000_000)
    proc = lab.popen(
        "remediate",
        "multicast",
        "--method",
        "1",
        "--hosts",
        "cm07-dp02",
        *RUN,
        "--set",
        "image_flag_wait=0",
        time_scale="1",
    )
    try:
        _, err = kill_when(lab, proc, after_step_start("verify:1/verify.multicast"), signal.SIGINT)
    finally:
        if proc.poll() is None:  # it did not stop within kill_when's minute: do not leave it
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    (run,) = lab.run_dirs()
    evs = events(run)
    (verify,) = [e for e in evs if e["event"] == "step-end" and e["key"].startswith("verify:1")]
    assert verify["status"] == "interrupted"
    assert evs[-1]["event"] == "run-end" and evs[-1]["status"] == "interrupted"


def test_a_pending_file_rename_does_not_restart_the_dp_when_wds_removal_did_not_ask(
    make_lab: Any, tmp_path: Path
) -> None:
    def change(data: dict[str, Any]) -> None:
        host = data["hosts"]["cm07-dp02"]
        host["dp"].update(multicast_fault="image-flags", wds_uninstall_reboot=False)
        host["registry"] = {
            SESSION_MANAGER_KEY: {
                "PendingFileRenameOperations": [r"\??\C:\Windows\Temp\old.tmp", ""]
            }
        }
        data["delays"]["image_flags"] = 0

    lab = lab_with(make_lab, tmp_path, change)
    dp = lab.world.host("cm07-dp02")
    boot = dp.boot_time
    res = multicast(lab, "1", "cm07-dp02")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 1" in res.stdout
    assert dp.boot_time == boot
    (run,) = lab.run_dirs()
    evs = events(run)
    assert not [e for e in evs if e["event"] == "reboot"]
    (restart,) = [e for e in evs if e["event"] == "step-end" and "m1.restart-after-wds" in e["key"]]
    assert restart["status"] == "skipped"
    assert "did not ask for a restart" in restart["message"]


def test_auto_non_interactive_without_yes_stops_before_method_1_listing_its_steps(
    make_lab: Any,
) -> None:
    lab = make_lab(speed=SPEED)  # the key Method 3 writes is signed delays.mcs_signing later
    site = lab.world.sites["C07"]
    flags = {k: i["PkgFlags"] for k, i in site.images.items()}
    features = set(lab.world.host("cm07-dp02").features)
    res = lab.cli(
        "remediate",
        "multicast",
        "--method",
        "auto",
        "--hosts",
        "cm07-dp02",
        "--non-interactive",
        "--assume-manual-done",
        "--set",
        "verify_settle=1800",
        time_scale=SCALE,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "Method 1 has destructive steps and --non-interactive cannot ask" in out
    assert "[Method 1, step 2] Disable and re-enable Multicast on the multicast" in out
    assert "[Method 1, step 3] Reinstall WDS (remove the WDS role services)" in out
    assert "Method 3" not in out.split("cannot ask", 1)[1].split("Nothing of", 1)[0]
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == ["verify:0 failed"]
    (consent,) = [e for e in evs if e["event"] == "consent"]
    assert consent["stage"] == "method:1" and consent["answer"] == "cannot ask"
    assert len(consent["steps"]) == 2
    assert host_end(evs)["status"] == "stopped"
    assert not any(e["event"] == "step-start" and "method:" in e["key"] for e in evs)
    # Nothing of Method 1 happened on the site or the DP.
    assert {k: i["PkgFlags"] for k, i in site.images.items()} == flags
    assert lab.world.host("cm07-dp02").features == features
    assert lab.world.dps["cm07-dp02"].history == []

    # With --yes the resumed run enters Method 1 (and later Method 3) and mends the DP.
    again = lab.cli("remediate", "multicast", "--resume", str(run), *RUN, time_scale=SCALE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "verified after Method 3" in again.stdout
    resumed = events(run)[len(evs) :]
    answers = [(e["stage"], e["answer"]) for e in resumed if e["event"] == "consent"]
    assert answers == [("method:1", "--yes"), ("method:3", "--yes")]


def test_a_restart_asked_for_before_a_resume_is_still_owed_after_it(tmp_path: Path) -> None:
    """The request lives in the journal: a run killed between the WDS removal and its restart
    restarts when resumed; a restart done settles it."""
    j = JournalWriter(tmp_path)
    j.write("run", runbook="multicast", request={})
    j.write("restart-asked", host="dp", reason="method:4/m4.uninstall-wds asked for a restart")
    j.close()
    assert ResumeState.load(tmp_path).hosts["dp"].restart_asked == [
        "method:4/m4.uninstall-wds asked for a restart"
    ]
    j = JournalWriter(tmp_path)
    j.write("reboot", host="dp", on="dp", before="a", after="b", reasons=[])
    j.close()
    assert ResumeState.load(tmp_path).hosts["dp"].restart_asked == []


def test_method_4_restarts_for_the_wds_removal_and_for_the_pxe_setup_log(make_lab: Any) -> None:
    """cm07-dp01: its WDS removal returns RestartNeeded, and pxe.msi's setup log asks for a
    restart (3010): each if_pending restart follows the request of the step just before it."""
    lab = make_lab(speed=SPEED)
    res = multicast(lab, "4", "cm07-dp01")
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = lab.run_dirs()
    evs = events(run)
    reasons = [e["reasons"] for e in evs if e["event"] == "reboot"]
    assert reasons == [
        ["method:4/m4.uninstall-wds asked for a restart"],
        ["method:4/m4.wait-pxe-install: the log asked for a restart"],
    ]


def test_auto_asks_before_method_1_and_a_no_leaves_it_undone(lab: Lab) -> None:
    res = lab.cli(
        "remediate",
        "multicast",
        "--method",
        "auto",
        "--hosts",
        "cm07-dp02",
        "--assume-manual-done",
        stdin="n\n",
        time_scale=SCALE,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    question = res.stdout.split("Method 1 removes or uninstalls something:", 1)[1]
    assert "Reinstall WDS (remove the WDS role services)" in question.split("Run them?")[0]
    (run,) = lab.run_dirs()
    evs = events(run)
    (consent,) = [e for e in evs if e["event"] == "consent"]
    assert consent["answer"] == "declined"
    assert host_end(evs)["message"] == "Method 1 not confirmed; nothing of it was run"
    assert not any(e["event"] == "step-start" and "method:" in e["key"] for e in evs)
