"""The lab as an SMS Provider oracle (shared/kb/SMS-PROVIDER.md), and the multicast scripts
against it: class surface per version, lazy properties, SCF sessions, exact site-system names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers_lab import run, sim_lab
from test_lab_sim import CATALOG, REPO, Player, make_lab

from cmrunbook.load.inventory import load_inventory
from cmrunbook.plan.planner import Planner
from cmrunbook.render.steps import render_step
from cmrunbook_lab import wmi
from cmrunbook_lab.scripts import PSError
from cmrunbook_lab.site import MULTICAST_ROLE, wql_like


def _script(p: Player, step_id: str, item: dict[str, Any] | None = None) -> tuple[Any, str]:
    ps = next(s for s in p.hp.all_steps() if s.step.id == step_id)
    script = render_step(CATALOG, p.plan, p.hp, ps, item)
    assert script is not None
    return ps, script


def _roles(lab: Any) -> dict[str, Any]:
    return {r.server(): r for r in lab.sites["C07"].scf if r.RoleName == MULTICAST_ROLE}


def test_2007_has_no_packagesize_and_2012r2_has() -> None:
    lab, _ = make_lab()
    with pytest.raises(PSError, match="Invalid query"):
        wmi.query(lab, lab.sites["C07"], "SELECT * FROM SMS_ImagePackage WHERE PackageSize = 1")
    # a valid query on 2012 R2 (no image of that size)
    assert (
        wmi.query(lab, lab.sites["P12"], "SELECT * FROM SMS_ImagePackage WHERE PackageSize = 1")
        == []
    )
    assert wmi.SURFACE["SMS_ImagePackage"].source.startswith("SMS-PROVIDER.md")
    with pytest.raises(PSError, match="Property 'PackageSize' cannot be found on this object"):
        wmi.check_reads("$image.PackageSize", "image", "SMS_ImagePackage", "2007")


def test_probe_sizes_come_from_the_status_summary_on_2007() -> None:
    """Fidelity F1: the probes work on 2007 and report the source size (KB -> MB)."""
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    images = {i["PackageID"]: i["SizeMB"] for i in p.probe("multicast-images")}
    assert images == {"C0700010": 5222, "C0700011": 700}
    assert p.probe("large-multicast-image") is True


def test_put_after_get_keeps_the_lazy_properties() -> None:
    """Fidelity F6: clearing the flag re-reads the image first; its ImageProperty survives."""
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    _, script = _script(p, "m3.clear-image-multicast", {"PackageID": "C0700010"})
    result, err, _ = run(lab, "cm07-site01", script)
    assert result and result["ok"] and result["changed"], (result, err)
    image = lab.sites["C07"].images["C0700010"]
    assert image["PkgFlags"] & 0x08000000 == 0
    assert image["ImageProperty"] and image["RefreshSchedule"]
    assert not [c for c in lab.changes if "lazy" in c["what"]]


def test_put_of_a_query_result_loses_the_lazy_properties() -> None:
    """The oracle: without the Get() the image's lazy properties are written back empty."""
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    _, script = _script(p, "m3.clear-image-multicast", {"PackageID": "C0700010"})
    mutated = script.replace("\n$image.Get()\n$before", "\n$before", 1)
    assert mutated != script
    result, _, _ = run(lab, "cm07-site01", mutated)
    assert result and result["ok"]
    assert lab.sites["C07"].images["C0700010"]["ImageProperty"] is None
    (lost,) = [c for c in lab.changes if "lazy" in c["what"]]
    assert lost["host"] == "cm07-site01" and lost["lost"] == ["ImageProperty", "RefreshSchedule"]


def test_scf_delete_in_the_session_reaches_the_site() -> None:
    """Fidelity F2: with the SessionHandle on every call the removal is committed."""
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    _, script = _script(p, "m3.disable-dp-multicast")
    result, err, _ = run(lab, "cm07-site01", script)
    assert result and result["ok"], (result, err)
    assert "cm07-dp02" not in _roles(lab)
    (removed,) = [c for c in lab.changes if c["what"] == "site control file: role removed"]
    assert removed["host"] == "cm07-dp02"


def test_scf_delete_without_the_session_handle_never_reaches_the_site() -> None:
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    _, script = _script(p, "m3.disable-dp-multicast")
    in_session = ".Delete((New-CmrbScfOptions -Session $session -Type 'DeleteOptions'))"
    mutated = script.replace(in_session, ".Delete()")
    assert mutated != script
    run(lab, "cm07-site01", mutated)
    assert "cm07-dp02" in _roles(lab)
    assert any("without the session handle" in c["what"] for c in lab.changes)


def test_method_3_on_cm07_dp02_leaves_its_neighbour_alone() -> None:
    """Attack 1e / fidelity F5: bak-cm07-dp02 is untouched; cm07-dp02's role comes back whole."""
    lab, clock = make_lab()
    # Snapshots, not the role objects: a role changed in place must not compare with itself.
    before = {server: role.record() for server, role in _roles(lab).items()}
    p = Player(lab, clock, "3", "cm07-dp02")
    p.stage("method:3")
    p.settle()
    after = {server: role.record() for server, role in _roles(lab).items()}
    assert after["bak-cm07-dp02"] == before["bak-cm07-dp02"]
    assert after["cm07-dp02"]["Props"] == before["cm07-dp02"]["Props"]
    assert after["cm07-dp02"]["NALPath"] == before["cm07-dp02"]["NALPath"]
    assert not [c for c in lab.changes if c["host"] == "bak-cm07-dp02"]
    hosts = {c["host"] for c in lab.changes if c["what"].startswith("site control file")}
    assert hosts == {"cm07-dp02"}
    assert lab.dps["bak-cm07-dp02"].history == []


def _inventory(tmp_path: Path, address: str) -> Any:
    data = yaml.safe_load((REPO / "inventory" / "example.yaml").read_text(encoding="utf-8"))
    data["hosts"]["cm07-dp02"]["address"] = address
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_inventory(path)


@pytest.mark.parametrize(
    ("inventory_address", "nal_name"),
    [
        ("cm07-dp02.corp.example", "cm07-dp02"),
        ("cm07-dp02", "cm07-dp02.corp.example"),
        ("cm07-dp02.corp.example", "CM07-DP02.CORP.EXAMPLE"),
    ],
)
def test_role_found_by_netbios_or_fqdn(
    tmp_path: Path, inventory_address: str, nal_name: str
) -> None:
    lab, clock = make_lab(**{"cm07-dp02": {"nal_name": nal_name}})
    p = Player(lab, clock, "3", "cm07-dp02")
    p.plan = Planner(
        CATALOG, CATALOG.load("multicast"), _inventory(tmp_path, inventory_address)
    ).plan(method="3", hosts="cm07-dp02")
    p.hp = p.plan.hosts[0]
    _, script = _script(p, "m3.disable-dp-multicast")
    result, err, _ = run(lab, "cm07-site01", script)
    assert result and result["ok"] and result["changed"], (result, err)
    assert nal_name not in _roles(lab) and "bak-cm07-dp02" in _roles(lab)


def test_two_entries_naming_the_dp_are_refused_before_any_change() -> None:
    lab, clock = make_lab()
    site = lab.sites["C07"]
    site.dp_servers["cm07-dp02"] = "cm07-dp02.corp.example"
    site.scf.append(site.role_record(MULTICAST_ROLE, "cm07-dp02"))
    site.dp_servers["cm07-dp02"] = "cm07-dp02"
    before = [r.record() for r in site.scf]
    p = Player(lab, clock, "3", "cm07-dp02")
    _, script = _script(p, "m3.disable-dp-multicast")
    result, _, _ = run(lab, "cm07-site01", script)
    assert result and not result["ok"] and result["message"].startswith("Refusing to change")
    assert [r.record() for r in site.scf] == before and lab.changes == []


def _hotfix_check(edit: Any, host: str) -> dict[str, Any]:
    lab, clock = sim_lab(edit)
    p = Player(lab, clock, "3", host)
    ps = next(s for s in p.hp.all_steps() if s.step.id == "pre.large-wim-hotfix")
    script = render_step(CATALOG, p.plan, p.hp, ps, None)
    assert script is not None
    result, err, _ = run(lab, host, script)
    assert result is not None, err
    return result


def test_hotfix_check_reads_the_dps_own_x64_copy_with_a_comma_version() -> None:
    """Fidelity F10: the DP's own SMS folder on D:, the x64 copy first, '4, 0, 6221, 1176'."""

    def edit(data: dict[str, Any]) -> None:
        data["hosts"]["cm07-dp01"]["files"] = {
            "D:\\SMS\\bin\\i386\\smswdstp.dll": {"version": "4.0.6221.1000"},
            "D:\\SMS\\bin\\x64\\smswdstp.dll": {"version": "4, 0, 6221, 1176"},
        }

    result = _hotfix_check(edit, "cm07-dp01")
    assert result["ok"], result
    assert result["data"]["path"] == "D:\\SMS\\bin\\x64\\smswdstp.dll"
    assert result["data"]["version"] == "4.0.6221.1176"


def test_hotfix_check_skips_x64_on_an_x86_dp_and_names_an_old_copy() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["hosts"]["cm07-dp02"]["files"] = {
            "E:\\SMS\\bin\\i386\\smswdstp.dll": {"version": "4.0.6221.1000"},
        }

    result = _hotfix_check(edit, "cm07-dp02")
    assert not result["ok"] and "Smswdstp.dll is 4.0.6221.1000, older than" in result["message"]
    assert result["data"]["path"] == "E:\\SMS\\bin\\i386\\smswdstp.dll"


def test_method_4_restores_the_pxe_point_with_its_bind_list() -> None:
    """Fidelity F7: the re-added PXE service point keeps its Props and its BindExcept list."""
    lab, clock = make_lab()

    def pxe() -> dict[str, Any]:
        (role,) = [r for r in lab.sites["C07"].scf if r.RoleName == "SMS PXE Service Point"]
        return role.record()

    before = pxe()
    assert before["PropLists"][0]["PropertyListName"] == "BindExcept"
    p = Player(lab, clock, "4", "cm07-dp01")
    p.stage("method:4")
    p.settle()
    assert pxe() == before
    backups = lab.hosts["cm07-site01"].fs.list(r"C:\ProgramData\cmrunbook\backup", "*.xml")
    assert sorted(b.path.rsplit("\\", 1)[1].rsplit("-", 2)[0] for b in backups) == [
        "multicast-role-cm07-dp01",
        "pxe-role-cm07-dp01",
    ]


def test_backups_of_one_role_in_one_second_never_overwrite_and_the_latest_is_restored() -> None:
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    _, disable = _script(p, "m3.disable-dp-multicast")
    _, enable = _script(p, "m3.enable-dp-multicast")
    for script in (disable, enable):
        result, err, _ = run(lab, "cm07-site01", script)
        assert result and result["ok"], (result, err)
    lab.sites["C07"].commit(lab.sites["C07"].open_session("{X}"))  # nothing pending
    role = _roles(lab)["cm07-dp02"]
    role.Props = [*role.Props, {"PropertyName": "Changed", "Value": 1, "Value1": "", "Value2": ""}]
    for script in (disable, enable):  # the same second on the lab's clock
        result, err, _ = run(lab, "cm07-site01", script)
        assert result and result["ok"], (result, err)
    backups = lab.hosts["cm07-site01"].fs.list(r"C:\ProgramData\cmrunbook\backup", "*.xml")
    assert len(backups) == 2 and len({b.path for b in backups}) == 2
    assert _roles(lab)["cm07-dp02"].Props[-1]["PropertyName"] == "Changed"


@pytest.mark.parametrize(
    ("value", "pattern", "matches"),
    [
        ("ScopeId_1/Baseline_2/3", "ScopeId[_]1/Baseline[_]2%", True),
        ("ScopeId_1/BaselineX2", "ScopeId[_]1/Baseline[_]2%", False),
        ("ScopeId_1/BaselineX2", "ScopeId_1/Baseline_2%", True),
        ("a%b", "a[%]b", True),
        ("axb", "a[%]b", False),
        ("a[b", "a[[]b", True),
        ("C", "[a-f]", True),
        ("g", "[a-f]", False),
        ("g", "[^a-f]", True),
    ],
)
def test_wql_like_reads_brackets_as_the_wmi_sdk_says(
    value: str, pattern: str, matches: bool
) -> None:
    """LIKE (learn.microsoft.com/windows/win32/wmisdk/like-operator): % and _ are wildcards, a
    set or range in [ ] is one character, [^ ] one not in it; a literal _ is written [_]."""
    assert wql_like(value, pattern) is matches


def test_a_like_pattern_of_a_text_matches_only_that_text() -> None:
    """`ConvertTo-CmrbWqlLike` (templates/lib/sms.ps1.j2) as the lab reads it: the text's own
    wildcards are bracketed, its quotes and backslashes escaped as `ConvertTo-CmrbWql` does."""
    text = "Scope_1/Base%line[x]'s"
    pattern = wmi.concat("(ConvertTo-CmrbWqlLike $id) + '%'", {"$id": text})
    assert pattern == "Scope[_]1/Base[%]line[[]x]\\'s%"
