"""The run options are defined once, as RunRequest's fields (#13): the `remediate` and `check`
command lines are made from them, and a resumed run keeps the plan it recorded."""

from __future__ import annotations

import dataclasses

import pytest
from helpers_engine import run_cli

from cmrunbook.cli.remediate import RunRequest

FIELDS = [f.name for f in dataclasses.fields(RunRequest) if f.name != "runbook"]


def options_in_help(task: str) -> set[str]:
    res = run_cli("--help", task)
    assert res.returncode == 0, res.stderr
    return {
        line.split()[0].split("=")[0].removeprefix("--").replace("-", "_")
        for line in res.stdout.splitlines()
        if line.startswith("  --")
    }


def test_remediate_has_exactly_the_request_fields_as_options() -> None:
    assert options_in_help("remediate") == {*FIELDS, "runbook"}


def test_check_has_the_request_fields_but_method_rollback_and_yes() -> None:
    assert options_in_help("check") == {*FIELDS, "name"} - {"method", "rollback", "yes"}
    text = run_cli("--help", "check").stdout
    assert "How many target hosts run at once (default 20)." in text


@pytest.mark.parametrize("task", ["remediate", "check"])
def test_an_option_outside_the_request_is_refused(task: str) -> None:
    res = run_cli(task, "multicast", "--verify-settle", "3")
    assert res.returncode == 1 and "No idea what '--verify-settle' is!" in res.stderr


def test_resume_takes_the_recorded_plan_and_keeps_the_options_given_now() -> None:
    given = RunRequest.from_task(
        "ignored", {"set": ["a=1"], "forks": 2, "time_scale": 0.01, "resume": "runs/x"}
    )
    recorded = {
        "runbook": "multicast",
        "method": "auto",
        "inventory": "inv.yaml",
        "hosts": "cm07-dp01",
        "overrides": ["verify_settle=1800"],
        "rollback": False,
    }
    resumed = given.resumed_from(recorded)
    assert resumed.journal_record() == recorded
    assert (resumed.forks, resumed.time_scale, resumed.resume) == (2, 0.01, "runs/x")
    assert resumed.engine_options(restore_only=False).forks == 2
