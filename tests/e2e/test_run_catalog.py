"""Every other runbook of the catalog, for real against the lab: what an operator checks after.

boot-image-update and bootsect-downgrade (2012 R2 site, boot images updated one at a time with a
distmgr.log wait each), the client hotfix check across the default lab's 50-client fleet (mixed
versions, clients without WinRM checked through the site server, some unreachable), the site
hotfix check and the NT 4.0 pre-check.
"""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import Lab, custom_lab_file, events

SPEED = 500.0  # distmgr.log reports an update 20 s + 10 s after it, 0.06 s here
SCALE = "0.005"
INSTALL = r"C:\Program Files\Microsoft Configuration Manager"
OSD_BOOTSECT = INSTALL + r"\OSD\bin\i386\bootsect.exe"
ADK81 = r"C:\Program Files (x86)\Windows Kits\8.1\Assessment and Deployment Kit"
ADK80 = r"C:\Program Files (x86)\Windows Kits\8.0\Assessment and Deployment Kit"
ADK81_BOOTSECT = ADK81 + r"\Deployment Tools\x86\BCDBoot\bootsect.exe"
REPLACEMENT = ADK80 + r"\Deployment Tools\x86\BCDBoot\bootsect.exe"
HOTFIX = "5.0.7958.1104"
XP_IMAGES = "boot_images=P1200001,P1200005"  # the x86 ones: P1200002 is x64


def ok_run(res: Any) -> None:
    assert res.returncode == 0, res.stdout + res.stderr


def loop_trail(evs: list[dict[str, Any]]) -> list[str]:
    """`<step id>#<item>` of each step-end of a loop step, in journal order."""
    return [
        f"{e['key'].split('/', 1)[1]}#{e['item']}"
        for e in evs
        if e["event"] == "step-end" and e.get("item")
    ]


def patched_site(data: dict[str, Any]) -> None:
    """cm12-site01 with KB2910552 (TSCore.dll 5.0.7958.1104), P1200001 a WinPE 3.1 image."""
    files = data["hosts"]["cm12-site01"]["files"]
    for arch in ("i386", "x64"):
        files[INSTALL + rf"\bin\{arch}\TSCore.dll"]["version"] = HOTFIX
    image = data["sites"]["P12"]["boot_images"][0]
    assert image["package_id"] == "P1200001"
    image["image_os_version"] = "6.1.7601.17514"


def test_boot_image_update_updates_one_image_at_a_time(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(custom_lab_file(tmp_path, patched_site), speed=SPEED)
    site = lab.world.sites["P12"]
    versions = {p: int(site.boot_images[p]["SourceVersion"]) for p in ("P1200001", "P1200005")}
    res = lab.cli(
        "remediate",
        "boot-image-update",
        "--yes",
        "--non-interactive",
        "--set",
        XP_IMAGES,
        time_scale=SCALE,
    )
    ok_run(res)
    (run,) = lab.run_dirs()
    evs = events(run)
    assert loop_trail(evs) == [
        "upd.update-boot-image#P1200001",
        "upd.wait-distmgr#P1200001",
        "upd.update-boot-image#P1200005",
        "upd.wait-distmgr#P1200005",
    ]
    # The second image was not touched before distmgr.log reported the first one processed.
    starts = [e for e in evs if e["event"] == "step-start" and e.get("item") == "P1200005"]
    first_done = next(
        e for e in evs if e["event"] == "step-end" and e["key"].endswith("wait-distmgr")
    )
    assert first_done["seq"] < starts[0]["seq"]
    # Each wait matched distmgr.log lines of its own image only.
    waits = [e for e in evs if e["event"] == "step-end" and e["key"].endswith("wait-distmgr")]
    for wait, (mine, other) in zip(
        waits, [("P1200001", "P1200005"), ("P1200005", "P1200001")], strict=True
    ):
        assert wait["status"] == "ok"
        assert wait["log_lines"] and all(mine in line for line in wait["log_lines"])
        assert not any(other in line for line in wait["log_lines"])
        assert any("2301" in line for line in wait["log_lines"])
        # Not at 2301: when the distribution status shows the new version on every DP.
        assert f"distribution status: {mine} installed on all" in wait["message"], wait
    assert site.refreshes == ["P1200001", "P1200005"]
    for pid, before in versions.items():
        assert int(site.boot_images[pid]["SourceVersion"]) == before + 1
    assert int(site.boot_images["P1200002"]["SourceVersion"]) >= 1  # left alone
    assert "P1200002" not in site.refreshes
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["by_status"] == {"ok": 1}


def hotfix_only(data: dict[str, Any]) -> None:
    """cm12-site01 with KB2910552; its boot images as a 2012 R2 site has them: the ADK 8.1
    WinPE 5.0 defaults (x86 and x64) distributed, and one WinPE 3.1 x86 image for XP."""
    files = data["hosts"]["cm12-site01"]["files"]
    for arch in ("i386", "x64"):
        files[INSTALL + rf"\bin\{arch}\TSCore.dll"]["version"] = HOTFIX
    images = {i["package_id"]: i for i in data["sites"]["P12"]["boot_images"]}
    for pid, arch in (("P1200001", "x86"), ("P1200002", "x64")):
        assert images[pid]["image_os_version"].startswith("6.3.9600")
        assert images[pid]["architecture"] == arch and images[pid]["dps"]


ALL_DISTRIBUTED = ["P1200001", "P1200002", "P1200005"]


def test_boot_image_update_by_default_updates_every_distributed_image(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """fidelity F14: KB2910552 step 5 updates "all boot images that were previously
    distributed"; the ADK default images are warned about, not a reason to refuse the site."""
    lab = make_lab(custom_lab_file(tmp_path, hotfix_only), speed=SPEED)
    res = lab.cli(
        "remediate",
        "boot-image-update",
        "--yes",
        "--non-interactive",
        "--set",
        "xp_boot_images=P1200005",
        time_scale=SCALE,
    )
    ok_run(res)
    assert lab.world.sites["P12"].refreshes == ALL_DISTRIBUTED
    (run,) = lab.run_dirs()
    evs = events(run)
    assert [t.split("#")[1] for t in loop_trail(evs) if t.startswith("upd.update")] == (
        ALL_DISTRIBUTED
    )
    (check,) = [e for e in evs if e["event"] == "step-end" and e["key"].endswith("pre.boot-images")]
    assert check["status"] == "ok"
    assert "Warning: P1200001 (Boot image (x86)) is OS version 6.3.9600.16384" in check["message"]
    # The XP task sequences' image is still held to the rule: naming an x64 one stops the run.
    refused = lab.cli(
        "remediate",
        "boot-image-update",
        "--yes",
        "--non-interactive",
        "--set",
        "xp_boot_images=P1200002",
        time_scale=SCALE,
    )
    assert refused.returncode == 1
    assert "a boot image of the Windows XP task sequences" in refused.stdout
    assert lab.world.sites["P12"].refreshes == ALL_DISTRIBUTED  # nothing more


def test_bootsect_downgrade_by_default_updates_every_distributed_image(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(speed=SPEED)
    res = lab.cli(
        "remediate",
        "bootsect-downgrade",
        "--yes",
        "--non-interactive",
        "--set",
        f"replacement_path={REPLACEMENT}",
        time_scale=SCALE,
    )
    ok_run(res)
    assert lab.world.sites["P12"].refreshes == ALL_DISTRIBUTED


def test_boot_image_update_refuses_a_site_server_without_the_hotfix(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(speed=SPEED)
    res = lab.cli("remediate", "boot-image-update", "--yes", "--non-interactive", time_scale=SCALE)
    assert res.returncode == 1
    assert "The KB2910552 hotfix is not on this site server" in res.stdout
    assert re.search(r"^\S+ cm12-site01 +FAILED: The KB2910552 hotfix", res.stdout, re.M)
    assert lab.world.sites["P12"].refreshes == []


def hashes(lab: Lab) -> dict[str, str]:
    fs = lab.world.host("cm12-site01").fs
    return {p: fs.get(p).content_sha256() for p in (OSD_BOOTSECT, ADK81_BOOTSECT, REPLACEMENT)}


def test_bootsect_downgrade_then_rollback_restores_the_originals(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(speed=SPEED)
    site = lab.world.sites["P12"]
    original = hashes(lab)
    assert original[OSD_BOOTSECT] != original[REPLACEMENT]
    args = (
        "--yes",
        "--non-interactive",
        "--set",
        f"replacement_path={REPLACEMENT}",
        "--set",
        XP_IMAGES,
    )
    res = lab.cli("remediate", "bootsect-downgrade", *args, time_scale=SCALE)
    ok_run(res)
    replaced = hashes(lab)
    assert replaced[OSD_BOOTSECT] == replaced[ADK81_BOOTSECT] == original[REPLACEMENT]
    assert replaced[REPLACEMENT] == original[REPLACEMENT]
    # The boot images were updated one at a time, and now carry the older bootsect.exe.
    (run,) = lab.run_dirs()
    assert loop_trail(events(run)) == [
        "bs.update-boot-image#P1200001",
        "bs.wait-distmgr#P1200001",
        "bs.update-boot-image#P1200005",
        "bs.wait-distmgr#P1200005",
    ]
    for pid in ("P1200001", "P1200005"):
        assert site.boot_images[pid]["Files"]["SMS\\bin\\i386\\bootsect.exe"] == "6.2.9200.16384"
    backup = r"C:\ProgramData\cmrunbook\backup\bootsect-downgrade"
    assert lab.world.host("cm12-site01").fs.exists(backup + r"\manifest.csv")

    back = lab.cli("remediate", "bootsect-downgrade", "--rollback", *args, time_scale=SCALE)
    ok_run(back)
    assert hashes(lab) == original
    run2 = lab.run_dirs()[-1]
    assert loop_trail(events(run2)) == [
        "rb.update-boot-image#P1200001",
        "rb.wait-distmgr#P1200001",
        "rb.update-boot-image#P1200005",
        "rb.wait-distmgr#P1200005",
    ]
    for pid in ("P1200001", "P1200005"):
        assert site.boot_images[pid]["Files"]["SMS\\bin\\i386\\bootsect.exe"] == "6.3.9600.16384"
    assert site.refreshes == ["P1200001", "P1200005"] * 2


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def expected_compliance(lab: Lab, names: list[str], unreachable: set[str]) -> Counter[str]:
    """What the lab's state says each checked client is, by the report's host statuses."""
    out: Counter[str] = Counter()
    for name in names:
        host = lab.world.host(name)
        spec = host.spec.client
        assert spec is not None
        if name in unreachable:
            state = "unreachable"
        else:
            version = spec.tscore_version
            if not host.has_winrm:
                version = (spec.inventoried_version or version) if spec.inventoried else None
            if version is None:
                state = "unknown"
            else:
                state = "ok" if _version(version) >= _version(HOTFIX) else "non-compliant"
        out[state] += 1
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleet_check(lab: Lab, *more: str, **kw: Any) -> tuple[Any, dict[str, Any], Counter[str]]:
    """The client check with two WinRM clients unreachable: one refuses every connection, the
    other's inventory entry points at a closed port. (result, report.json, expected counts)"""
    lab.running.server.faults.set("xp-fleet001", "refuse", count=None)
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    data["hosts"]["xp-fleet002"]["winrm"]["port"] = closed_port()
    inventory = lab.tmp / "inventory-two-down.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    res = lab.cli(
        "check",
        "client-hotfix",
        "--non-interactive",
        "--forks",
        "20",
        *more,
        inventory=str(inventory),
        time_scale=SCALE,
        **kw,
    )
    (run,) = lab.run_dirs()
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    names = [h["name"] for h in report["hosts"]]
    expected = expected_compliance(lab, names, {"xp-fleet001", "xp-fleet002"})
    return res, report, expected


def test_client_hotfix_check_counts_match_the_fleet(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(speed=SPEED)
    res, report, expected = fleet_check(lab)
    assert res.returncode == 1, res.stdout + res.stderr
    names = [h["name"] for h in report["hosts"]]
    # Every Windows XP client of the 2012 R2 site, the whole fleet among them; no other OS.
    fleet = [n for n in names if n.startswith("xp-fleet")]
    assert len(fleet) == 50
    assert set(names) - set(fleet) == {"xp-wks001", "xp-wks002"}
    by_status = report["summary"]["by_status"]
    assert by_status == dict(expected), (by_status, expected)
    assert all(expected[k] > 0 for k in ("ok", "non-compliant", "unknown", "unreachable"))
    hosts = {h["name"]: h for h in report["hosts"]}
    for name in ("xp-fleet001", "xp-fleet002"):
        assert hosts[name]["status"] == "unreachable"
        assert hosts[name]["message"].startswith(f"{name}: ")
    assert "connection refused" in hosts["xp-fleet002"]["message"]
    # A client without WinRM is read from the site server's inventory.
    assert not lab.world.host("xp-fleet003").has_winrm
    assert hosts["xp-fleet003"]["steps"][-1]["on"] == "cm12-site01"
    unknown = [h for h in report["hosts"] if h["status"] == "unknown"]
    assert all("not in the site's software inventory" in h["message"] for h in unknown)
    # The console summary says the same.
    table = Counter(m.group(1) for m in re.finditer(r"^(?:xp-\S+) +\d+ +(\S+) ", res.stdout, re.M))
    assert table == expected


def test_site_hotfix_check_names_the_file_left_behind(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(speed=SPEED)
    res = lab.cli("check", "site-hotfix", "--non-interactive", time_scale=SCALE)
    assert res.returncode == 1
    line = re.search(r"^\S+ cm07-site01 +NON-COMPLIANT: (.*)$", res.stdout, re.M)
    assert line, res.stdout
    assert "KB2586709 is not installed" in line.group(1)
    assert r"OSD\bin\x64\Tsmbootstrap.exe is 4.0.6487.2000" in line.group(1)

    def patched(data: dict[str, Any]) -> None:
        files = data["hosts"]["cm07-site01"]["files"]
        key = next(k for k in files if k.endswith(r"OSD\bin\x64\TsmBootstrap.exe"))
        files[key]["version"] = "4.0.6487.2192"

    lab2 = make_lab(custom_lab_file(tmp_path, patched), speed=SPEED)
    res2 = lab2.cli("check", "site-hotfix", "--non-interactive", time_scale=SCALE)
    assert res2.returncode == 0, res2.stdout + res2.stderr


def test_nt4_precheck_lists_the_nt4_computers_of_the_site(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(speed=SPEED)
    res = lab.cli("check", "nt4", "--non-interactive", time_scale=SCALE)
    assert res.returncode == 1
    nt4 = sorted(
        h.name.upper()
        for h in lab.world.hosts.values()
        if h.os_version == "nt4" and h.site_code == "C07"
    )
    assert nt4, "the default lab has NT 4.0 computers in C07"
    line = re.search(r"^\S+ cm07-site01 +NON-COMPLIANT: (.*)$", res.stdout, re.M)
    assert line, res.stdout
    assert f"{len(nt4)} Windows NT 4.0 computer(s) in site C07: {', '.join(nt4)}." in line.group(1)
