"""Shared fixtures: a running lab on 127.0.0.1 and the real CLI run against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cmrunbook.lab.serve import RunningLab, start_lab

ROOT = Path(__file__).resolve().parents[1]
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
        env.update(self.running.env())
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 240, env: dict[str, str] | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`invoke ARGS --inventory <lab> --runs <tmp>` from the project folder, no TTY."""
        cmd = [INVOKE, *args]
        task = args[0]
        if task in ("remediate", "check"):
            cmd += ["--inventory", self.inventory, "--runs", str(self.runs), *FAST]
        return subprocess.run(
            cmd, cwd=ROOT, env=env or self.env(), text=True, capture_output=True,
            timeout=timeout, input=stdin if stdin is not None else "",
        )  # fmt: skip

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.runs.glob("*-*") if p.is_dir())

    @property
    def world(self):  # noqa: ANN201 - the lab's simulated state (cmrunbook.lab.world.Lab)
        return self.running.lab


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """Start a lab (default lab file, or the given one); stopped after the test."""
    started: list[RunningLab] = []

    def make(lab_file: Path | None = None, speed: float = 50.0) -> Lab:
        running = start_lab(
            tmp_path / f"lab{len(started)}" / "inventory.yaml", lab_file=lab_file, speed=speed
        )
        started.append(running)
        return Lab(running, tmp_path)

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab()
