"""Killed runs and --resume: a Method 3 run on cm07-dp02 killed at several moments, then resumed.

The resumed run must continue each host after its last completed step (no completed step runs
twice, but the image clears a stop set back), end ok, and leave the lab right: the OS images that
Method 3 cleared are the ones it sets again, from the probe the first run journaled (a new probe
would find none left to set).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shlex
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, custom_lab_file, events

SPEED = 100.0  # a role removal takes 0.45 s, an install 0.6 s: time enough to kill mid-wait
SCALE = "0.01"
DP = "cm07-dp02"
MULTICAST_BIT = 0x08000000
ARGS = (
    "remediate",
    "multicast",
    "--method",
    "3",
    "--hosts",
    DP,
    "--yes",
    "--non-interactive",
    "--assume-manual-done",
)


def journal_of(lab: Lab) -> Path | None:
    dirs = lab.run_dirs()
    return dirs[0] / "journal.jsonl" if dirs else None


@contextlib.contextmanager
def lab_held(lab: Lab) -> Iterator[None]:
    """Hold the lab's scheduled changes (the role's removal) until the run has been stopped.

    A signal sent once the journal shows the moment must find the run still there: on a loaded
    machine the test may read the journal only after the removal ended, the wait passed and the
    run went on (or ended: exit 0 instead of 130). Held, the removal wait cannot end before the
    signal reaches the run; it is released for the resumed run."""
    schedule = lab.world.schedule
    run_due = schedule.run_due
    schedule.run_due = lambda: 0  # type: ignore[method-assign]
    try:
        yield
    finally:
        schedule.run_due = run_due  # type: ignore[method-assign]


def kill_when(
    lab: Lab, proc: subprocess.Popen[str], ready: Callable[[list[dict[str, Any]]], bool], sig: int
) -> tuple[list[dict[str, Any]], str]:
    """Send `sig` to the run as soon as its journal satisfies `ready`: the events seen then,
    and what the run wrote on stderr."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        path = journal_of(lab)
        evs = events(path.parent) if path and path.is_file() else []
        if ready(evs):
            assert proc.poll() is None, "the run ended before the moment to kill it"
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            return evs, err
        assert proc.poll() is None, "the run ended before the moment to kill it"
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the moment to kill the run never came")


def after_step_end(key: str, item: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda evs: any(
        e["event"] == "step-end" and e["key"] == key and e.get("item") == item for e in evs
    )


def after_step_start(key: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda evs: any(e["event"] == "step-start" and e["key"] == key for e in evs)


MOMENTS = {
    "first-image-cleared": after_step_end("method:3/m3.clear-image-multicast", "C0700010"),
    "mid-wait-for-removal": after_step_start("method:3/m3.wait-mcs-uninstall"),
    "mid-wait-for-install": after_step_start("method:3/m3.wait-mcs-install"),
}
HELD = {"first-image-cleared", "mid-wait-for-removal"}


@pytest.mark.parametrize(
    ("moment", "sig"),
    [
        ("first-image-cleared", signal.SIGKILL),
        ("mid-wait-for-removal", signal.SIGINT),
        ("mid-wait-for-install", signal.SIGKILL),
    ],
)
def test_killed_run_resumes_after_the_last_completed_step(
    moment: str, sig: int, make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    # Run folders under a path with a space and a quote: the printed command must still work.
    lab = Lab(make_lab(speed=SPEED).running, tmp_path / "run's folders")
    images = lab.world.sites["C07"].images
    multicast_before = {pid for pid, i in images.items() if i["PkgFlags"] & MULTICAST_BIT}
    # Held where the moment is before the removal ends (see lab_held).
    with lab_held(lab) if moment in HELD else contextlib.nullcontext():
        proc = lab.popen(*ARGS, time_scale=SCALE)
        seen, err = kill_when(lab, proc, MOMENTS[moment], sig)
    (run,) = lab.run_dirs()
    first = events(run)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert not any(e["event"] == "run-end" for e in first)
    else:
        # Ctrl-C: the host stops at its next poll, says so, sets the cleared images back, and
        # the journal ends cleanly.
        assert proc.returncode == 130, err
        (hint,) = [line for line in err.splitlines() if line.startswith("Interrupted.")]
        command = shlex.split(hint.removeprefix("Interrupted. Continue with: "))
        assert command == ["invoke", "remediate", "multicast", "--resume", str(run)]
        stopped = next(
            i
            for i, e in enumerate(first)
            if e["event"] == "step-end" and e["status"] == "interrupted"
        )
        # (Each script sent is journaled too: left out here, this is about the steps.)
        after = [
            (e["event"], e.get("key"), e.get("item"))
            for e in first[stopped + 1 :]
            if e["event"] != "script"
        ]
        set_back = "set-back/m3.set-image-multicast"
        assert after == [
            *(
                (event, key, image)
                for image in ("C0700010", "C0700011")
                for event, key in [
                    ("step-start", set_back),
                    ("step-end", set_back),
                    ("site-restored", None),
                ]
            ),
            ("host-end", None, None),
            ("run-end", None, None),
        ]
        assert {pid for pid, i in images.items() if i["PkgFlags"] & MULTICAST_BIT} == (
            multicast_before
        )
        started = [e["key"] for e in first[len(seen) :] if e["event"] == "step-start"]
        assert all(k == set_back for k in started), "steps ran after Ctrl-C"

    # After Ctrl-C, the command printed; after a kill, the command line of the run with
    # --resume but without --yes: the consent given at the start holds for the whole run
    # (--non-interactive would refuse a destructive step it had to ask about).
    again = (
        command[1:]
        if sig == signal.SIGINT
        else [*(a for a in ARGS if a != "--yes"), "--resume", str(run)]
    )
    res = lab.cli(*again, time_scale=SCALE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified after Method 3" in res.stdout
    assert lab.world.multicast_healthy(DP)

    evs = events(run)
    resumed = evs[len(first) :]
    assert resumed[0]["event"] == "resume"
    assert evs[-1]["event"] == "run-end" and evs[-1]["exit_code"] == 0
    # No completed step ran twice: one successful step-end per key and item over both runs,
    # except an image clear that a stop set back (site-restored): the resumed run clears the
    # image again before it goes on, as steps 5-8 expect it cleared.
    settled: set[tuple[str, str | None]] = set()
    changed: dict[str, set[tuple[str, str | None]]] = {}
    done: Counter[tuple[str, str | None]] = Counter()
    for e in evs:
        if e["event"] == "site-changed":
            key, _, item = e["step"].partition("#")
            changed.setdefault(e["item"], set()).add((key, item))
        elif e["event"] == "site-restored" and e["compensated"]:
            settled -= changed.pop(e["item"], set())
        elif e["event"] == "step-end" and e["status"] in ("ok", "changed", "manual-confirmed"):
            sid = (e["key"], e.get("item"))
            assert sid not in settled or sid[0].startswith("set-back/"), f"{sid} ran twice"
            settled.add(sid)
            done[sid] += 1
    # The probe was taken once, before the images were cleared, and the resumed run used it.
    probes = [e for e in evs if e["event"] == "probe" and e["probe"] == "multicast-images"]
    assert len(probes) == 1
    probed = {i["PackageID"] for i in probes[0]["value"]}
    assert probed == multicast_before == {"C0700010", "C0700011"}
    cleared = {i for (k, i) in done if k == "method:3/m3.clear-image-multicast"}
    set_again = {i for (k, i) in done if k == "method:3/m3.set-image-multicast"}
    assert cleared == set_again == probed
    now = {pid for pid, i in images.items() if i["PkgFlags"] & MULTICAST_BIT}
    assert now == multicast_before  # C0700012 (unicast) was never given multicast


def test_a_second_run_on_a_locked_host_exits_3_and_changes_nothing(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    # A slower lab than the resume tests': the first run (its role removal alone 4.5 s) must
    # outlast the second CLI's start on a loaded machine. The MP signs the new multicast key at
    # once, so that the verification after Method 3 does not wait a minute at this speed.
    lab_file = custom_lab_file(tmp_path, lambda data: data["delays"].update(mcs_signing=0))
    lab = make_lab(lab_file, speed=10.0)
    proc = lab.popen(*ARGS, time_scale=SCALE)
    try:
        deadline = time.monotonic() + 30
        while journal_of(lab) is None or not journal_of(lab).is_file():  # type: ignore[union-attr]
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        (first,) = lab.run_dirs()
        res = lab.cli(*ARGS, time_scale=SCALE)
        assert res.returncode == 3, res.stdout + res.stderr
        assert f"error: {DP} is locked by run {first.name}" in res.stderr
        assert "nothing was changed" in res.stderr
        assert "Run folder" not in res.stdout
        # The refused run left nothing behind: no second run folder, no second journal.
        assert lab.run_dirs() == [first]
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert lab.world.multicast_healthy(DP)


def read_until(fd: int, text: str, timeout: float = 60) -> str:
    """What the run wrote on `fd` up to and including `text` (a question without a newline)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"never saw {text!r}; saw:\n{seen}"
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"the run closed its output before {text!r}; saw:\n{seen}"
            seen += chunk.decode("utf-8", "replace")
    return seen


def test_ctrl_c_at_the_question_before_the_run_exits_130_and_changes_nothing(
    make_lab: Callable[..., Lab],
) -> None:
    """Ctrl-C while the run asks about its destructive steps: exit 130, a message that says
    nothing was changed, no run folder, the site as it was."""
    lab = make_lab(speed=SPEED)
    images = lab.world.sites["C07"].images
    before = {pid: dict(i) for pid, i in images.items()}
    args = [a for a in ARGS if a not in ("--yes", "--non-interactive")]
    proc = lab.popen(*args, time_scale=SCALE, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    read_until(proc.stdout.fileno(), "Run them? [y/N]")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at the question; nothing was changed" in err
    assert "Traceback" not in err
    assert lab.run_dirs() == []
    assert {pid: dict(i) for pid, i in images.items()} == before


def test_ctrl_c_at_a_question_during_the_run_stops_it_with_130(
    make_lab: Callable[..., Lab],
) -> None:
    """Ctrl-C while a host's thread asks on the terminal (a manual step): the question gives
    up, the host stops there (interrupted, not "declined"), the run ends 130 with the command
    that continues it; it does not wait for an answer that will not come."""
    lab = make_lab(speed=SPEED)
    args = [a for a in ARGS if a != "--assume-manual-done" and a != "--non-interactive"]
    master, slave = pty.openpty()
    try:
        proc = lab.popen(*args, time_scale=SCALE, stdin=slave, stdout=slave)
        os.close(slave)
        read_until(master, "Done? [y/N]")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 130, err
    (run,) = lab.run_dirs()
    assert f"Continue with: invoke remediate multicast --resume {shlex.quote(str(run))}" in err
    ends = [(e["key"], e["status"]) for e in events(run) if e["event"] == "step-end"]
    assert ends == [("precheck/pre.site-reset", "interrupted")]
    assert events(run)[-1]["status"] == "interrupted"


def test_a_second_ctrl_c_still_ends_with_the_summary_reports_and_130(
    make_lab: Callable[..., Lab],
) -> None:
    """Ctrl-C twice in a row mid-wait (an impatient operator): the second one lands while the
    host stops or while the run finishes; either way the journal ends, summary.txt and the
    reports are written, the exit code is 130 and the command to continue is printed."""
    lab = make_lab(speed=SPEED)
    with lab_held(lab):
        proc = lab.popen(*ARGS, time_scale=SCALE)
        ready = MOMENTS["mid-wait-for-removal"]
        deadline = time.monotonic() + 60
        while not ready(
            events(path.parent) if (path := journal_of(lab)) and path.is_file() else []
        ):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (run,) = lab.run_dirs()
    assert events(run)[-1]["event"] == "run-end" and events(run)[-1]["exit_code"] == 130
    assert (run / "summary.txt").is_file() and (run / "report.json").is_file()
    assert "Interrupted. Continue with: invoke remediate multicast --resume" in err
