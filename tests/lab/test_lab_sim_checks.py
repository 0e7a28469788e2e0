"""The lab's simulation of boot-image-update, bootsect-downgrade, the hotfix and NT 4.0 checks and
the diagnose log fetch: each runbook's rendered scripts, driven directly through the backends.

Each test renders the real templates for a plan on an inventory of the lab, runs them on the
simulated host the engine would, and checks the outcome; a script changed the wrong way (another
WMI class, registry value or helper) must then give a failure, not the right answer.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from helpers_lab import run, sim_lab

from cmrunbook.load.inventory import Inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Plan, Planner
from cmrunbook.render.baseline import build
from cmrunbook.render.fetch import fetch_script
from cmrunbook.render.result import ScriptResult
from cmrunbook.render.steps import render_probe, render_step
from cmrunbook.run.sitebatch import SiteReadings, client_rows
from cmrunbook_lab import wmi
from cmrunbook_lab.clock import ManualClock
from cmrunbook_lab.inventory_out import write_inventory
from cmrunbook_lab.scripts import PSError
from cmrunbook_lab.world import Lab

REPO = Path(__file__).resolve().parents[2]
CATALOG = Project(REPO)
CM12 = r"C:\Program Files\Microsoft Configuration Manager"
CM07 = r"D:\Program Files\Microsoft Configuration Manager"
ADK80 = (
    r"C:\Program Files (x86)\Windows Kits\8.0\Assessment and Deployment Kit\Deployment Tools"
    r"\x86\BCDBoot\bootsect.exe"
)
ADK81 = ADK80.replace("\\8.0\\", "\\8.1\\")
OSD_BOOTSECT = CM12 + r"\OSD\bin\i386\bootsect.exe"
BACKUP = r"C:\ProgramData\cmrunbook\backup\bootsect-downgrade"


def lab_inventory(lab: Lab, tmp_path: Path) -> Inventory:
    """An inventory of every lab host (the engine's view), as `invoke lab` writes it; the
    scripts run in-process here, so the WinRM endpoints are never used."""
    return write_inventory(lab, tmp_path / "lab-inventory.yaml", lambda name: (5985, "/wsman"))


class Runbook:
    """One runbook planned on the lab's inventory for one target; renders and runs its scripts."""

    def __init__(
        self,
        lab: Lab,
        inv: Inventory,
        runbook: str,
        target: str,
        *overrides: str,
        rollback: bool = False,
    ) -> None:
        self.lab = lab
        self.plan: Plan = Planner(CATALOG, CATALOG.load(runbook), inv).plan(
            method=None, hosts=target, overrides=list(overrides), rollback=rollback
        )
        self.hp = self.plan.hosts[0]

    def step(self, step_id: str, item: dict[str, Any] | None = None) -> tuple[str, str]:
        ps = next(s for s in self.hp.all_steps() if s.step.id == step_id)
        script = render_step(CATALOG, self.plan, self.hp, ps, item)
        assert script is not None
        return ps.run_on, script

    def probe(self, probe_id: str) -> tuple[str, str]:
        pr = self.plan.runbook.probe(probe_id)
        assert pr is not None
        return render_probe(CATALOG, self.plan, self.hp, pr)

    def run(
        self,
        step_id: str,
        item: dict[str, Any] | None = None,
        *,
        edit: Any = None,
        probe: bool = False,
    ) -> tuple[dict[str, Any], int | None]:
        host, script = self.probe(step_id) if probe else self.step(step_id, item)
        if edit is not None:
            changed = edit(script)
            assert changed != script, "the edit changed nothing"
            script = changed
        result, err, code = run(self.lab, host, script)
        assert result is not None, err.decode("utf-8", "replace")
        return result, code


@pytest.fixture
def lab() -> Lab:
    return sim_lab()[0]


@pytest.fixture
def inv(lab: Lab, tmp_path: Path) -> Inventory:
    return lab_inventory(lab, tmp_path)


# -- boot-image-update ----------------------------------------------------------------------------


def test_boot_image_update_probe_and_prechecks(lab: Lab, inv: Inventory) -> None:
    rb = Runbook(lab, inv, "boot-image-update", "cm12-site01")
    probe, code = rb.run("boot-images", probe=True)
    assert code == 0 and [i["PackageID"] for i in probe["data"]] == [
        "P1200001",
        "P1200002",
        "P1200005",
    ]
    assert probe["data"][2] == {
        "PackageID": "P1200005",
        "Name": "WinPE 3.1 x86 (XP refresh)",
        "Architecture": "x86",
        "ImageOSVersion": "6.1.7601",
        "DPCount": 1,
    }
    hotfix, code = rb.run("pre.hotfix-site-server")
    assert code == 1 and "5.0.7958.1000, older than 5.0.7958.1104" in hotfix["message"]
    # The ADK 8.1 default images (WinPE 5.0, x86 and x64) are warned about, not refused.
    images, code = rb.run("pre.boot-images")
    assert code == 0, images["message"]
    verdicts = {i["PackageID"]: i["verdict"] for i in images["data"]["images"]}
    assert verdicts == {"P1200001": "warning", "P1200002": "warning", "P1200005": "ok"}
    assert (
        "P1200002 (Boot image (x64)) is OS version 6.3.9600.16384, not WinPE 3.1 (6.1.7601) "
        "and x64, not the Windows XP architecture (x86)" in images["message"]
    )
    assert "xp_boot_images is empty" in images["message"]
    # The image the XP task sequences use must follow the rule.
    xp = Runbook(lab, inv, "boot-image-update", "cm12-site01", "xp_boot_images=P1200002")
    images, code = xp.run("pre.boot-images")
    assert code == 1
    assert {i["PackageID"]: i["verdict"] for i in images["data"]["images"]}["P1200002"] == "refused"
    assert (
        "P1200002 (Boot image (x64)), a boot image of the Windows XP task sequences"
        in (images["message"])
    )
    named = Runbook(lab, inv, "boot-image-update", "cm12-site01", "xp_boot_images=P1200005")
    images, code = named.run("pre.boot-images")
    assert code == 0 and "xp_boot_images is empty" not in images["message"]
    left_out = Runbook(
        lab,
        inv,
        "boot-image-update",
        "cm12-site01",
        "boot_images=P1200001",
        "xp_boot_images=P1200005",
    )
    images, code = left_out.run("pre.boot-images")
    assert (
        code == 1
        and "P1200005 (xp_boot_images) is not among the boot images" in (images["message"])
    )
    lab.hosts["cm12-site01"].fs.get(CM12 + r"\bin\x64\TSCore.dll").version = "5.0.7958.1104"
    assert rb.run("pre.hotfix-site-server")[1] == 0
    only = Runbook(lab, inv, "boot-image-update", "cm12-site01", "boot_images=P1200005")
    assert only.run("pre.boot-images")[1] == 0


def test_boot_image_update_refreshed_after_skips_updated_images(lab: Lab, inv: Inventory) -> None:
    clock = lab.clock
    assert isinstance(clock, ManualClock)
    rb = Runbook(lab, inv, "boot-image-update", "cm12-site01", "boot_images=P1200005")
    assert rb.run("upd.update-boot-image", {"PackageID": "P1200005"})[1] == 0
    status, code = rb.run("upd.status")
    assert code == 0 and status["data"][0]["in_progress"] == 1
    clock.advance(lab.spec.delays.distmgr + lab.spec.delays.distmgr_done + 1)
    lab.tick()
    status, code = rb.run("upd.status")  # distmgr has written 2301; the DP copy is still going
    assert code == 0 and status["data"][0]["in_progress"] == 1
    clock.advance(lab.spec.delays.distmgr_done)
    lab.tick()
    status, code = rb.run("upd.status")
    assert code == 0 and status["data"][0]["installed"] == 1
    assert status["data"][0]["SourceVersion"] == "2"
    day = clock.wall().strftime("%Y-%m-%d")
    again = Runbook(
        lab,
        inv,
        "boot-image-update",
        "cm12-site01",
        "boot_images=P1200005",
        f"refreshed_after={day}",
    )
    probe, _ = again.run("boot-images", probe=True)
    assert probe["data"] == [] and "P1200005 (refreshed " in probe["message"]


def test_boot_image_status_reports_install_failed_from_the_fault(lab: Lab, inv: Inventory) -> None:
    clock = lab.clock
    assert isinstance(clock, ManualClock)
    lab.faults.add(host="cm12-dp02", kind="distribution-failure", package_id="P1200001")
    rb = Runbook(lab, inv, "boot-image-update", "cm12-site01", "boot_images=P1200001,P1200002")
    for pid in ("P1200001", "P1200002"):
        rb.run("upd.update-boot-image", {"PackageID": pid})
    clock.advance(60)
    lab.tick()
    status, code = rb.run("upd.status")
    assert code == 1 and "Boot image update failed on: P1200001 on " in status["message"]
    assert "cm12-dp02.corp.example" in status["message"]
    assert [len(s["failed"]) for s in status["data"]] == [1, 0]


def test_boot_image_wrong_class_or_property_fails(lab: Lab, inv: Inventory) -> None:
    rb = Runbook(lab, inv, "boot-image-update", "cm12-site01")
    result, code = rb.run(
        "upd.status",
        edit=lambda s: s.replace(
            "SMS_PackageStatusDistPointsSummarizer", "SMS_PackageStatusDistPointSummarizer"
        ),
    )
    assert code == 1 and result["message"] == 'Invalid class "SMS_PackageStatusDistPointSummarizer"'
    result, code = rb.run(
        "boot-images",
        probe=True,
        edit=lambda s: s.replace('-Filter ("PackageID=\'"', '-Filter ("PackageId2=\'"'),
    )
    assert code == 1 and result["message"] == "Invalid query"


# -- bootsect-downgrade ---------------------------------------------------------------------------


def _bootsect(lab: Lab, inv: Inventory, *extra: str, rollback: bool = False) -> Runbook:
    return Runbook(
        lab,
        inv,
        "bootsect-downgrade",
        "cm12-site01",
        f"replacement_path={ADK80}",
        "boot_images=P1200005",
        *extra,
        rollback=rollback,
    )


def test_bootsect_downgrade_and_rollback(lab: Lab, inv: Inventory) -> None:
    fs = lab.hosts["cm12-site01"].fs
    original = fs.get(OSD_BOOTSECT).sha256
    replacement = fs.get(ADK80).sha256
    assert fs.get(ADK81).sha256 == original  # the same ADK 8.1 build in both places
    rb = _bootsect(lab, inv)
    check, code = rb.run("pre.replacement")
    assert code == 0 and check["data"]["replacement"]["version"] == "6.2.9200.16384"
    assert check["data"]["replacement"]["machine"] == "x86"
    located, code = rb.run("bs.locate")
    assert code == 0 and len(located["data"]["copies"]) == 2
    assert not any(c["is_replacement"] for c in located["data"]["copies"])
    # replace refuses to run before a backup exists
    result, code = rb.run("bs.replace")
    assert code == 1 and "run the backup step first" in result["message"]
    backup, code = rb.run("bs.backup")
    assert code == 0 and backup["changed"] and len(backup["data"]["copies"]) == 2
    manifest = bytes(fs.get(BACKUP + r"\manifest.csv").data).decode("utf-8-sig")
    assert (
        manifest.splitlines()[0] == '"Path","BackupFile","Sha256","Version","Length","BackedUpUtc"'
    )
    assert original in manifest and "6.3.9600.16384" in manifest
    copy = fs.get(BACKUP + "\\" + backup["data"]["copies"][0]["backup"].rsplit("\\", 1)[-1])
    assert copy.read_only and copy.sha256 == original
    again, code = rb.run("bs.backup")
    assert code == 0 and not again["changed"]
    assert {c["action"] for c in again["data"]["copies"]} == {"kept"}
    replaced, code = rb.run("bs.replace")
    assert code == 0 and replaced["changed"]
    assert fs.get(OSD_BOOTSECT).sha256 == replacement and fs.get(OSD_BOOTSECT).version == (
        "6.2.9200.16384"
    )
    assert not fs.get(OSD_BOOTSECT).read_only
    assert rb.run("bs.verify")[1] == 0
    assert rb.run("bs.replace")[0]["changed"] is False  # already the replacement
    update, code = rb.run("bs.update-boot-image", {"PackageID": "P1200005"})
    assert code == 0 and update["changed"]
    lab.clock.advance(60)  # type: ignore[attr-defined]
    lab.tick()
    assert lab.sites["P12"].boot_images["P1200005"]["Files"][r"SMS\bin\i386\bootsect.exe"] == (
        "6.2.9200.16384"
    )
    assert rb.run("bs.status")[1] == 0
    # rollback
    rbk = _bootsect(lab, inv, rollback=True)
    assert rbk.run("rb.check-backup")[1] == 0
    restored, code = rbk.run("rb.restore")
    assert code == 0 and restored["changed"]
    assert fs.get(OSD_BOOTSECT).sha256 == original and fs.get(ADK81).sha256 == original
    assert not fs.get(OSD_BOOTSECT).read_only  # the backup's read-only flag is not kept
    assert rbk.run("rb.verify")[1] == 0


def test_bootsect_replacement_refusals(lab: Lab, inv: Inventory) -> None:
    missing = Runbook(
        lab, inv, "bootsect-downgrade", "cm12-site01", r"replacement_path=D:\nowhere\bootsect.exe"
    )
    result, code = missing.run("pre.replacement")
    assert (
        code == 1
        and r"replacement_path D:\nowhere\bootsect.exe does not exist" in (result["message"])
    )
    # the backup step hashes the replacement: a wrong path fails as the FileStream does
    result, code = missing.run("bs.backup")
    assert (
        code == 1
        and "Could not find a part of the path 'D:\\nowhere\\bootsect.exe'" in (result["message"])
    )
    too_new = Runbook(lab, inv, "bootsect-downgrade", "cm12-site01", f"replacement_path={ADK81}")
    result, code = too_new.run("pre.replacement")
    assert code == 1 and "is version 6.3.9600.16384; it must be older than 6.3" in result["message"]
    assert "is one of the bootsect.exe copies to be replaced" in result["message"]
    fs = lab.hosts["cm12-site01"].fs
    x64 = fs.get(ADK80).copy_to(r"D:\Sources\bootsect-x64\bootsect.exe")
    x64.machine, x64.sha256 = "x64", "AB" * 32
    fs.put(x64)
    wrong_arch = Runbook(
        lab,
        inv,
        "bootsect-downgrade",
        "cm12-site01",
        f"replacement_path={x64.path}",
        "replacement_sha256=" + "cd" * 32,
    )
    result, code = wrong_arch.run("pre.replacement")
    assert code == 1 and "is a x64 (0x8664) executable" in result["message"]
    assert "not the expected " + "CD" * 32 in result["message"]


def test_bootsect_tampered_backup_is_not_restored(lab: Lab, inv: Inventory) -> None:
    fs = lab.hosts["cm12-site01"].fs
    rb = _bootsect(lab, inv)
    rb.run("bs.backup")
    rb.run("bs.replace")
    first = next(f for f in fs.list(BACKUP) if f.name.endswith(".exe"))
    first.sha256 = "00" * 32
    rbk = _bootsect(lab, inv, rollback=True)
    result, code = rbk.run("rb.check-backup")
    assert code == 1 and "The backup cannot be trusted" in result["message"]
    result, code = rbk.run("rb.restore")
    assert code == 1 and "nothing was restored" in result["message"]
    assert fs.get(OSD_BOOTSECT).version == "6.2.9200.16384"


def test_bootsect_restore_without_clearing_read_only_leaves_it_read_only(
    lab: Lab, inv: Inventory
) -> None:
    rb = _bootsect(lab, inv)
    rb.run("bs.backup")
    rb.run("bs.replace")
    rbk = _bootsect(lab, inv, rollback=True)

    def drop_last_writable(script: str) -> str:
        head, _, tail = script.rpartition("    Set-CmrbWritable -Path $path\n")
        return head + tail

    _, code = rbk.run("rb.restore", edit=drop_last_writable)
    assert code == 0 and lab.hosts["cm12-site01"].fs.get(OSD_BOOTSECT).read_only


def test_bootsect_copy_without_force_onto_read_only_fails(lab: Lab, inv: Inventory) -> None:
    fs = lab.hosts["cm12-site01"].fs
    rb = _bootsect(lab, inv)
    rb.run("bs.backup")
    fs.get(OSD_BOOTSECT).read_only = True
    result, code = rb.run(
        "bs.replace",
        edit=lambda s: s.replace(
            "    Set-CmrbWritable -Path $path\n    Copy-Item", "    Copy-Item"
        ).replace("-Destination $path -Force", "-Destination $path"),
    )
    assert code == 1 and result["message"] == f"Access to the path '{OSD_BOOTSECT}' is denied."


# -- client-hotfix-check --------------------------------------------------------------------------


def _client(lab: Lab, inv: Inventory, name: str) -> tuple[dict[str, Any], int | None]:
    rb = Runbook(lab, inv, "client-hotfix-check", name)
    step = "client.tscore-file" if lab.hosts[name].has_winrm else "client.tscore-inventory"
    return rb.run(step)


def test_client_hotfix_direct_and_from_inventory(lab: Lab, inv: Inventory) -> None:
    result, code = _client(lab, inv, "xp-wks002")
    assert code == 0 and result["data"]["compliance"] == "compliant"
    assert result["data"]["client_dir_source"] == "registry"
    assert result["data"]["path"] == r"C:\WINDOWS\CCM\TSCore.dll"
    assert result["data"]["client_version"] == "5.00.7958.1203"
    result, code = _client(lab, inv, "xp-wks001")
    assert code == 1 and result["data"]["compliance"] == "non-compliant"
    assert result["data"]["version"] == "5.0.7958.1000" and result["data"]["last_software_scan"]
    assert result["data"]["path"] == r"C:\WINDOWS\CCM\TSCore.dll"


def test_client_hotfix_fleet_mix(lab: Lab, inv: Inventory) -> None:
    counts: dict[str, int] = {}
    for name in [n for n in lab.hosts if n.startswith("xp-fleet")]:
        result, _ = _client(lab, inv, name)
        how = "winrm" if lab.hosts[name].has_winrm else "inventory"
        key = f"{result['data']['compliance']}/{how}"
        counts[key] = counts.get(key, 0) + 1
    assert counts == {
        "non-compliant/winrm": 26,
        "compliant/winrm": 8,
        "non-compliant/inventory": 9,
        "compliant/inventory": 4,
        "unknown/inventory": 3,
    }


def test_client_hotfix_registry_value_name_matters(lab: Lab, inv: Inventory) -> None:
    host = lab.hosts["xp-wks002"]
    # The client lives in a folder no fallback names: only the registry value leads to it.
    fs = host.fs
    fs.rename(r"C:\WINDOWS\CCM\TSCore.dll", r"E:\SMS\Client\TSCore.dll")
    host.registry.set(
        r"HKLM:\SOFTWARE\Microsoft\SMS\Client\Configuration\Client Properties",
        "Local SMS Path",
        "E:\\SMS\\Client\\",
    )
    result, code = _client(lab, inv, "xp-wks002")
    assert code == 0 and result["data"]["compliance"] == "compliant"
    rb = Runbook(lab, inv, "client-hotfix-check", "xp-wks002", "client_path_value=Local SMS Dir")
    result, code = rb.run("client.tscore-file")
    assert result["data"]["compliance"] == "unknown" and "was not found in" in result["message"]
    result, code = Runbook(lab, inv, "client-hotfix-check", "xp-wks002").run(
        "client.tscore-file",
        edit=lambda s: s.replace("-Name 'ProductVersion'", "-Name 'Version'"),
    )
    assert result["data"]["client_version"] is None


def test_client_hotfix_inventory_wrong_class_fails(lab: Lab, inv: Inventory) -> None:
    result, code = Runbook(lab, inv, "client-hotfix-check", "xp-wks001").run(
        "client.tscore-inventory",
        edit=lambda s: s.replace("SMS_G_System_SoftwareFile", "SMS_G_System_SoftwareFiles"),
    )
    assert code == 1 and result["message"] == 'Invalid class "SMS_G_System_SoftwareFiles"'
    result, code = Runbook(lab, inv, "client-hotfix-check", "xp-wks001").run(
        "client.tscore-inventory", edit=lambda s: s.replace("WHERE Name='", "WHERE Hostname='")
    )
    assert code == 1 and result["message"] == "Invalid query"


def _client_inventory(lab: Lab, inv: Inventory, name: str) -> tuple[dict[str, Any], int | None]:
    """One client's own query on the site (the inventory step), WinRM or not."""
    return Runbook(lab, inv, "client-hotfix-check", name).run("client.tscore-inventory")


def _site_reading(lab: Lab, inv: Inventory, edit: Any = None) -> tuple[dict[str, Any], int | None]:
    """The site script of client-hotfix-check (--via site), run on the site server."""
    rb = Runbook(lab, inv, "client-hotfix-check", "xp-wks001")
    ps = next(s for s in rb.hp.all_steps() if s.step.id == "client.tscore-inventory")
    script = SiteReadings(CATALOG, rb.plan).script(rb.hp, ps)
    result, err, code = run(lab, ps.run_on, edit(script) if edit else script)
    assert result is not None, err.decode("utf-8", "replace")
    return result, code


def test_client_hotfix_site_reading_agrees_with_each_client_query(lab: Lab, inv: Inventory) -> None:
    result, code = _site_reading(lab, inv)
    assert code == 0, result["message"]
    clients = client_rows(ScriptResult(True, False, False, "", result["data"]))
    site_clients = [
        n
        for n, h in lab.hosts.items()
        if h.site_code == "P12" and h.spec.client and h.os_version == "xp"
    ]
    assert site_clients and {n.lower() for n in site_clients} <= set(clients)
    for name in site_clients:
        one, _ = _client_inventory(lab, inv, name)
        state, version = clients[name.lower()][:2]
        assert (state, version) == (one["data"]["compliance"], one["data"]["version"]), name
    assert {row[0] for row in clients.values()} == {"compliant", "non-compliant", "unknown"}
    # Clients are grouped by what they report: a few groups, not one entry per client.
    assert len(result["data"]["groups"]) < len(site_clients) / 3


def test_client_hotfix_site_reading_wrong_class_or_block_size_fails(
    lab: Lab, inv: Inventory
) -> None:
    result, code = _site_reading(
        lab, inv, lambda s: s.replace("SMS_G_System_SoftwareFile", "SMS_G_System_SoftwareFiles")
    )
    assert code == 1 and result["message"] == 'Invalid class "SMS_G_System_SoftwareFiles"'
    no_blocks = "$blockSize = 0"
    result, code = _site_reading(lab, inv, lambda s: s.replace("$blockSize = 1000", no_blocks))
    assert code == 1 and "BlockSize" in result["message"]


def _site_clients(result: dict[str, Any]) -> dict[str, list[str | None]]:
    return client_rows(ScriptResult(True, False, False, "", result["data"]))


def test_the_generated_fleet_has_names_with_several_records(lab: Lab) -> None:
    """The fleet holds what a real site has: names discovered twice (two current records of
    different inventoried versions) and names with an obsolete record beside the current one."""
    rows = lab.sites["P12"].wmi_instances("SMS_R_System", lab)
    files = lab.sites["P12"].wmi_instances("SMS_G_System_SoftwareFile", lab)
    version = {f["ResourceID"]: f["FileVersion"] for f in files}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["Name"], []).append(row)
    twice = [n for n, rs in by_name.items() if [r["Obsolete"] for r in rs] == [0, 0]]
    assert any(len({version.get(r["ResourceId"]) for r in by_name[n]}) == 2 for n in twice)
    assert any([r["Obsolete"] for r in rs] == [0, 1] for rs in by_name.values())


def test_a_name_with_two_current_records_is_judged_by_the_lower_as_its_own_query_does(
    lab: Lab, inv: Inventory
) -> None:
    """XP-FLEET014 has two current records, the earlier with TSCore.dll 5.0.7958.1000, the
    later with 5.0.7958.1104: which one is the real client cannot be told, so both the site
    reading and the client's own query say non-compliant (the lowest version). XP-FLEET044 has
    a current record (5.0.7958.1104) and an obsolete one (5.0.7958.1000): the obsolete one does
    not count."""
    result, code = _site_reading(lab, inv)
    assert code == 0, result["message"]
    clients = _site_clients(result)
    for name, state, version in (
        ("xp-fleet014", "non-compliant", "5.0.7958.1000"),
        ("xp-fleet044", "compliant", "5.0.7958.1104"),
    ):
        one, _ = _client_inventory(lab, inv, name)
        assert (one["data"]["compliance"], one["data"]["version"]) == (state, version), name
        assert clients[name][:2] == [state, version], name


def _publish(lab: Lab, code: str, collection: str) -> None:
    """The check's baseline published and deployed to `collection`, as `invoke publish` sends it."""
    rb = CATALOG.load("client-hotfix-check").runbook
    params = {name: p.default for name, p in rb.parameters.items()}
    site = lab.sites[code]
    d = build(rb, site.version, params, CATALOG.renderer.templates_dirs, {})
    script = CATALOG.renderer.script(
        "publish/publish.ps1.j2",
        {
            "site": {"code": code},
            "params": {
                "collection_id": collection,
                "ci_xml": d.ci_xml,
                "baseline_xml": d.baseline_xml,
                "baseline_unique_id": d.baseline_unique_id,
                "assignment_name": "KB2910552 -> " + collection,
                "desired_config_type": d.desired_config_type,
            },
        },
        header=f"cmrunbook publish client-hotfix-check | {code} on {site.server}",
    )
    result, err, code_ = run(lab, site.server, script)
    assert result is not None and code_ == 0, (result, err)


def test_compliance_states_exist_for_a_deployed_baseline_only_with_the_documented_members(
    lab: Lab,
) -> None:
    """SMS_G_System_CI_ComplianceState (cc143662, hh949173): no row before a baseline is
    deployed; then rows for the part of the collection that reported, under the baseline's
    CI_UniqueID; CIVersion is a member on 2012 R2 only."""
    site = lab.sites["P12"]
    assert wmi.query(lab, site, "SELECT * FROM SMS_G_System_CI_ComplianceState") == []
    _publish(lab, "P12", "P1200030")
    rows = wmi.query(lab, site, "SELECT * FROM SMS_G_System_CI_ComplianceState")
    fleet = [c for c in site.clients if c["_host"].startswith("xp-fleet") and not c["_extra"]]
    assert 0 < len(rows) < len(fleet) / 2
    assert {r["ComplianceState"] for r in rows} == {1, 2, 4}
    baseline = next(i for i in site.config_items if i["_kind"] == "Baseline")
    assert {r["CI_UniqueID"] for r in rows} == {baseline["CI_UniqueID"]}
    assert wmi.query(lab, site, "SELECT * FROM SMS_G_System_CI_ComplianceState WHERE CIVersion=1")
    with pytest.raises(PSError, match="Invalid query"):
        wmi.query(
            lab, lab.sites["C07"], "SELECT * FROM SMS_G_System_CI_ComplianceState WHERE CIVersion=1"
        )


def test_a_baseline_state_decides_only_towards_non_compliant(lab: Lab, inv: Inventory) -> None:
    """XP-FLEET008 reports non-compliant for the baseline with 5.0.7958.1104 inventoried:
    non-compliant, by the state. XP-FLEET034 reports compliant with 5.0.7958.1000 inventoried:
    non-compliant, by the inventory (a state never overrules it towards fine). XP-FLEET025
    reports compliant and TSCore.dll is not inventoried: still unknown, since a compliant state
    cannot show the file was found. A client with no state (XP-FLEET001) or an error
    (XP-FLEET009) is the inventory's."""
    before = _site_clients(_site_reading(lab, inv)[0])
    _publish(lab, "P12", "P1200030")
    result, code = _site_reading(lab, inv)
    assert code == 0, result["message"]
    after = _site_clients(result)
    by_state, by_inventory = "baseline compliance state", "software inventory"
    assert after["xp-fleet008"][0::4] == ["non-compliant", by_state]
    assert after["xp-fleet008"][1] == "5.0.7958.1104"
    assert after["xp-fleet034"][0::4] == ["non-compliant", by_inventory]
    assert after["xp-fleet034"][5] == "compliant"
    assert after["xp-fleet025"][0::4] == ["unknown", by_inventory]
    assert after["xp-fleet025"][5] == "compliant"
    assert before["xp-fleet025"][0] == "unknown"
    for name in ("xp-fleet001", "xp-fleet009"):
        assert after[name][:5] == [*before[name][:4], by_inventory], name
    # A wrong guess of the identity reads no state: every client is the inventory's again.
    rb = Runbook(
        lab, inv, "client-hotfix-check", "xp-wks001", "compliance_ci_unique_id=ScopeId_X/Y"
    )
    ps = next(s for s in rb.hp.all_steps() if s.step.id == "client.tscore-inventory")
    result, _, _ = run(lab, ps.run_on, SiteReadings(CATALOG, rb.plan).script(rb.hp, ps))
    assert result is not None
    assert _site_clients(result) == before


def test_a_look_alike_baseline_s_states_are_not_read(lab: Lab, inv: Inventory) -> None:
    """A baseline whose CI_UniqueID differs from the check's only where the check's has an
    underscore (LIKE's one-character wildcard) is another baseline: its states are not read."""
    before = _site_clients(_site_reading(lab, inv)[0])
    _publish(lab, "P12", "P1200030")
    baseline = next(i for i in lab.sites["P12"].config_items if i["_kind"] == "Baseline")
    ours = str(baseline["CI_UniqueID"])
    assert "/Baseline_" in ours
    baseline["CI_UniqueID"] = ours.replace("/Baseline_", "/BaselineX", 1)
    assert _site_clients(_site_reading(lab, inv)[0]) == before
    baseline["CI_UniqueID"] = ours
    assert _site_clients(_site_reading(lab, inv)[0]) != before


# -- site-hotfix-check ----------------------------------------------------------------------------


def test_site_hotfix_check(lab: Lab, inv: Inventory) -> None:
    rb = Runbook(lab, inv, "site-hotfix-check", "cm07-site01")
    result, code = rb.run("site.ts-files")
    assert code == 1 and result["data"]["compliance"] == "non-compliant"
    assert rf"{CM07}\OSD\bin\x64\Tsmbootstrap.exe is 4.0.6487.2000" in result["message"]
    assert "needs ConfigMgr 2007 SP2 first" in result["message"]  # the site says SP1 R2
    assert len(result["data"]["files"]) == 6
    lab.hosts["cm07-site01"].fs.get(
        CM07 + r"\OSD\bin\x64\TsmBootstrap.exe"
    ).version = "4.0.6487.2192"
    result, code = rb.run("site.ts-files")
    assert code == 0 and result["data"]["compliance"] == "compliant"
    result, code = Runbook(
        lab, inv, "site-hotfix-check", "cm07-site01", r"osd_bin_dirs={install_dir}\bin\ia64"
    ).run("site.ts-files")
    assert code == 0 and result["data"]["compliance"] == "unknown"


# -- nt4-precheck ---------------------------------------------------------------------------------


def test_nt4_precheck(lab: Lab, inv: Inventory) -> None:
    result, code = Runbook(lab, inv, "nt4-precheck", "cm07-site01").run("nt4.find")
    assert code == 1 and result["data"]["compliance"] == "non-compliant"
    computers = {c["name"]: c["matched_by"] for c in result["data"]["computers"]}
    assert computers == {
        "NT4-LEGACY01": ["OS like Microsoft Windows NT Workstation 4.0%"],
        "NT4-LEGACY02": ["OS like Microsoft Windows NT Workstation 4.0%", "build 1381"],
    }
    result, code = Runbook(lab, inv, "nt4-precheck", "cm07-site01", "collection_id=C0700020").run(
        "nt4.find"
    )
    assert code == 1 and [c["name"] for c in result["data"]["computers"]] == ["NT4-LEGACY02"]
    assert "collection C0700020 (XP to Windows 7 refresh)" in result["message"]
    result, code = Runbook(lab, inv, "nt4-precheck", "cm07-site01", "collection_id=C0700021").run(
        "nt4.find"
    )
    assert code == 0 and result["data"]["compliance"] == "compliant"
    result, code = Runbook(lab, inv, "nt4-precheck", "cm07-site01", "collection_id=C0799999").run(
        "nt4.find"
    )
    assert code == 1 and result["message"] == "No collection C0799999 in site C07"


def test_nt4_precheck_wrong_property_or_class_fails(lab: Lab, inv: Inventory) -> None:
    rb = Runbook(lab, inv, "nt4-precheck", "cm07-site01")
    result, code = rb.run(
        "nt4.find",
        edit=lambda s: s.replace("OperatingSystemNameandVersion LIKE", "OperatingSystem LIKE"),
    )
    assert code == 1 and result["message"] == "Invalid query"
    result, code = rb.run(
        "nt4.find",
        edit=lambda s: s.replace("FROM SMS_G_System_OPERATING_SYSTEM", "FROM SMS_G_System_OS"),
    )
    assert code == 1 and result["message"] == 'Invalid class "SMS_G_System_OS"'


# -- diagnose --host ------------------------------------------------------------------------------


def test_fetch_logs_returns_the_failed_smsts_log(lab: Lab) -> None:
    from cmrunbook.logs import diagnose as dx

    script = fetch_script(
        CATALOG.renderer, "xp-wks002", [*dx.SMSTS_CANDIDATES, *dx.OSDLAUNCH_CANDIDATES], 1 << 20
    )
    result, _, code = run(lab, "xp-wks002", script)
    assert code == 0 and result is not None
    assert list(result["data"]) == [r"C:\WINDOWS\CCM\Logs\smsts.log"]
    assert result["message"] == "1 of 7 candidate log(s) found"
    text = base64.b64decode(result["data"][r"C:\WINDOWS\CCM\Logs\smsts.log"]).decode()
    assert r'"C:\_SMSTaskSequence\WinPE\SMS\bin\i386\bootsect.exe" /NT60 SYS /MBR' in text
    logs = dx.decode_fetch("xp-wks002", result["data"], 1 << 20)
    report = dx.diagnose_fetched(logs[0], dx.load_signatures(CATALOG)[0])
    assert any("xp-bootsect-0x800700c1" in str(f) for f in report.findings), report
    # tail only, on an even offset
    tail = fetch_script(CATALOG.renderer, "x", [r"%windir%\CCM\Logs\smsts.log"], 1001)
    result, _, _ = run(lab, "xp-wks002", tail)
    assert result is not None
    assert len(base64.b64decode(result["data"][r"C:\WINDOWS\CCM\Logs\smsts.log"])) == 1000
    result, _, _ = run(lab, "w7-wks101", script)
    assert result is not None and result["data"] == {}
