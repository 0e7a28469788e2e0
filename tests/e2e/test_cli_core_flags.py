"""invoke's core `--dry`/`-R` never runs a task for real (#12 item 1).

invoke's help says `--dry` "echo commands instead of running"; it only changes invoke's own
`c.run()`, which no task uses, so each task refuses it before reading, planning or contacting
anything. Each case runs the real CLI against the lab and counts the lab's HTTP requests.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from conftest import INVOKE, ROOT, Lab

DATA = Path(__file__).resolve().parents[1] / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def task_args(lab: Lab, tmp: Path) -> dict[str, list[str]]:
    """Each task with arguments that, run for real, would contact the lab or write files."""
    inv = ["--inventory", lab.inventory]
    return {
        "remediate": [
            "remediate",
            "multicast",
            "--method",
            "4",
            "--hosts",
            "cm07-dp01",
            "--yes",
            *inv,
            "--runs",
            str(tmp / "runs"),
            "--non-interactive",
        ],
        "check": ["check", "client-hotfix", *inv, "--runs", str(tmp / "runs")],
        "diagnose": ["diagnose", "all", "--host", "cm07-dp01", *inv, "--non-interactive"],
        "checklist": ["checklist", "multicast", "--out", str(tmp / "checklist.html")],
        "report": ["report", str(tmp / "runs" / "none"), "--reports", str(tmp / "reports")],
        "schedule": ["schedule", "client-hotfix-check", "--every", "daily", "--format", "cron"],
        "validate": ["validate"],
        "schema": ["schema"],
        "lab": ["lab", "--port", str(_free_port()), "--state", str(tmp / "lab-state")],
        "log-check": [
            "log-check",
            str(DATA / "multicast_smsts.log"),
            "--log",
            "MCSSetup.log",
            "--event",
            "install",
        ],
        "list": ["list"],
        "inventory": [
            "inventory",
            "from-site",
            "--provider",
            "cm07-site01",
            "--site",
            "C07",
            "--out",
            str(tmp / "site.yaml"),
            *inv,
            "--non-interactive",
        ],
        "publish": [
            "publish",
            "client-hotfix-check",
            "--site",
            "C07",
            "--collection",
            "C0700014",
            "--yes",
            *inv,
            "--non-interactive",
        ],
    }


def http_requests(lab: Lab) -> int:
    return sum(h.http_requests for h in lab.running.server.stats.snapshot().values())


@pytest.mark.parametrize("flag", ["--dry", "-R"])
@pytest.mark.parametrize(
    "name",
    [
        "remediate",
        "check",
        "diagnose",
        "checklist",
        "report",
        "schedule",
        "validate",
        "schema",
        "lab",
        "log-check",
        "list",
        "inventory",
        "publish",
    ],
)
def test_core_dry_flag_is_refused_and_nothing_is_contacted_or_written(
    lab: Lab, tmp_path: Path, name: str, flag: str
) -> None:
    args = task_args(lab, tmp_path)[name]
    schemas = {p: p.read_bytes() for p in (ROOT / "schema").glob("*.json")}
    res = subprocess.run(
        [INVOKE, flag, *args],
        cwd=ROOT,
        env=lab.env(),
        text=True,
        capture_output=True,
        timeout=60,
        input="",
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--dry (-R) is invoke's option to echo shell commands" in res.stderr
    assert "refused, nothing was done" in res.stderr
    if name in ("remediate", "check"):
        assert f"use `{name} --dry-run`" in res.stderr
    assert http_requests(lab) == 0
    assert {p.name for p in tmp_path.iterdir()} <= {"locks", "lab0"}  # the lab's own folder
    assert {p: p.read_bytes() for p in (ROOT / "schema").glob("*.json")} == schemas
    assert res.stdout == ""


def test_cmrunbook_command_refuses_dry_too(lab: Lab) -> None:
    cmrunbook = str(Path(INVOKE).with_name("cmrunbook"))
    res = subprocess.run(
        [cmrunbook, "-R", "check", "client-hotfix", "--inventory", lab.inventory],
        cwd=ROOT,
        env=lab.env(),
        text=True,
        capture_output=True,
        timeout=60,
        input="",
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refused, nothing was done" in res.stderr
    assert http_requests(lab) == 0


def test_dry_in_an_invoke_config_file_is_refused_as_well(lab: Lab, tmp_path: Path) -> None:
    """`run.dry` can also come from invoke's environment variables or config files."""
    env = lab.env(INVOKE_RUN_DRY="1")
    res = subprocess.run(
        [
            INVOKE,
            "check",
            "client-hotfix",
            "--inventory",
            lab.inventory,
            "--runs",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        input="",
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refused, nothing was done" in res.stderr
    assert http_requests(lab) == 0


def test_every_task_of_the_collection_is_checked(lab: Lab, tmp_path: Path) -> None:
    """A task added to the collection is added here too, or this fails: none may run for real
    under --dry."""
    from cmrunbook.cli.collection import ns

    assert set(ns.task_names) == set(task_args(lab, tmp_path))
