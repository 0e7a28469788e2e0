"""A scheduled run of the client hotfix check, as cron or a systemd timer starts it.

No terminal, stdin closed, credentials from the environment only: the run never prompts, its
exit code says whether any client needs attention, and the reports folder holds report.json,
junit.xml, report.html and cmrunbook.log that agree with the lab. Without credentials it stops
before contacting anything, naming the variables to set.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import INVOKE, ROOT, Lab
from test_run_catalog import SCALE, SPEED, expected_compliance

DOWN = "xp-fleet001"
PROMPTS = ("password", "Password", "Done?", "Run them?", "[y/N]", "(y/n)")


def scheduled(lab: Lab, reports: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`invoke check client-hotfix --non-interactive --reports DIR` with stdin closed, no TTY."""
    cmd = [
        INVOKE,
        "check",
        "client-hotfix",
        "--non-interactive",
        "--reports",
        str(reports),
        "--inventory",
        lab.inventory,
        "--runs",
        str(lab.runs),
        "--time-scale",
        SCALE,
    ]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal
    )


def test_scheduled_client_check_exits_1_and_its_reports_match_the_lab(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(speed=SPEED)
    lab.running.server.faults.set(DOWN, "refuse", count=None)
    reports = tmp_path / "reports"
    res = scheduled(lab, reports, lab.env())
    assert res.returncode == 1, res.stdout + res.stderr
    assert not any(p in res.stdout + res.stderr for p in PROMPTS), res.stdout + res.stderr

    (folder,) = [p for p in reports.iterdir() if p.is_dir()]
    assert {p.name for p in folder.iterdir()} >= {
        "report.json",
        "junit.xml",
        "report.html",
        "cmrunbook.log",
        "journal.jsonl",
    }
    report: dict[str, Any] = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    names = [h["name"] for h in report["hosts"]]
    expected = expected_compliance(lab, names, {DOWN})
    assert report["summary"]["by_status"] == dict(expected)
    assert expected["non-compliant"] and expected["unreachable"] == 1 and expected["unknown"]
    assert report["run"]["exit_code"] == 1 and report["run"]["complete"]
    status = {h["name"]: h["status"] for h in report["hosts"]}

    # junit.xml: one suite per client; a suite fails when its client is non-compliant or down.
    suites = ET.parse(folder / "junit.xml").getroot().findall("testsuite")
    assert len(suites) == len(names)
    failing = {s.get("name", "").rsplit(".", 1)[-1] for s in suites if int(s.get("failures", 0))}
    assert failing == {n for n, st in status.items() if st in ("non-compliant", "unreachable")}

    # report.html: one summary row per client, with its status.
    html = (folder / "report.html").read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="row-([a-z-]+)"><td><a href="#host-([^"]+)"', html)
    assert dict((n, st) for st, n in rows) == status

    # cmrunbook.log (CMTrace): each non-compliant or unreachable client has a warning or error.
    log = (folder / "cmrunbook.log").read_text(encoding="utf-8-sig")
    flagged = set(re.findall(r'type="[23]" thread="\d+" file="([^"]+)"', log))
    assert flagged >= {n for n, st in status.items() if st in ("non-compliant", "unreachable")}
    assert DOWN in flagged


def test_scheduled_check_without_credentials_exits_2_and_contacts_nothing(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(speed=SPEED)
    env = {k: v for k, v in lab.env().items() if k not in ("CMRUNBOOK_USER", "CMRUNBOOK_PASSWORD")}
    before = sum(h.total_requests for h in lab.running.server.stats.snapshot().values())
    reports = tmp_path / "reports"
    res = scheduled(lab, reports, env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no WinRM credentials" in res.stderr
    assert "CMRUNBOOK_USER" in res.stderr and "CMRUNBOOK_PASSWORD" in res.stderr
    assert "no prompt (--non-interactive)" in res.stderr
    assert not any(p in res.stdout for p in PROMPTS)
    after = sum(h.total_requests for h in lab.running.server.stats.snapshot().values())
    assert after == before
    assert lab.run_dirs() == []
    assert not reports.exists() or not any(reports.iterdir())


def test_schedule_prints_a_systemd_timer_running_the_check() -> None:
    res = subprocess.run(
        [
            INVOKE,
            "schedule",
            "client-hotfix-check",
            "--every",
            "daily@02:30",
            "--format",
            "systemd",
        ],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    units: dict[str, str] = {}
    for chunk in res.stdout.split("# ---- ")[1:]:
        name, _, body = chunk.partition("\n")
        units[name.strip()] = body
    service = next(b for n, b in units.items() if n.endswith(".service"))
    timer = next(b for n, b in units.items() if n.endswith(".timer"))
    (exec_start,) = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert Path(argv[0]).name == "invoke"
    assert argv[1:3] in (["check", "client-hotfix-check"], ["check", "client-hotfix"])
    assert "--non-interactive" in argv and "--reports" in argv
    assert "OnCalendar=*-*-* 02:30:00" in timer.splitlines()
    assert "EnvironmentFile=" in service  # the credentials come from a file, never the unit
    assert "CMRUNBOOK_PASSWORD=" not in service.replace("CMRUNBOOK_PASSWORD=...", "")
