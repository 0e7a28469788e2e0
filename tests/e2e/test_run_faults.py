"""The fault matrix: Method 3 on two DPs at once (`--forks 2`), one of them suffering a fault.

For every fault, what an operator checks: the exit code, an error that names the host and the
cause, a journal that is complete (the failed step, the host's end, the run's end) and that
`--resume` continues, and the other DP mended as if nothing had happened. Both DPs of this lab
have the multicast-key fault that Method 3 mends.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Lab, custom_lab_file, events

from cmrunbook.record.journal import ResumeState
from cmrunbook_lab.labfile import FaultSpec
from cmrunbook_lab.logs import lo_name

SPEED = 500.0  # a 45 s role removal takes 0.09 s
SCALE = "0.005"  # a 1800 s log timeout is 9 s; polls are 0.05 s
SICK, WELL = "cm07-dp01", "cm07-dp02"
RUN = ("--yes", "--non-interactive", "--assume-manual-done", "--forks", "2")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def point_at(lab: Lab, port: int) -> str:
    """A copy of the lab's inventory whose SICK entry uses `port`; returns its path."""
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    data["hosts"][SICK]["winrm"]["port"] = port
    path = lab.tmp / "inventory-closed-port.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


@dataclass
class Case:
    """One fault: how to cause it, what the run must show, how to heal it before --resume."""

    cause: Callable[[Lab], dict[str, Any]]  # -> extra cli kwargs (inventory=...)
    exit_code: int
    says: list[str]  # in SICK's error (host-end message), besides the host name
    failed_step: str | None  # the key of SICK's failed step-end
    heal: Callable[[Lab, dict[str, Any]], None] | None = None  # then --resume must finish ok
    args: list[str] = field(default_factory=list)
    time_scale: str = SCALE
    # For a fault the run survives: the sign, left on the lab, that the fault did happen.
    happened: Callable[[Lab], bool] | None = None


def _second_shell(lab: Lab) -> bool:
    """The quota fault made the engine open another shell on SICK (one per run otherwise)."""
    stats = lab.running.server.stats.snapshot()
    return stats[SICK].requests["Create"] == stats[WELL].requests["Create"] + 1


def _rolled_over(lab: Lab) -> bool:
    host = lab.world.host(SICK)
    return host.fs.get(lo_name(host.log_path("MCSSetup.log"))) is not None


def _refuse(lab: Lab) -> dict[str, Any]:
    return {"inventory": point_at(lab, closed_port())}


def _heal_refuse(lab: Lab, kw: dict[str, Any]) -> None:
    # The operator starts WinRM again: the run's inventory now reaches the host.
    Path(kw["inventory"]).write_text(Path(lab.inventory).read_text(encoding="utf-8"))


def _server(kind: str, **opts: Any) -> Callable[[Lab], dict[str, Any]]:
    def cause(lab: Lab) -> dict[str, Any]:
        lab.running.server.faults.set(SICK, kind, **opts)
        return {}

    return cause


def _clear_server(lab: Lab, kw: dict[str, Any]) -> None:
    lab.running.server.faults.clear(SICK)


def _host_fault(**spec: Any) -> Callable[[Lab], dict[str, Any]]:
    def cause(lab: Lab) -> dict[str, Any]:
        lab.world.faults.add(FaultSpec(host=SICK, **spec))
        return {}

    return cause


def _nothing(lab: Lab, kw: dict[str, Any]) -> None:
    """The fault was a one-off (count 1): nothing to mend before resuming."""


WAIT_UNINSTALL = "method:3/m3.wait-mcs-uninstall"
PRECHECK = "precheck/pre.large-wim-hotfix"  # the first script that runs on the DP itself

CASES: dict[str, Case] = {
    "connection-refused": Case(
        _refuse,
        1,
        ["cm07-dp01: connection refused at http://127.0.0.1:", "is WinRM listening"],
        PRECHECK,
        _heal_refuse,
    ),
    "http-500": Case(
        _server("http500", count=None),
        1,
        ["cm07-dp01: WS-Man fault", "(w:InternalError)", "internal error"],
        PRECHECK,
    ),
    "hang": Case(
        _server("hang", count=None),
        1,
        ["cm07-dp01: no answer from", "(read timeout)"],
        PRECHECK,
        _clear_server,
        args=["--step-timeout", "2"],
    ),
    "reset": Case(
        _server("reset", count=None),
        1,
        ["cm07-dp01: connection to", "broke in the middle"],
        PRECHECK,
    ),
    "quota": Case(_server("quota", count=1), 0, [], None, happened=_second_shell),
    "log-failure": Case(
        _host_fault(kind="log-failure", operation="uninstall", role="multicast"),
        1,
        [
            "MCSSetup.log reports failure: mcs.msi exited with return code: 1603",
            "last lines read:",
            "Deinstalling the SMS_MULTICAST_SERVICE_POINT",
        ],
        WAIT_UNINSTALL,
    ),
    "log-hang": Case(
        _host_fault(kind="log-hang", operation="uninstall", role="multicast"),
        1,
        [
            "timed out after 2s waiting for MCSSetup.log, MCSMSI.log",
            "last lines read:",
            "MCSSetup.log: Running: msiexec.exe /i mcs.msi REMOVE=ALL",
        ],
        WAIT_UNINSTALL,
        time_scale="0.001",
    ),
    "log-rollover": Case(
        _host_fault(
            kind="log-rollover", operation="uninstall", role="multicast", log="MCSSetup.log"
        ),
        0,
        [],
        None,
        happened=_rolled_over,
    ),
    "reboot-mid-step": Case(
        _host_fault(kind="reboot-during", step="engine/log-read", down_seconds=60),
        1,
        [
            "cm07-dp01: http://127.0.0.1:",
            "closed the connection without answering",
            "it answered earlier in this run, so it may be restarting; --resume when it is back",
        ],
        WAIT_UNINSTALL,
        _nothing,
    ),
    "script-failure": Case(
        _host_fault(kind="script-failure", step=PRECHECK, message="Injected failure: E_LAB"),
        1,
        ["Injected failure: E_LAB"],
        PRECHECK,
        _nothing,
    ),
}


def two_dp_lab(make_lab: Callable[..., Lab], tmp_path: Path) -> Lab:
    def change(data: dict[str, Any]) -> None:
        data["hosts"][SICK]["dp"]["multicast_fault"] = "mcs-key"

    return make_lab(custom_lab_file(tmp_path, change), speed=SPEED)


def method_3(lab: Lab, case: Case, kw: dict[str, Any], *more: str) -> Any:
    return lab.cli(
        "remediate",
        "multicast",
        "--method",
        "3",
        "--hosts",
        f"{SICK},{WELL}",
        *RUN,
        *case.args,
        *more,
        time_scale=case.time_scale,
        **kw,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_fault(name: str, make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    case = CASES[name]
    lab = two_dp_lab(make_lab, tmp_path)
    kw = case.cause(lab)
    res = method_3(lab, case, kw)
    out = res.stdout + res.stderr
    assert res.returncode == case.exit_code, out
    (run,) = lab.run_dirs()
    evs = events(run)
    ends = {e["host"]: e for e in evs if e["event"] == "host-end"}

    # The other DP: mended, as if nothing had happened.
    assert ends[WELL]["status"] == "ok" and ends[WELL]["message"] == "verified after Method 3"
    assert lab.world.multicast_healthy(WELL)
    # The journal is complete.
    assert evs[-1]["event"] == "run-end" and evs[-1]["exit_code"] == case.exit_code
    assert set(ends) == {SICK, WELL}
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["run"]["complete"] and report["run"]["exit_code"] == case.exit_code

    if case.exit_code == 0:
        assert ends[SICK]["status"] == "ok", ends[SICK]
        assert lab.world.multicast_healthy(SICK)
        assert case.happened is not None and case.happened(lab), "the fault never happened"
        return

    sick = ends[SICK]
    assert sick["status"] == "failed"
    message = sick["message"]
    for text in case.says:
        assert text in message, message
    # The console says which host failed and why, on one line an operator can grep.
    first = message.splitlines()[0]
    assert re.search(rf"^\S+ {SICK} +FAILED: {re.escape(first)}$", res.stdout, re.M), res.stdout
    assert re.search(rf"^{SICK} +\d+ +failed .*{re.escape(first)}$", res.stdout, re.M)
    failed = [e for e in evs if e["event"] == "step-end" and e["status"] == "failed"]
    assert [(e["host"], e["key"]) for e in failed] == [(SICK, case.failed_step)]
    # What --resume would start from: everything before the failed step, not the failed step.
    state = ResumeState.load(run).hosts[SICK]
    assert case.failed_step not in state.done
    assert not lab.world.multicast_healthy(SICK)

    if case.heal is None:
        return
    case.heal(lab, kw)
    again = method_3(lab, case, kw, "--resume", str(run))
    assert again.returncode == 0, again.stdout + again.stderr
    after = events(run)[len(evs) :]
    assert after[0]["event"] == "resume"
    ends = {e["host"]: e for e in after if e["event"] == "host-end"}
    assert ends[SICK]["status"] == "ok" and ends[SICK]["message"] == "verified after Method 3"
    assert not any(e.get("host") == WELL for e in after), "the mended DP was touched again"
    assert f"{WELL}" in again.stdout and "already ok in the resumed run" in again.stdout
    rerun = {e["key"] for e in after if e["event"] == "step-end"} & state.done
    assert rerun == set(), f"steps done before were run again: {rerun}"
    assert lab.world.multicast_healthy(SICK)


def test_wrong_password_is_a_clear_401_for_each_host_and_changes_nothing(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = two_dp_lab(make_lab, tmp_path)
    env = lab.env(CMRUNBOOK_PASSWORD="not-the-password")
    res = lab.cli(
        "remediate",
        "multicast",
        "--method",
        "3",
        "--hosts",
        f"{SICK},{WELL}",
        *RUN,
        env=env,
        time_scale=SCALE,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    (run,) = lab.run_dirs()
    evs = events(run)
    ends = {e["host"]: e for e in evs if e["event"] == "host-end"}
    # the first host's call is the one logon attempt; the other is not tried with the password
    messages = sorted(ends[host]["message"] for host in (SICK, WELL))
    statuses = sorted(ends[host]["status"] for host in (SICK, WELL))
    assert statuses == ["not-tried", "unreachable"], ends
    assert "rejected the credentials of LAB\\cmrunbook (HTTP 401)" in messages[0]
    assert "not tried again: it rejected the credentials" in messages[1]
    assert not any(e["status"] == "changed" for e in evs if e["event"] == "step-end")
    assert evs[-1]["event"] == "run-end" and evs[-1]["exit_code"] == 1
