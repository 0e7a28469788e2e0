"""`invoke lab` tells how to use it (#12 item 9): the client command it prints matches its
--speed and runs as printed against it; a second lab on a busy port says so and names --port."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INVOKE, ROOT, Lab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env_file_values(path: Path) -> dict[str, str]:
    """`export KEY='value'` lines, as the lab writes credentials.env."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = shlex.split(value)[0]
    return out


@pytest.fixture
def started_lab(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    """`invoke lab --speed 100` in the background: the lines it printed before serving. Its
    output goes to a file, which (unlike a pipe nobody reads) never blocks the lab."""
    state = tmp_path / "lab-state"
    out = tmp_path / "lab.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [INVOKE, "lab", "--speed", "100", "--port", str(_free_port()), "--state", str(state)],
            cwd=ROOT,
            text=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops the lab." not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        lines = out.read_text().splitlines()
        assert proc.poll() is None, lines
        yield lines, state
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_lab_prints_the_client_command_for_its_speed_and_it_runs_as_printed(
    started_lab: tuple[list[str], Path], tmp_path: Path
) -> None:
    lines, state = started_lab
    text = "\n".join(lines)
    assert "--time-scale 0.01" in text, text  # speed 100 x 0.01 = 1 >= 0.75
    assert "--yes runs the destructive steps without asking" in text
    assert "--assume-manual-done treats the console-only checks as done" in text
    start = next(i for i, line in enumerate(lines) if "invoke remediate multicast" in line)
    command = shlex.split(lines[start].removesuffix("\\") + lines[start + 1])
    assert command[:3] == ["invoke", "remediate", "multicast"]
    assert command[command.index("--inventory") + 1] == str(state / "inventory.yaml")
    env = {**os.environ, **_env_file_values(state / "credentials.env")}
    ran = subprocess.run(
        [INVOKE, *command[1:], "--runs", str(tmp_path / "runs")],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr


def test_second_lab_on_a_busy_port_says_so_and_names_port(lab: Lab, tmp_path: Path) -> None:
    port = lab.running.server.port
    res = subprocess.run(
        [INVOKE, "lab", "--port", str(port), "--state", str(tmp_path / "second")],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"error: port {port} on 127.0.0.1 is in use" in res.stderr
    assert "--port N" in res.stderr
    assert "Traceback" not in res.stderr
    assert "Lab listening" not in res.stdout
