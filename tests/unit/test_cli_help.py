"""Help and output behave as in every CLI (#12 item 3): `--help`/`-h` on every task, long
options only (no `--=STRING` from invoke's automatic short flags), and no BrokenPipeError
traceback when the reader of the output goes away (`| head`)."""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers_engine import INVOKE, REPO, run_cli

TASKS = [
    "remediate",
    "check",
    "checklist",
    "diagnose",
    "report",
    "schedule",
    "validate",
    "schema",
    "lab",
    "log-check",
]


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


def run_into_closed_pipe(*command: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader has already gone, as after `| head` exited: every
    write fails, whatever the timing (a real `head` may exit before or after the writes)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            command, cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write_end)


def test_output_into_a_closed_pipe_ends_without_a_traceback() -> None:
    res = run_into_closed_pipe(str(INVOKE), "remediate", "multicast", "--dry-run")
    assert res.stderr == ""
    assert res.returncode == 141  # as a shell reports a command SIGPIPE ended


CMRUNBOOK = str(INVOKE.with_name("cmrunbook"))


def test_cmrunbook_alone_shows_its_tasks_before_invokes_core_options() -> None:
    res = subprocess.run([CMRUNBOOK], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("Usage: cmrunbook [--core-opts] <task> [--task-opts] ...\n")
    assert "  remediate " in out and "  list " in out
    assert out.index("  remediate ") < out.index("Core options (invoke's):") < out.index("--dry")


def test_cmrunbook_list_into_a_closed_pipe_ends_without_a_traceback() -> None:
    res = run_into_closed_pipe(CMRUNBOOK, "--list")
    assert res.stderr == ""
    assert res.returncode == 141


@pytest.mark.parametrize("command", [[str(INVOKE), "list"], [CMRUNBOOK, "list"]])
def test_list_shows_each_runbook_with_its_kb_methods_and_command(command: list[str]) -> None:
    res = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert set(rows) == {p.stem for p in (REPO / "runbooks").glob("*.yaml")} - {"_logs"}
    multicast = rows["multicast"].split("  ")
    assert [c.strip() for c in multicast if c.strip()][:4] == [
        "multicast",
        "KB971413",
        "1, 2, 3, 4, auto",
        "invoke remediate multicast",
    ]
    assert "invoke check site-hotfix" in rows["site-hotfix-check"]
    assert "KB2586709" in rows["site-hotfix-check"]
