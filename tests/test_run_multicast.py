"""Multicast for real: the CLI against the lab, over WinRM with NTLM message encryption."""

from __future__ import annotations

import json

from conftest import Lab


def test_method_3_fixes_the_mcs_key_fault_waiting_on_both_logs(lab: Lab) -> None:
    assert not lab.world.multicast_healthy("cm07-dp02")
    res = lab.cli(
        "remediate", "multicast", "--method", "3", "--hosts", "cm07-dp02", "--yes",
        "--non-interactive", "--assume-manual-done",
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.world.multicast_healthy("cm07-dp02")
    assert "verified after Method 3" in res.stdout
    (run,) = lab.run_dirs()
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    waits = [e for e in events if e["event"] == "step-end" and "wait-mcs" in e["key"]]
    assert [w["status"] for w in waits] == ["ok", "ok"]
    assert all(any("MCSMSI.log" in line for line in w["log_lines"]) for w in waits)
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 0


def test_destructive_steps_without_yes_under_non_interactive_change_nothing(lab: Lab) -> None:
    before = lab.running.server.stats.snapshot()
    res = lab.cli("remediate", "multicast", "--method", "3", "--non-interactive")
    assert res.returncode == 2
    assert (
        "destructive steps" in res.stderr
        and "Disable multicast on the distribution point" in res.stderr
    )
    after = lab.running.server.stats.snapshot()
    assert sum(h.total_requests for h in after.values()) == sum(
        h.total_requests for h in before.values()
    )
    assert lab.run_dirs() == []
