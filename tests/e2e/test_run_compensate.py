"""Site-wide changes set back when a run stops halfway (fidelity F8, attack 4h).

Method 3 steps 1-4 clear "Allow this package to be transferred via multicast" on every OS image
of the site; steps 9-12 set it again (KB 001). A run that stops in between (a failed wait,
Ctrl-C, a kill) must leave every image's flag as it was before the run, say which images it set
back, and two DPs of one site in one run must not clear and set the same images at once.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, custom_lab_file, events
from helpers_engine import EXAMPLE_INVENTORY, run_cli
from test_run_resume import after_step_end, after_step_start, journal_of, kill_when

from cmrunbook_lab.labfile import FaultSpec

SPEED = 100.0
SCALE = "0.01"
DP = "cm07-dp02"
MULTICAST_BIT = 0x08000000
RUN = ("--yes", "--non-interactive", "--assume-manual-done")
METHOD_3 = ("remediate", "multicast", "--method", "3", *RUN)
RESTORED = "site C07: multicast restored on images: C0700010, C0700011"


def flags(lab: Lab) -> dict[str, int]:
    """PkgFlags of every OS image of site C07, as the lab (the site) has them."""
    return {pid: int(i["PkgFlags"]) for pid, i in lab.world.sites["C07"].images.items()}


def multicast_images(lab: Lab) -> set[str]:
    return {pid for pid, f in flags(lab).items() if f & MULTICAST_BIT}


def report(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "report.json").read_text(encoding="utf-8")))


# One failure for real: that a wait which timed out sets the images back the same way is
# checked in-process (tests/unit/test_execute.py), and the timeout itself by test_run_faults.
@pytest.mark.parametrize(
    ("fault", "scale", "says"),
    [("log-failure", SCALE, "MCSSetup.log reports failure")],
)
def test_a_failed_install_wait_sets_every_image_back(
    fault: str, scale: str, says: str, make_lab: Callable[..., Lab]
) -> None:
    lab = make_lab(speed=SPEED)
    before = flags(lab)
    lab.world.faults.add(FaultSpec(host=DP, kind=fault, operation="install", role="multicast"))
    res = lab.cli(*METHOD_3, "--hosts", DP, time_scale=scale)
    assert res.returncode == 1, res.stdout + res.stderr
    assert says in res.stdout
    # The site has every image's flag as before the run, and the summary says which were set back.
    assert flags(lab) == before
    assert RESTORED in res.stdout
    (run,) = lab.run_dirs()
    assert RESTORED in (run / "summary.txt").read_text(encoding="utf-8")
    assert report(run)["site_states"] == [
        {
            "site": "C07",
            "state": "image-multicast",
            "restored": ["C0700010", "C0700011"],
            "outstanding": [],
        }
    ]
    # Set back through the runbook's own step 9-12 script on the site server, journaled.
    evs = events(run)
    set_back = [e for e in evs if e["event"] == "step-end" and e["key"].startswith("set-back/")]
    assert [(e["key"], e["item"], e["status"]) for e in set_back] == [
        ("set-back/m3.set-image-multicast", "C0700010", "changed"),
        ("set-back/m3.set-image-multicast", "C0700011", "changed"),
    ]
    failed = next(i for i, e in enumerate(evs) if e.get("status") == "failed")
    assert evs[failed]["key"] == "method:3/m3.wait-mcs-install"
    assert evs[-2]["event"] == "host-end" and evs[-2]["status"] == "failed"
    # The saved state came first: journaled once, before the first image was cleared.
    saved = [e for e in evs if e["event"] == "site-state" and e["probe"] == "multicast-images"]
    first_clear = next(i for i, e in enumerate(evs) if e["event"] == "site-changed")
    assert len(saved) == 1 and evs.index(saved[0]) < first_clear
    assert {i["PackageID"] for i in saved[0]["value"]} == {"C0700010", "C0700011"}


def _kill_after_first_clear(lab: Lab) -> tuple[Path, list[dict[str, Any]]]:
    proc = lab.popen(*METHOD_3, "--hosts", DP, time_scale=SCALE)
    kill_when(
        lab,
        proc,
        after_step_end("method:3/m3.clear-image-multicast", "C0700010"),
        signal.SIGKILL,
    )
    (run,) = lab.run_dirs()
    assert "C0700010" not in multicast_images(lab)  # killed with the image cleared
    return run, events(run)


def test_a_killed_run_is_set_back_when_resumed(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(speed=SPEED)
    before = flags(lab)
    run, first = _kill_after_first_clear(lab)
    # The resumed run fails inside Method 3 (the role removal fails this time).
    lab.world.faults.add(
        FaultSpec(host=DP, kind="log-failure", operation="uninstall", role="multicast")
    )
    res = lab.cli(*METHOD_3, "--hosts", DP, "--resume", str(run), time_scale=SCALE)
    assert res.returncode == 1, res.stdout + res.stderr
    assert flags(lab) == before
    resumed = events(run)[len(first) :]
    # What the killed run left cleared is set back before anything else runs...
    starts = [(e["key"], e["item"]) for e in resumed if e["event"] == "step-start"]
    cleared = {e["item"] for e in first if e["event"] == "site-changed"}
    assert starts[: len(cleared)] == [
        ("set-back/m3.set-image-multicast", i) for i in sorted(cleared)
    ]
    # ...then Method 3 clears the images again (steps 5-8 expect them cleared), fails, and
    # sets them back again.
    assert ("method:3/m3.clear-image-multicast", "C0700010") in starts[len(cleared) :]
    assert RESTORED in res.stdout


def test_rollback_resume_only_sets_the_images_back(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(speed=SPEED)
    before = flags(lab)
    run, first = _kill_after_first_clear(lab)
    res = lab.cli(*METHOD_3, "--hosts", DP, "--rollback", "--resume", str(run), time_scale=SCALE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert flags(lab) == before
    assert "site C07: multicast restored on images: C0700010" in res.stdout
    rolled = events(run)[len(first) :]
    assert rolled[0]["event"] == "resume" and rolled[0]["restore_only"] is True
    keys = {e["key"] for e in rolled if e["event"] == "step-start"}
    assert keys == {"set-back/m3.set-image-multicast"}, "the rollback ran more than the set-back"
    assert rolled[-1]["event"] == "run-end" and rolled[-1]["exit_code"] == 0
    assert report(run)["site_states"][0]["outstanding"] == []
    # The run can still be resumed: it clears the images again and ends as Method 3 does.
    again = lab.cli(*METHOD_3, "--hosts", DP, "--resume", str(run), time_scale=SCALE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert flags(lab) == before and lab.world.multicast_healthy(DP)


def test_rollback_without_resume_says_how(lab: Lab) -> None:
    res = lab.cli(*METHOD_3, "--hosts", DP, "--rollback")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "invoke remediate multicast --rollback --resume RUN" in res.stderr
    assert lab.run_dirs() == []


def test_two_dps_of_one_site_do_not_interleave_image_changes(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    def change(data: dict[str, Any]) -> None:
        data["hosts"]["cm07-dp01"]["dp"]["multicast_fault"] = "mcs-key"

    lab = make_lab(custom_lab_file(tmp_path, change), speed=500.0)
    before = flags(lab)
    res = lab.cli(*METHOD_3, "--hosts", "cm07-dp01,cm07-dp02", "--forks", "2", time_scale="0.005")
    assert res.returncode == 0, res.stdout + res.stderr
    assert flags(lab) == before
    evs = events(run := lab.run_dirs()[0])
    # Each DP's image changes (steps 1-4 ... 9-12) form one block the other DP's never enter.
    image_steps = [
        e["host"] for e in evs if e["event"] == "step-start" and "image-multicast" in e["key"]
    ]
    assert len(image_steps) == 8
    blocks = [h for i, h in enumerate(image_steps) if i == 0 or h != image_steps[i - 1]]
    assert sorted(blocks) == ["cm07-dp01", "cm07-dp02"], image_steps
    # Each DP saw the images as the KB procedure expects them: all multicast, from one probe.
    saved = [e for e in evs if e["event"] == "site-state" and e["probe"] == "multicast-images"]
    assert len(saved) == 1
    for host in ("cm07-dp01", "cm07-dp02"):
        cleared = {
            e["item"]
            for e in evs
            if e["event"] == "step-end"
            and e["host"] == host
            and e["key"] == "method:3/m3.clear-image-multicast"
            and e["status"] == "changed"
        }
        assert cleared == {"C0700010", "C0700011"}, (host, cleared)
    assert report(run)["site_states"][0]["restored"] == []


def test_a_second_run_on_another_dp_of_the_site_is_refused(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(speed=SPEED)
    before = flags(lab)
    # The first run waits in Method 3 with the site's images cleared (the removal never ends).
    lab.world.faults.add(
        FaultSpec(host=DP, kind="log-hang", operation="uninstall", role="multicast")
    )
    proc = lab.popen(*METHOD_3, "--hosts", DP, time_scale=SCALE)
    waiting = after_step_start("method:3/m3.wait-mcs-uninstall")
    deadline = time.monotonic() + 60
    while not ((path := journal_of(lab)) and path.is_file() and waiting(events(path.parent))):
        assert time.monotonic() < deadline and proc.poll() is None, "the run never waited"
        time.sleep(0.02)
    (first,) = lab.run_dirs()
    try:
        res = lab.cli(*METHOD_3, "--hosts", "cm07-dp01", time_scale=SCALE)
        assert res.returncode == 3, res.stdout + res.stderr
        assert f"cm07-site01 is locked by run {first.name}" in res.stderr
        assert lab.run_dirs() == [first]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    # Ctrl-C sets the images back.
    assert proc.returncode == 130, out + err
    assert flags(lab) == before
    assert RESTORED in out


def test_a_set_cut_short_is_set_back_once_the_site_server_answers(
    make_lab: Callable[..., Lab],
) -> None:
    """Method 2 clears each image, waits, then sets it again: the site server going down while it
    sets leaves the images cleared. The DP's setting back cannot reach the server either: the run
    says which images are not set back and how, and --rollback --resume does it later."""
    lab = make_lab(speed=SPEED)
    before = flags(lab)
    lab.world.faults.add(
        FaultSpec(
            host="cm07-site01",
            kind="reboot-during",
            step="method:2/m2.set-image-multicast",
            down_seconds=100000,
        )
    )
    method_2 = ("remediate", "multicast", "--method", "2", *RUN, "--hosts", DP)
    res = lab.cli(*method_2, "--step-timeout", "5", time_scale=SCALE)
    assert res.returncode == 1, res.stdout + res.stderr
    (run,) = lab.run_dirs()
    assert "site C07: NOT set back (image-multicast): C0700010, C0700011" in res.stdout
    assert f"invoke remediate multicast --rollback --resume {run}" in res.stderr
    assert report(run)["site_states"][0]["outstanding"] == ["C0700010", "C0700011"]
    lab.world.host("cm07-site01").up = True  # the server is back
    again = lab.cli(*method_2, "--rollback", "--resume", str(run), time_scale=SCALE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "site C07: multicast restored on images: C0700010, C0700011" in again.stdout
    assert flags(lab) == before
    assert report(run)["site_states"][0] == {
        "site": "C07",
        "state": "image-multicast",
        "restored": ["C0700010", "C0700011"],
        "outstanding": [],
    }


def test_rollback_resume_of_a_runbook_without_site_wide_changes_is_refused(tmp_path: Path) -> None:
    """bootsect-downgrade has its own --rollback; --rollback --resume would mean nothing there."""
    run = tmp_path / "20261202-000000-bootsect-downgrade"
    run.mkdir()
    request = {
        "runbook": "bootsect-downgrade",
        "inventory": str(EXAMPLE_INVENTORY),
        "hosts": "cm12-site01",
        "overrides": [],
        "rollback": False,
    }
    event = {"seq": 1, "event": "run", "runbook": "bootsect-downgrade", "request": request}
    (run / "journal.jsonl").write_text(json.dumps(event) + "\n", encoding="utf-8")
    res = run_cli("remediate", "bootsect-downgrade", "--rollback", "--resume", str(run))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "declares none; roll it back with: invoke remediate bootsect-downgrade --rollback" in (
        res.stderr
    )
    assert (run / "journal.jsonl").read_text(encoding="utf-8").count("\n") == 1
