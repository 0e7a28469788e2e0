"""Locks belong to the machine and the jump host; file names made from host names never collide.

Attack entries 7b/7d/7e (a second run on the same machine through another runs folder, a
`--resume` of a live run, one machine under two inventory names) and 2a/2b/2f/2g (host names
that sanitise to one file name), each with the real CLI against the lab.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import INVOKE, ROOT, Lab, events
from helpers_engine import run_cli

from cmrunbook.filenames import safe_name
from cmrunbook.record.journal_read import read_events, sent_script

SPEED = 1.0  # the multicast role removal takes 45 s: run A stays in its log wait meanwhile
SCALE = "0.01"
DP = "cm07-dp02"
ARGS = (
    "remediate",
    "multicast",
    "--method",
    "3",
    "--yes",
    "--non-interactive",
    "--assume-manual-done",
)


def inventory_with(lab: Lab, change: Callable[[dict[str, Any]], None], name: str) -> str:
    """The lab's inventory after `change(data)`, written beside it."""
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    change(data)
    path = lab.tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def rename(data: dict[str, Any], names: dict[str, str]) -> None:
    data["hosts"] = {names.get(k, k): v for k, v in data["hosts"].items()}


LiveRun = tuple[Lab, Path, Callable[..., Path]]


@pytest.fixture
def live_run(make_lab: Callable[..., Lab]) -> Iterator[LiveRun]:
    """A lab, and a way to start run A (`remediate multicast --method 3`) in its own runs folder
    and wait until it is in its wait for the role removal; A is killed after the test."""
    lab = make_lab(speed=SPEED)
    procs: list[subprocess.Popen[str]] = []
    runs_a = lab.tmp / "runs-a"

    def start(*hosts: str, inventory: str | None = None) -> Path:
        cmd = [
            INVOKE,
            *ARGS,
            "--hosts",
            ",".join(hosts),
            "--inventory",
            inventory or lab.inventory,
            "--runs",
            str(runs_a),
            "--time-scale",
            SCALE,
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=lab.env(),
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            dirs = sorted(runs_a.glob("*-multicast"))
            if (
                dirs
                and (dirs[0] / "journal.jsonl").is_file()
                and any(
                    e["event"] == "step-start" and e["key"].endswith("m3.wait-mcs-uninstall")
                    for e in events(dirs[0])
                )
            ):
                return dirs[0]
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        raise AssertionError("run A never reached its wait")

    yield lab, runs_a, start
    for proc in procs:
        proc.kill()
        proc.communicate(timeout=60)


def test_attack_7b_lock_across_runs_folders(
    live_run: tuple[Lab, Path, Callable[..., Path]],
) -> None:
    lab, _, start = live_run
    run_a = start(DP)
    res = lab.cli(*ARGS, "--hosts", DP, time_scale=SCALE)  # another --runs folder
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"error: {DP} is locked by run {run_a.name} (pid " in res.stderr
    assert lab.run_dirs() == []  # the refused run left no folder


def test_attack_7d_resume_of_live_run_refused(live_run: LiveRun) -> None:
    lab, _, start = live_run
    run_a = start(DP)
    before = (run_a / "journal.jsonl").read_bytes()
    res = lab.cli(*ARGS, "--hosts", DP, "--resume", str(run_a), time_scale=SCALE)
    assert res.returncode == 3, res.stdout + res.stderr
    assert (
        f"error: run folder {run_a} (a run still working in it) is locked by run {run_a.name} (pid "
        in res.stderr
    )
    after = events(run_a)
    assert [e for e in after if e["event"] == "resume"] == []
    assert (run_a / "journal.jsonl").read_bytes().startswith(before)


def test_attack_7e_same_machine_two_names(live_run: LiveRun) -> None:
    lab, _, start = live_run

    def alias(data: dict[str, Any]) -> None:
        data["hosts"]["CM07-DP02"] = dict(data["hosts"][DP])

    inventory = inventory_with(lab, alias, "alias.yaml")
    run_a = start(DP, inventory=inventory)
    res = lab.cli(*ARGS, "--hosts", "CM07-DP02", inventory=inventory, time_scale=SCALE)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"error: CM07-DP02 is locked by run {run_a.name} (pid " in res.stderr
    # Both names in one run: refused before anything, rather than locking itself out.
    res = lab.cli(*ARGS, "--hosts", "CM07-DP02,cm07-dp02", inventory=inventory, time_scale=SCALE)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "are one machine" in res.stderr
    assert lab.run_dirs() == []


def test_attack_2a_self_lock_names_injective(lab: Lab) -> None:
    names = {"xp-fleet001": "corp/xp_fleet", "xp-fleet002": "corp xp_fleet"}
    inventory = inventory_with(lab, lambda d: rename(d, names), "collide.yaml")
    res = lab.cli(
        "check",
        "client-hotfix",
        "--hosts",
        "corp/xp_fleet,corp xp_fleet",
        "--non-interactive",
        inventory=inventory,
    )
    assert res.returncode == 1, res.stdout + res.stderr  # both non-compliant: no lock refusal
    assert "locked" not in res.stderr
    (run,) = lab.run_dirs()
    # Each host's script is journaled under its own name and names its own target.
    sent = [e for e in read_events(run / "journal.jsonl")[0] if e["event"] == "script"]
    assert {e["host"] for e in sent} == {"corp/xp_fleet", "corp xp_fleet"}
    for event in sent:
        assert f"| target {event['host']} |" in sent_script(run, event)


def test_attack_2b_out_no_overwrite(lab: Lab) -> None:
    names = {"cm07-dp01": "corp/dp", "cm07-dp02": "corp dp"}
    inventory = inventory_with(lab, lambda d: rename(d, names), "collide2.yaml")
    out = lab.tmp / "out"
    res = lab.cli(
        "remediate",
        "multicast",
        "--method",
        "3",
        "--dry-run",
        "--hosts",
        "corp/dp,corp dp",
        "--out",
        str(out),
        inventory=inventory,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    written = int(res.stdout.split("Wrote ")[1].split(" ")[0])
    scripts = sorted(out.rglob("*.ps1"))
    assert len(scripts) == written
    per_host = {p.parent.name for p in scripts}
    assert len(per_host) == 2
    for folder in per_host:
        header = {
            p.read_text(encoding="utf-8").split("target ")[1].split(" | ")[0]
            for p in (out / folder).glob("*.ps1")
        }
        assert len(header) == 1, header  # every script in a host's folder is for that host


@pytest.mark.parametrize(
    "names",
    [
        ["corp/dp", "corp dp", "corp_dp"],  # 2a/2b: sanitising alone maps these to one name
        ["DP01", "dp01", "Dp01"],  # 2g: one file on a case-insensitive file system
        ["dp.", "dp"],  # Windows drops a trailing dot
        ["x" * 300 + "a", "x" * 300 + "b"],  # 2c: over any file system's limit, cut alike
        ["dp-0123456789ab", safe_name("DP")],  # a name shaped like a hashed one
    ],
)
def test_safe_names_are_distinct_even_case_folded(names: list[str]) -> None:
    made = [safe_name(n) for n in names]
    assert len({m.casefold() for m in made}) == len(names), made
    assert all(len(m) <= 100 and "/" not in m and m.strip(".") for m in made), made


@pytest.mark.parametrize("name", ["CON", "nul", "aux.txt", "COM1", "LPT1.lock", "prn"])
def test_attack_2f_windows_device_names_are_made_safe(name: str) -> None:
    made = safe_name(name)
    stem = made.split(".")[0].lower()
    assert stem not in {"con", "prn", "aux", "nul", "com1", "lpt1"}, made


def test_plain_names_stay_readable() -> None:
    assert safe_name("cm07-dp02") == "cm07-dp02"
    assert safe_name("01-m3.disable-dp-multicast") == "01-m3.disable-dp-multicast"


def test_attack_2a_checklist_anchors_distinct(lab: Lab) -> None:
    """The checklist links each host by an anchor made from its name: distinct, as file names."""
    names = {"cm07-dp01": "corp/dp", "cm07-dp02": "corp dp"}
    inventory = inventory_with(lab, lambda d: rename(d, names), "collide3.yaml")
    for fmt, pattern in (
        ("html", r'<section class="host" id="([^"]+)"'),
        ("md", r'<a id="([^"]+)"></a>\n\n## '),
    ):
        res = run_cli(
            "checklist",
            "multicast",
            "--method",
            "4",
            "--format",
            fmt,
            "--hosts",
            "corp*",
            "--inventory",
            inventory,
        )
        assert res.returncode == 0, res.stderr
        anchors = re.findall(pattern, res.stdout)
        assert len(anchors) == len(set(anchors)) == 2, anchors
        for anchor in anchors:
            assert f"(#{anchor})" in res.stdout or f'href="#{anchor}"' in res.stdout
