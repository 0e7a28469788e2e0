"""Ctrl-C at a terminal ends every wait within about a second: the CLI against the lab, through
a pseudo-terminal, as an operator presses it (the tty sends SIGINT to the run's process group).

The waits are real time (--time-scale 1): a settle that re-checks every 5 minutes, a log wait
that polls every minute. The run ends interrupted (exit 130), journaled, with its summary and the
--resume hint.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Any

from conftest import INVOKE, ROOT, Lab, events
from test_run_multicast import RUN
from test_run_verify import signing_lab

from cmrunbook_lab.labfile import FaultSpec

#: How long the run may take to end after Ctrl-C: a second for the wait to notice, and the
#: journal, summary and exit of a Python process on a loaded machine.
REACTION = 5.0


class Terminal:
    """A run of the CLI on its own pseudo-terminal, as its controlling terminal."""

    def __init__(self, lab: Lab, *args: str) -> None:
        master, slave = pty.openpty()
        cmd = [INVOKE, *args, "--inventory", lab.inventory, "--runs", str(lab.runs)]
        self.proc = subprocess.Popen(
            [*cmd, "--time-scale", "1"],
            cwd=ROOT,
            env=lab.env(),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.master = master
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the run ended and closed its end
                return
            if not chunk:
                return
            self.output += chunk

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"never saw {text!r}:\n{self.text()}"
            time.sleep(0.05)

    def ctrl_c(self) -> float:
        """Press Ctrl-C; the seconds until the run ended."""
        started = time.monotonic()
        os.write(self.master, b"\x03")
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        elapsed = time.monotonic() - started
        self._reader.join(timeout=5)
        os.close(self.master)
        return elapsed

    def text(self) -> str:
        return self.output.decode("utf-8", errors="replace")


def _take_terminal() -> None:
    """In the child, after setsid: make stdin (the pty) the controlling terminal, and let
    Ctrl-C in even when the tests run as a background job (which starts with SIGINT ignored)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_a_real_time_settle_wait_ends_the_run_within_a_second(
    make_lab: Any, tmp_path: Path
) -> None:
    # Method 1 mends the DP at once, but the MP never signs its key: the verification settles
    # for 4 hours, re-checking every 5 minutes.
    lab = signing_lab(make_lab, tmp_path, signing=1_000_000)
    term = Terminal(
        lab,
        "remediate",
        "multicast",
        "--method",
        "1",
        "--hosts",
        "cm07-dp02",
        *RUN,
        "--set",
        "image_flag_wait=0",
    )
    term.wait_for("not yet (")  # the first check failed: the settle wait has begun
    time.sleep(1.5)  # well into the wait, not at its first instant
    elapsed = term.ctrl_c()
    assert term.proc.returncode == 130, term.text()
    assert elapsed < REACTION, f"{elapsed:.1f}s after Ctrl-C:\n{term.text()}"
    assert "Interrupted. Continue with: invoke remediate multicast --resume" in term.text()
    assert "interrupted" in term.text()  # the summary's result column
    (run,) = lab.run_dirs()
    evs = events(run)
    (verify,) = [e for e in evs if e["event"] == "step-end" and e["key"].startswith("verify:1")]
    assert verify["status"] == "interrupted"
    assert evs[-1]["event"] == "run-end" and evs[-1]["status"] == "interrupted"
    assert (run / "summary.txt").is_file()


def test_ctrl_c_in_a_real_time_log_wait_ends_the_run_within_a_second(
    make_lab: Any,
) -> None:
    # The multicast role's removal never ends: Method 3 step 6 polls the DP's logs every 10 s
    # for 30 minutes, with the site's images cleared (Ctrl-C sets them back).
    lab = make_lab()
    lab.world.faults.add(
        FaultSpec(host="cm07-dp02", kind="log-hang", operation="uninstall", role="multicast")
    )
    term = Terminal(lab, "remediate", "multicast", "--method", "3", "--hosts", "cm07-dp02", *RUN)
    term.wait_for("of 30m)")  # the first poll found nothing: the wait has begun
    time.sleep(1.5)  # into the 10 s between two polls
    elapsed = term.ctrl_c()
    assert term.proc.returncode == 130, term.text()
    assert elapsed < REACTION, f"{elapsed:.1f}s after Ctrl-C:\n{term.text()}"
    assert "site C07: multicast restored on images: C0700010, C0700011" in term.text()
    (run,) = lab.run_dirs()
    evs = events(run)
    ends = [e for e in evs if e["event"] == "step-end"]
    (wait,) = [e for e in ends if e["key"].endswith("wait-mcs-uninstall")]
    assert wait["status"] == "interrupted"
    assert evs[-1]["event"] == "run-end" and evs[-1]["status"] == "interrupted"
