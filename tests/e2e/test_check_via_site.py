"""`invoke check client-hotfix --via site|auto|direct` against the lab: a generated fleet of a few
hundred Windows XP clients, read client by client or from the site's SMS Provider at once.

Each verdict is checked against the lab's model of the client (the file on disk for a WinRM
check, the site's software inventory for a site check), and the site is read in one command
whatever the number of clients.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmrunbook.load.inventory import load_inventory
from cmrunbook.record.journal_read import read_events
from cmrunbook.run.locks import HostLocks, host_lock_keys, lock_dir
from tests.conftest import Lab, custom_lab_file

SITE_SERVER = "cm12-site01"
HOTFIX = (5, 0, 7958, 1104)


def _fleet_lab(tmp: Path, count: int) -> Path:
    """The default lab with its generated fleet grown to `count` clients: every 2nd without
    WinRM, every 7th missing from the site's software inventory."""

    def change(data: dict[str, Any]) -> None:
        (fleet,) = data["clients"]
        fleet.update(count=count, no_winrm_every=2, not_inventoried_every=7)

    return custom_lab_file(tmp, change, name=f"fleet-{count}.yaml")


def _expected(lab: Lab, name: str, *, from_site: bool, published: bool = False) -> str:
    """The report status the lab's model gives a client: its file's version over WinRM; from
    the site, the lowest inventoried version over its current records, overruled by the
    baseline's compliance state (once published) only towards non-compliant. No
    inventoried version is unknown, never ok, whatever the state says."""
    host = lab.world.host(name)
    spec = host.spec.client
    assert spec is not None
    if not from_site:
        return _by_version([spec.tscore_version] if spec.tscore_version else [])
    versions = []
    if spec.inventoried:
        versions.append(spec.inventoried_version or spec.tscore_version)
        if spec.second_record == "current":
            versions.append(spec.second_record_version)
    inventory = _by_version([v for v in versions if v])
    # A name's second current record reports no state: a non-compliant state of the first
    # still decides.
    state = spec.baseline_state if published else None
    if state == "non-compliant":
        return "non-compliant"
    return inventory


def _by_version(versions: list[str]) -> str:
    if not versions:
        return "unknown"
    lowest = min(tuple(int(x) for x in v.split(".")) for v in versions)
    return "ok" if lowest >= HOTFIX else "non-compliant"


def _check(lab: Lab, via: str | None) -> tuple[Any, dict[str, Any], Path]:
    """One check of the fleet; `via` None leaves --via to its default."""
    lab.running.server.stats.reset()
    chosen = ("--via", via) if via else ()
    res = lab.cli("check", "client-hotfix", "--non-interactive", *chosen, "--forks", "20")
    run = max(lab.run_dirs(), key=lambda p: p.stat().st_mtime_ns)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    return res, report, run


def _fleet_statuses(report: dict[str, Any]) -> dict[str, str]:
    return {h["name"]: h["status"] for h in report["hosts"] if h["name"].startswith("xp-fleet")}


def _site_requests(lab: Lab) -> int:
    stats = lab.running.server.stats.snapshot()
    return stats[SITE_SERVER].total_requests if SITE_SERVER in stats else 0


def _client_requests(lab: Lab) -> int:
    stats = lab.running.server.stats.snapshot()
    return sum(s.total_requests for h, s in stats.items() if h.startswith("xp-fleet"))


def test_via_site_reads_every_client_from_the_site_in_one_command(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(_fleet_lab(tmp_path, 300))
    res, report, run = _check(lab, "site")
    assert res.returncode == 1, res.stdout + res.stderr  # some clients are non-compliant
    statuses = _fleet_statuses(report)
    assert len(statuses) == 300
    expected = {n: _expected(lab, n, from_site=True) for n in statuses}
    assert statuses == expected
    assert {"ok", "non-compliant", "unknown"} <= set(statuses.values())
    # No client was contacted, and the site server ran the one site script.
    assert _client_requests(lab) == 0
    site_scripts = [e["name"] for e in _scripts(run) if e["name"].endswith("#site")]
    assert len(site_scripts) == 1, site_scripts
    # A client the inventory lacks is unknown, with the reason.
    hosts = {h["name"]: h for h in report["hosts"]}
    assert "xp-fleet007" in hosts and hosts["xp-fleet007"]["status"] == "unknown"
    assert "not in the site's software inventory" in hosts["xp-fleet007"]["message"]
    # The WinRM step of a client is skipped, said why.
    assert any("--via site" in (s.get("message") or "") for s in hosts["xp-fleet002"]["steps"])


def test_site_requests_do_not_grow_with_the_clients(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    small = make_lab(_fleet_lab(tmp_path, 40))
    _check(small, "site")
    large = make_lab(_fleet_lab(tmp_path, 400))
    _check(large, "site")
    assert _site_requests(small) > 0
    assert _site_requests(large) == _site_requests(small)


def test_auto_mixes_direct_and_site_with_the_reports_of_direct(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(_fleet_lab(tmp_path, 200))
    res_direct, direct, direct_run = _check(lab, "direct")
    direct_site = _site_requests(lab)
    res_auto, auto, auto_run = _check(lab, "auto")
    auto_site = _site_requests(lab)
    assert res_auto.returncode == res_direct.returncode == 1
    statuses = _fleet_statuses(auto)
    expected = {n: _expected(lab, n, from_site=not lab.world.host(n).has_winrm) for n in statuses}
    assert statuses == expected
    # The same verdicts, tally and report shapes as the direct path.
    assert statuses == _fleet_statuses(direct)
    assert auto["summary"]["by_status"] == direct["summary"]["by_status"]
    tally = [line for line in res_auto.stdout.splitlines() if re.match(r"\d+ hosts: ", line)]
    assert len(tally) == 1 and tally[0] in res_direct.stdout.splitlines(), tally
    for run in (direct_run, auto_run):
        suites = ET.parse(run / "junit.xml").getroot().findall("testsuite")
        assert len([s for s in suites if s.get("hostname", "").startswith("xp-fleet")]) == 200
        assert "xp-fleet007" in (run / "report.html").read_text(encoding="utf-8")
    # One site script for the 100 clients without WinRM instead of one each.
    assert auto_site < direct_site / 10, (auto_site, direct_site)


def test_a_client_read_only_from_its_site_is_not_locked(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(_fleet_lab(tmp_path, 20))
    inv = load_inventory(Path(lab.inventory))
    busy = inv.hosts["xp-fleet001"]  # has WinRM: checked directly unless --via site
    with HostLocks(lock_dir(), host_lock_keys([busy], inv), "another-run"):
        res = lab.cli("check", "client-hotfix", "--non-interactive", "--via", "site")
        assert res.returncode == 1, res.stdout + res.stderr
        res = lab.cli("check", "client-hotfix", "--non-interactive", "--via", "auto")
        assert res.returncode == 3, res.stdout + res.stderr
        assert "xp-fleet001 is locked by run another-run" in res.stderr


def test_an_unknown_via_is_refused_before_anything_runs(lab: Lab) -> None:
    res = lab.cli("check", "client-hotfix", "--non-interactive", "--via", "sites")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--via sites: expected one of auto, direct, site" in res.stderr
    assert lab.run_dirs() == []


def test_auto_is_the_default(make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    """Without --via, clients with WinRM are checked on themselves and the others from one
    reading of their site, in one report."""
    lab = make_lab(_fleet_lab(tmp_path, 60))
    res, report, run = _check(lab, None)
    assert res.returncode == 1, res.stdout + res.stderr
    statuses = _fleet_statuses(report)
    assert len(statuses) == 60
    winrm = {n for n in statuses if lab.world.host(n).has_winrm}
    assert 0 < len(winrm) < 60
    expected = {n: _expected(lab, n, from_site=n not in winrm) for n in statuses}
    assert statuses == expected
    stats = lab.running.server.stats.snapshot()
    contacted = {h for h, s in stats.items() if h.startswith("xp-fleet") and s.total_requests}
    assert contacted == winrm
    site_scripts = [e["name"] for e in _scripts(run) if e["name"].endswith("#site")]
    assert len(site_scripts) == 1, site_scripts


def _publish(lab: Lab) -> None:
    """The check's baseline, published and deployed to the fleet's collection (P1200030)."""
    res = lab.cli(
        "publish",
        "client-hotfix-check",
        "--site",
        "P12",
        "--collection",
        "P1200030",
        "--inventory",
        lab.inventory,
        "--yes",
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_via_site_reads_the_baselines_compliance_states(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """Once the baseline is published, a client's reported state decides only towards
    non-compliant: XP-FLEET008 (state non-compliant, inventory 5.0.7958.1104) is non-compliant;
    XP-FLEET034 (state compliant, inventory 5.0.7958.1000) is non-compliant; XP-FLEET003 (no
    state) is the inventory's. The message says which source decided."""
    lab = make_lab(_fleet_lab(tmp_path, 120))
    _, before, _ = _check(lab, "site")
    _publish(lab)
    res, report, _ = _check(lab, "site")
    assert res.returncode == 1, res.stdout + res.stderr
    statuses = _fleet_statuses(report)
    expected = {n: _expected(lab, n, from_site=True, published=True) for n in statuses}
    assert statuses == expected
    assert statuses != _fleet_statuses(before)
    hosts = {h["name"]: h for h in report["hosts"]}
    assert _fleet_statuses(before)["xp-fleet008"] == "ok"
    assert statuses["xp-fleet008"] == "non-compliant"
    assert "by the baseline compliance state" in hosts["xp-fleet008"]["message"]
    assert statuses["xp-fleet034"] == "non-compliant"
    assert "decided by the software inventory" in hosts["xp-fleet034"]["message"]
    assert statuses["xp-fleet003"] == _fleet_statuses(before)["xp-fleet003"] == "non-compliant"
    assert "decided by the software inventory" in hosts["xp-fleet003"]["message"]


def _scripts(run: Path) -> list[dict[str, Any]]:
    """The run's journaled scripts (each names its file under scripts/)."""
    return [e for e in read_events(run / "journal.jsonl")[0] if e["event"] == "script"]
