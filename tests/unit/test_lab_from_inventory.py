"""A lab built from an inventory (`invoke lab --from-inventory`): the inventory decides which
sites, hosts, roles and versions exist; a lab file adds what an inventory never knows (host
state, images, faults); `--fault HOST=KIND` breaks one DP. Bad input stops with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from cmrunbook.errors import UsageError
from cmrunbook_lab.from_inventory import lab_file_from_inventory, parse_faults
from cmrunbook_lab.labfile import default_lab_path
from cmrunbook_lab.world import Lab

EXAMPLE = ROOT / "inventory" / "example.yaml"


def _inventory(tmp_path: Path, change: Any = None) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    if change:
        change(data)
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_inventory_decides_hosts_roles_and_versions(tmp_path: Path) -> None:
    def only_c07(data: dict[str, Any]) -> None:
        data["sites"].pop("P12")
        data["hosts"] = {n: h for n, h in data["hosts"].items() if h["site"] == "C07"}
        data["groups"] = {}
        data["hosts"]["cm07-dp02"]["dp"] = {"multicast": False, "pxe": True}

    lab = Lab(lab_file_from_inventory(_inventory(tmp_path, only_c07)))
    assert sorted(lab.hosts) == [
        "cm07-dp01",
        "cm07-dp02",
        "cm07-site01",
        "nt4-legacy01",
        "xp-wks003",
    ]
    assert lab.sites["C07"].version == "2007"
    dp02 = lab.dps["cm07-dp02"]
    assert (dp02.roles["multicast"].installed, dp02.roles["pxe"].installed) == (False, True)
    assert lab.hosts["cm07-dp02"].os_version == "2008" and lab.hosts["cm07-dp02"].arch == "x86"
    assert not lab.hosts["xp-wks003"].has_winrm
    assert lab.dps["cm07-dp01"].fault == "none"  # no lab file: healthy


def test_a_lab_file_adds_state_and_faults_and_a_flag_breaks_a_dp(tmp_path: Path) -> None:
    spec = lab_file_from_inventory(EXAMPLE, default_lab_path(), parse_faults(["cm12-dp02=mcs-key"]))
    lab = Lab(spec)
    assert lab.dps["cm07-dp01"].fault == "wds"  # from the lab file's cm07-dp01
    dll = lab.hosts["cm07-dp01"].fs.get(r"C:\SMS\bin\x64\smswdstp.dll")  # and its files
    assert dll is not None and dll.version == "4.0.6221.1176"
    assert lab.dps["cm12-dp02"].fault == "mcs-key"  # from the flag
    assert "bak-cm07-dp02" not in lab.hosts  # not in the inventory
    # the lab file's boot images, on the inventory's DPs only
    assert lab.sites["C07"].boot_images["C0700003"]["Name"] == "Boot image (x86)"


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (["cm07-dp01=melted"], "unknown fault; known: none, image-flags, mcs-key, wds"),
        (["cm07-site01=wds"], "cm07-site01 is not a DP of"),
        (["nohost=wds"], "nohost is not a DP of"),
        (["cm07-dp01"], "expected HOST=KIND"),
    ],
)
def test_bad_fault_flags_are_refused(faults: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        lab_file_from_inventory(EXAMPLE, None, parse_faults(faults))


def test_a_lab_file_fault_on_a_host_outside_the_inventory_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(default_lab_path().read_text(encoding="utf-8"))
    data["faults"] = [{"host": "bak-cm07-dp02", "kind": "script-failure"}]
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(UsageError, match="fault names unknown host 'bak-cm07-dp02'"):
        lab_file_from_inventory(EXAMPLE, lab_file)
