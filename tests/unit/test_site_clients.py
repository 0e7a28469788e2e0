"""Clients read only from their site: resolved in one task per site server, not a thread each,
and journaled each with its own verdict (run/execute.py `Runner`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeSite, result_line

from cmrunbook.cli.common import build_plan
from cmrunbook.record.journal import JournalWriter
from cmrunbook.run.execute import Options, Runner, Sessions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMRUNBOOK_ROOT", str(ROOT))
    monkeypatch.chdir(ROOT)


def _reading(site: str, groups: list[list[str]]) -> str:
    data = {"site": site, "file": "TSCore.dll", "required": "5.0.7958.1104", "groups": groups}
    return result_line(message=f"site {site} read", data=data)


class Console:
    """Which thread printed each host's lines."""

    def __init__(self) -> None:
        self.threads: dict[str, set[str]] = {}

    def step(self, host: str, text: str) -> None:
        self.threads.setdefault(host, set()).add(threading.current_thread().name)

    def progress(self, host: str, text: str) -> None:
        self.step(host, text)

    def confirm(self, question: str) -> bool:
        return False


def test_a_site_s_clients_are_resolved_in_one_task_and_each_journaled(tmp_path: Path) -> None:
    catalog, plan = build_plan(
        "client-hotfix-check", inventory=None, method=None, hosts=None, overrides=[]
    )
    names = [hp.target.name for hp in plan.hosts]
    assert names == ["xp-wks001", "xp-wks002"]  # the XP clients of the 2012 R2 site
    site = FakeSite()
    version = [r"C:\WINDOWS\CCM\TSCore.dll", "5.00.7958.1000"]
    inventory = "software inventory"
    site.on(
        "client.tscore-inventory",
        _reading(
            "P12",
            [
                ["compliant", "5.0.7958.1104", *version, inventory, "", "xp-wks001"],
                ["non-compliant", "5.0.7958.1000", *version, inventory, "", "xp-wks002"],
            ],
        ),
    )
    console = Console()
    journal = JournalWriter(tmp_path)
    runner = Runner(
        catalog, plan, Sessions(site.connect), journal, console, Options(forks=8, via="site")
    )
    try:
        outcomes = runner.run()
    finally:
        journal.close()
    assert [o.host for o in outcomes] == names
    status = {o.host: o.status for o in outcomes}
    assert status == {"xp-wks001": "ok", "xp-wks002": "non-compliant"}
    # One reading of the site, and its clients one after the other in one thread.
    assert [c.host for c in site.calls] == ["cm12-site01"]
    assert len(console.threads["xp-wks001"] | console.threads["xp-wks002"]) == 1
    events = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    ends: dict[str, Any] = {
        e["host"]: e for e in events if e["event"] == "step-end" and e["status"] != "skipped"
    }
    assert ends["xp-wks001"]["data"]["compliance"] == "compliant"
    assert ends["xp-wks002"]["status"] == "non-compliant"
    assert "xp-wks002: inventoried TSCore.dll is 5.0.7958.1000" in ends["xp-wks002"]["message"]
    finished = {e["host"]: e["status"] for e in events if e["event"] == "host-end"}
    assert finished == status
