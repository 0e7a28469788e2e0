"""Shared fixtures: a running lab on 127.0.0.1 and the real CLI run against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmrunbook.run.locks import LOCK_DIR_ENV
from cmrunbook_lab.labfile import default_lab_path
from cmrunbook_lab.serve import RunningLab, start_lab
from cmrunbook_lab.world import Lab as WorldLab

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("unit", "lab", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its folder), so `pytest -m unit` runs the fast ones."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


INVOKE = str(Path(sys.executable).with_name("invoke"))
FAST = ["--time-scale", "0.02"]  # engine waits: a 1800 s log timeout becomes 36 s, polls 0.2 s


@dataclass
class Lab:
    """A running lab, its inventory, and a way to run the CLI against it."""

    running: RunningLab
    tmp: Path

    @property
    def inventory(self) -> str:
        return str(self.running.inventory_path)

    @property
    def runs(self) -> Path:
        return self.tmp / "runs"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMRUNBOOK_")}
        env[LOCK_DIR_ENV] = os.environ[LOCK_DIR_ENV]  # the test's own (own_lock_dir)
        env.update(self.running.env())
        env.update(extra)
        return env

    def cli(
        self,
        *args: str,
        timeout: float = 240,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        time_scale: str = FAST[1],
        inventory: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`invoke ARGS --inventory <lab> --runs <tmp>` from the project folder, no TTY.

        `time_scale` replaces the default 0.02 (engine waits); `inventory` another inventory
        file (e.g. the lab's with some hosts pointed at a closed port)."""
        cmd = [INVOKE, *args]
        task = args[0]
        if task in ("remediate", "check"):
            cmd += ["--inventory", inventory or self.inventory, "--runs", str(self.runs)]
            cmd += ["--time-scale", time_scale]
        return subprocess.run(
            cmd,
            cwd=ROOT,
            env=env or self.env(),
            text=True,
            capture_output=True,
            timeout=timeout,
            input=stdin if stdin is not None else "",
        )

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.runs.glob("*-*") if p.is_dir())

    def popen(
        self,
        *args: str,
        time_scale: str = FAST[1],
        stdin: int = subprocess.DEVNULL,
        stdout: int = subprocess.PIPE,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start `invoke ARGS` (as `cli`) without waiting: for killing a run in the middle
        (`stdin=subprocess.PIPE` to answer, or not, its questions; a pty's end as stdin and
        stdout for a terminal).

        The run takes Ctrl-C (SIGINT) even when the tests do not: a shell starts a background
        job (`pytest ... &`) with SIGINT ignored, a child inherits an ignored signal (not a
        handler), and Python then never raises KeyboardInterrupt; the run would go on and end
        0 where a Ctrl-C test expects 130. So the default handler is set while it is started."""
        cmd = [INVOKE, *args, "--inventory", self.inventory, "--runs", str(self.runs)]
        cmd += ["--time-scale", time_scale]
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env or self.env(),
                text=True,
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
            )
        finally:
            signal.signal(signal.SIGINT, previous)

    @property
    def world(self) -> WorldLab:
        """The lab's simulated state."""
        return self.running.lab


@pytest.fixture(autouse=True)
def own_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own lock folder: the locks are per jump host, and tests run in parallel
    (and beside a developer's own runs) on one machine. Every CLI a test starts inherits it."""
    folder = tmp_path / "locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """Start a lab (default lab file, or the given one); stopped after the test."""
    started: list[RunningLab] = []

    def make(lab_file: Path | None = None, speed: float = 50.0, password: str | None = None) -> Lab:
        running = start_lab(
            tmp_path / f"lab{len(started)}" / "inventory.yaml",
            lab_file=lab_file,
            speed=speed,
            password=password,
        )
        started.append(running)
        return Lab(running, tmp_path)

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab()


def events(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of a run's journal, in order."""
    text = (run_dir / "journal.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def custom_lab_file(
    tmp: Path, change: Callable[[dict[str, Any]], None], name: str = "lab.yaml"
) -> Path:
    """A lab file in `tmp`: the default lab's data after `change(data)` edits it in place."""
    data = yaml.safe_load(default_lab_path().read_text(encoding="utf-8"))
    change(data)
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
