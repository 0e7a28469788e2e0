"""Multicast for real: the CLI against the lab, over WinRM with NTLM message encryption.

Each method runs on the DP whose fault it is meant for (the default lab: cm07-dp01 has broken
WDS, only Method 4 mends it; cm07-dp02 an empty multicast key, Method 3 mends it). Methods 1 and
2 mend the image-flags fault, which the lab gives cm07-dp02 at run time: the default lab's
image-flags DP (cm12-dp01) is on a 2012 R2 site, which the runbook (ConfigMgr 2007) refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Lab, custom_lab_file, events

from cmrunbook_lab.labfile import FaultSpec

SPEED = 200.0  # the lab's delays: a 60 s role install takes 0.3 s
SCALE = "0.005"  # the engine's waits: a 1800 s log timeout is 9 s, the 4 h settle 72 s
RUN = ("--yes", "--non-interactive", "--assume-manual-done")
# A method that does not mend the fault is judged only after the whole settle time (a broken
# key may yet come back): tests about escalation give it 10 minutes, not the default hours.
SHORT_SETTLE = ("--set", "verify_settle=600")


def multicast(lab: Lab, method: str, host: str, *more: str, scale: str = SCALE) -> Any:
    """`invoke remediate multicast --method M --hosts HOST --yes ...` against the lab."""
    return lab.cli(
        "remediate",
        "multicast",
        "--method",
        method,
        "--hosts",
        host,
        *RUN,
        *more,
        time_scale=scale,
    )


def step_ends(evs: list[dict[str, Any]], *, status: str | None = None) -> list[str]:
    """Keys (with `#item`) of the step-end events, optionally of one status only."""
    return [
        e["key"] + (f"#{e['item']}" if e.get("item") else "")
        for e in evs
        if e["event"] == "step-end" and (status is None or e["status"] == status)
    ]


def stage_trail(evs: list[dict[str, Any]]) -> list[str]:
    """The stages a host went through: `method:N` once per method, `verify:N passed|failed`."""
    trail: list[str] = []
    for e in evs:
        if e["event"] == "stage-end":
            trail.append(f"{e['stage']} {e['status']}")
        elif e["event"] == "step-start" and e["key"].startswith("method:"):
            stage = e["key"].split("/", 1)[0]
            if not trail or trail[-1] != stage:
                trail.append(stage)
    return trail


def test_method_3_fixes_the_mcs_key_fault_waiting_on_both_logs(lab: Lab) -> None:
    assert not lab.world.multicast_healthy("cm07-dp02")
    res = lab.cli(
        "remediate",
        "multicast",
        "--method",
        "3",
        "--hosts",
        "cm07-dp02",
        "--yes",
        "--non-interactive",
        "--assume-manual-done",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.world.multicast_healthy("cm07-dp02")
    assert "verified after Method 3" in res.stdout
    (run,) = lab.run_dirs()
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    waits = [e for e in events if e["event"] == "step-end" and "wait-mcs" in e["key"]]
    assert [w["status"] for w in waits] == ["ok", "ok"]
    assert all(any("MCSMSI.log" in line for line in w["log_lines"]) for w in waits)
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 0


def test_destructive_steps_without_yes_under_non_interactive_change_nothing(lab: Lab) -> None:
    before = lab.running.server.stats.snapshot()
    res = lab.cli("remediate", "multicast", "--method", "3", "--non-interactive")
    assert res.returncode == 2
    assert (
        "destructive steps" in res.stderr
        and "Disable multicast on the distribution point" in res.stderr
    )
    after = lab.running.server.stats.snapshot()
    assert sum(h.total_requests for h in after.values()) == sum(
        h.total_requests for h in before.values()
    )
    assert lab.run_dirs() == []


def image_flags_lab(make_lab: Any, tmp_path: Path, settle: float) -> Lab:
    """The default lab with cm07-dp02's multicast broken by its image flags; the DP rewrites
    its multicast key `settle` seconds (at speed 1) after an image's multicast bit is set."""

    def change(data: dict[str, Any]) -> None:
        data["hosts"]["cm07-dp02"]["dp"]["multicast_fault"] = "image-flags"
        data["delays"]["image_flags"] = settle

    return make_lab(custom_lab_file(tmp_path, change), speed=SPEED)


def test_method_1_mends_the_image_flags_fault(make_lab: Any, tmp_path: Path) -> None:
    lab = image_flags_lab(make_lab, tmp_path, settle=0)
    assert not lab.world.multicast_healthy("cm07-dp02")
    res = multicast(lab, "1", "cm07-dp02")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 1" in res.stdout
    assert lab.world.multicast_healthy("cm07-dp02")
    (run,) = lab.run_dirs()
    evs = events(run)
    done = step_ends(evs)
    # Both multicast OS images cleared, then (after the wait) set again, on the site server.
    method_steps = [k for k in done if k.startswith("method:")]
    assert method_steps[:5] == [
        "method:1/m1.clear-image-multicast#C0700010",
        "method:1/m1.clear-image-multicast#C0700011",
        "method:1/m1.wait-image-multicast",
        "method:1/m1.set-image-multicast#C0700010",
        "method:1/m1.set-image-multicast#C0700011",
    ]
    assert not any(k.startswith(("method:2", "method:3", "method:4")) for k in done)
    assert evs[-1] == {**evs[-1], "event": "run-end", "exit_code": 0}


def test_method_2_mends_the_image_flags_fault_touching_only_the_images(
    make_lab: Any, tmp_path: Path
) -> None:
    lab = image_flags_lab(make_lab, tmp_path, settle=0)
    assert not lab.world.multicast_healthy("cm07-dp02")
    features = set(lab.world.host("cm07-dp02").features)
    boot = lab.world.host("cm07-dp02").boot_time
    res = multicast(lab, "2", "cm07-dp02")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 2" in res.stdout
    assert lab.world.multicast_healthy("cm07-dp02")
    (run,) = lab.run_dirs()
    method_steps = [k for k in step_ends(events(run)) if k.startswith("method:")]
    assert method_steps == [
        "method:2/m2.clear-image-multicast#C0700010",
        "method:2/m2.clear-image-multicast#C0700011",
        "method:2/m2.wait-image-multicast",
        "method:2/m2.set-image-multicast#C0700010",
        "method:2/m2.set-image-multicast#C0700011",
    ]
    # Fidelity F15: cleared and set again image_flag_wait (1800 s of site time) apart, as the
    # lab's record of changes shows, not within one script.
    wait = next(
        e
        for e in events(run)
        if e["event"] == "step-end" and e["key"] == "method:2/m2.wait-image-multicast"
    )
    assert wait["status"] == "ok" and wait["data"]["elapsed"] >= 1800
    flags = [c for c in lab.world.changes if c["what"] == "OS image flags changed"]
    assert [(c["package_id"], c["after"] & 0x08000000) for c in flags] == [
        ("C0700010", 0),
        ("C0700011", 0),
        ("C0700010", 0x08000000),
        ("C0700011", 0x08000000),
    ]
    # The DP itself was left alone: same WDS features, not restarted.
    assert lab.world.host("cm07-dp02").features == features
    assert lab.world.host("cm07-dp02").boot_time == boot


def test_method_2_is_verified_after_the_dp_has_rewritten_its_key(
    make_lab: Any, tmp_path: Path
) -> None:
    lab = image_flags_lab(make_lab, tmp_path, settle=200)  # 1 s at the test's speed
    res = multicast(lab, "2", "cm07-dp02", scale="0.01")  # the run's settle time: 3 s
    assert res.returncode == 0, res.stdout + res.stderr


def test_method_1_does_not_mend_the_mcs_key_and_names_the_next_method(make_lab: Any) -> None:
    lab = make_lab(speed=SPEED)
    res = multicast(lab, "1", "cm07-dp02", *SHORT_SETTLE)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "still failing after Method 1; next: --method 2" in res.stdout
    assert not lab.world.multicast_healthy("cm07-dp02")
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == ["method:1", "verify:1 failed"]
    host_end = next(e for e in evs if e["event"] == "host-end")
    assert host_end["status"] == "failed"
    assert "next: --method 2" in host_end["message"]
    report = json.loads((run / "report.json").read_text())
    assert report["summary"]["by_status"] == {"failed": 1}


def test_method_4_mends_broken_wds_with_a_restart(make_lab: Any) -> None:
    lab = make_lab(speed=SPEED)
    dp = lab.world.host("cm07-dp01")
    boot = dp.boot_time
    assert not lab.world.multicast_healthy("cm07-dp01")
    res = multicast(lab, "4", "cm07-dp01")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 4" in res.stdout
    assert lab.world.multicast_healthy("cm07-dp01")
    assert dp.boot_time != boot
    (run,) = lab.run_dirs()
    evs = events(run)
    reboots = [e for e in evs if e["event"] == "reboot"]
    assert reboots and all(r["on"] == "cm07-dp01" and r["before"] != r["after"] for r in reboots)
    done = step_ends(evs)
    # The PXE boot images taken off the share are the ones put back.
    removed = sorted(k.split("#")[1] for k in done if "m4.remove-pxe-boot-images#" in k)
    added = sorted(k.split("#")[1] for k in done if "m4.add-pxe-boot-images#" in k)
    assert removed == added == ["C0700003", "C0700004"]
    assert "cm07-dp01" in lab.world.site_of(dp).pxe_shares


def test_auto_escalates_through_methods_1_and_2_to_method_3(make_lab: Any) -> None:
    lab = make_lab(speed=SPEED)
    res = multicast(lab, "auto", "cm07-dp02", *SHORT_SETTLE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 3" in res.stdout
    assert "Verify after Method 2: still failing; escalating to the next method" in res.stdout
    assert lab.world.multicast_healthy("cm07-dp02")
    (run,) = lab.run_dirs()
    evs = events(run)
    assert stage_trail(evs) == [
        "verify:0 failed",
        "method:1",
        "verify:1 failed",
        "method:2",
        "verify:2 failed",
        "method:3",
        "verify:3 passed",
    ]
    assert not any("method:4" in k or "verify:4" in k for k in step_ends(evs))


def test_a_restart_in_the_middle_of_method_4_fails_clearly_and_resumes(make_lab: Any) -> None:
    lab = make_lab(speed=SPEED)
    dp = lab.world.host("cm07-dp01")
    lab.world.faults.add(
        FaultSpec(host="cm07-dp01", kind="reboot-during", step="method:4/m4.install-wds")
    )
    res = multicast(lab, "4", "cm07-dp01", "--step-timeout", "5")
    assert res.returncode == 1, res.stdout + res.stderr
    (run,) = lab.run_dirs()
    evs = events(run)
    failed = [e for e in evs if e["event"] == "step-end" and e["status"] == "failed"]
    assert [e["key"] for e in failed] == ["method:4/m4.install-wds"]
    assert "cm07-dp01" in failed[0]["message"]
    host_end = next(e for e in evs if e["event"] == "host-end")
    assert host_end["status"] == "failed" and host_end["message"].startswith("cm07-dp01: ")
    assert f"FAILED: {host_end['message']}" in res.stdout
    assert evs[-1]["event"] == "run-end" and evs[-1]["exit_code"] == 1
    assert not lab.world.multicast_healthy("cm07-dp01")
    done_before = set(step_ends(evs, status="changed")) | set(step_ends(evs, status="ok"))

    again = lab.cli("remediate", "multicast", "--resume", str(run), *RUN, time_scale=SCALE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "verified after Method 4" in again.stdout
    assert lab.world.multicast_healthy("cm07-dp01")
    assert "WDS-Transport" in dp.features and "WDS-Deployment" in dp.features
    after = events(run)
    resumed = after[len(evs) :]
    assert resumed[0]["event"] == "resume"
    # The OS images cleared by steps 1-4 were set back when the host failed; the resumed run
    # clears them again (steps 5-12 expect them cleared) and runs no other completed step again.
    set_back = {e["item"] for e in evs if e["event"] == "site-restored" and e["compensated"]}
    assert set_back == {"C0700010", "C0700011"}
    cleared_again = {e["step"] for e in evs if e["event"] == "site-changed"}
    rerun = {k for k in step_ends(resumed)} & done_before
    assert rerun == cleared_again, f"completed steps run again: {rerun - cleared_again}"
    assert "method:4/m4.install-wds" in step_ends(resumed, status="changed")


def test_attack_1e_method_3_on_cm07_dp02_never_touches_bak_cm07_dp02(lab: Lab) -> None:
    """Attack 1e, end to end: the neighbour whose name contains cm07-dp02 is left alone; the
    lab's changes.jsonl names only cm07-dp02 for the role, which comes back with its settings."""
    world = lab.world
    roles = {r.server(): r.record() for r in world.sites["C07"].scf}
    res = multicast(lab, "3", "cm07-dp02")
    assert res.returncode == 0, res.stdout + res.stderr
    changes_file = Path(lab.inventory).parent / "changes.jsonl"
    changes = [json.loads(x) for x in changes_file.read_text(encoding="utf-8").splitlines()]
    assert changes and not [c for c in changes if c["host"] == "bak-cm07-dp02"]
    scf = [c for c in changes if c["what"].startswith("site control file")]
    assert [(c["host"], c["what"]) for c in scf] == [
        ("cm07-dp02", "site control file: role removed"),
        ("cm07-dp02", "site control file: role added"),
    ]
    after = {r.server(): r.record() for r in world.sites["C07"].scf}
    assert after["bak-cm07-dp02"] == roles["bak-cm07-dp02"]
    assert after["cm07-dp02"]["Props"] == roles["cm07-dp02"]["Props"]
    assert world.dps["bak-cm07-dp02"].history == []
