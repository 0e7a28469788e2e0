"""Help and output behave as in every CLI (#12 item 3): `--help`/`-h` on every task, long
options only (no `--=STRING` from invoke's automatic short flags), and no BrokenPipeError
traceback when the reader of the output goes away (`| head`)."""

from __future__ import annotations

import subprocess

import pytest
from helpers_engine import INVOKE, REPO, run_cli

TASKS = ["remediate", "check", "checklist", "diagnose", "report", "schedule", "validate",
         "schema", "lab", "log-check"]  # fmt: skip


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("name", TASKS)
def test_help_flag_after_the_task_shows_its_help(name: str, flag: str) -> None:
    res = run_cli(name, flag)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith(f"Usage: inv[oke] [--core-opts] {name} "), res.stdout
    assert "Docstring:" in res.stdout
    assert res.stderr == ""


@pytest.mark.parametrize("name", TASKS)
def test_help_lists_long_options_only(name: str) -> None:
    res = run_cli("--help", name)
    assert res.returncode == 0, res.stdout + res.stderr
    options = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("  -")]
    assert all(opt.startswith("--") and not opt.startswith("--=") for opt in options), options


def test_output_into_a_closed_pipe_ends_without_a_traceback() -> None:
    """A dry run with every script (600 kB) into `head -c 1`, which exits after one byte."""
    task = f"{INVOKE} remediate multicast --dry-run --show-scripts"
    pipeline = f'{task} | head -c 1; echo " status=${{PIPESTATUS[0]}}"'
    res = subprocess.run(
        ["bash", "-c", pipeline], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr
    assert res.stderr == ""
    assert res.stdout.endswith(" status=141\n"), res.stdout
