"""`invoke inventory from-site`: mapping the SMS Provider's answer to inventory hosts and roles.

The answers here are shaped like templates/inventory/from_site.ps1.j2's result data; the
end-to-end tests (tests/e2e/test_from_site.py) get the same data from the lab over WinRM.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from cmrunbook.cli.inventory import build_inventory, write_checked
from cmrunbook.load.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[2]


def _seed() -> Any:
    return load_inventory(ROOT / "inventory" / "example.yaml")


def _nal(server: str, site: str, share: str = "") -> str:
    unc = f"\\\\{server}\\" + (f"{share}\\" if share else "")
    return f'["Display={unc}"]MSWNET:["SMS_SITE={site}"]{unc}'


def _answer(**extra: Any) -> dict[str, Any]:
    """A 2012 R2 site P12: provider cm12-site01, one DP cm12-dp01 (both Server 6.3, x64)."""
    data: dict[str, Any] = {
        "site": "P12",
        "provider": {"machine": "cm12-site01.corp.example", "namespace": "", "local": True},
        "surface": "2012r2",
        "resources": [
            {
                "role": "SMS Distribution Point",
                "server": "cm12-dp01.corp.example",
                "remote": "",
                "nal": _nal("cm12-dp01.corp.example", "P12"),
                "site": "P12",
            },
        ],
        "roles": [],
        "systems": [
            {
                "name": "CM12-SITE01",
                "resource_id": "1",
                "os": "Microsoft Windows NT Server 6.3",
                "system_type": "x64-based PC",
            },
            {
                "name": "CM12-DP01",
                "resource_id": "2",
                "os": "Microsoft Windows NT Server 6.3",
                "system_type": "x64-based PC",
            },
        ],
        "collection": None,
    }
    data.update(extra)
    return data


def test_2012r2_dp_entry_properties_give_pxe_and_multicast() -> None:
    """SMS-PROVIDER.md 5.5: on 2012 R2 PXE (IsPXE) and multicast (IsMulticast) are embedded
    properties of the DP's own site control file entry, not separate roles."""
    roles = [
        {
            "role": "SMS Distribution Point",
            "nal": _nal("cm12-dp01.corp.example", "P12"),
            "site": "P12",
            "props": {"IsPXE": 1, "IsMulticast": 1},
        }
    ]
    built = build_inventory(_answer(roles=roles), _seed(), "cm12-site01", {})
    assert built.data["hosts"]["cm12-dp01"]["dp"] == {"multicast": True, "pxe": True}
    off = [{**roles[0], "props": {"IsPXE": 0, "IsMulticast": 0}}]
    built = build_inventory(_answer(roles=off), _seed(), "cm12-site01", {})
    assert built.data["hosts"]["cm12-dp01"]["dp"] == {"multicast": False, "pxe": False}


def test_a_site_system_of_another_site_is_not_mixed_in() -> None:
    """A provider that also lists a neighbour site's DP (its SiteCode, its NAL path's SMS_SITE)
    must not put that DP into this site's inventory: it is named in a warning instead."""
    resources = [
        *_answer()["resources"],
        {
            "role": "SMS Distribution Point",
            "server": "cm12-dp01b.corp.example",
            "remote": "",
            "nal": _nal("cm12-dp01b.corp.example", "S13"),
            "site": "S13",
        },
        # the row's SiteCode says P12, its NAL path another site: also refused
        {
            "role": "SMS Distribution Point",
            "server": "xdp.corp.example",
            "remote": "",
            "nal": _nal("xdp.corp.example", "S13"),
            "site": "P12",
        },
    ]
    built = build_inventory(_answer(resources=resources), _seed(), "cm12-site01", {})
    assert sorted(built.data["hosts"]) == ["cm12-dp01", "cm12-site01"]
    assert any("cm12-dp01b.corp.example belongs to site S13" in w for w in built.warnings)
    assert any("xdp.corp.example belongs to site S13" in w for w in built.warnings)


def test_an_unmapped_role_is_a_warning_and_the_host_is_kept_without_it() -> None:
    resources = [
        *_answer()["resources"],
        {
            "role": "SMS Management Point",
            "server": "cm12-dp01.corp.example",
            "remote": "",
            "nal": _nal("cm12-dp01.corp.example", "P12"),
            "site": "P12",
        },
    ]
    built = build_inventory(_answer(resources=resources), _seed(), "cm12-site01", {})
    assert built.data["hosts"]["cm12-dp01"]["roles"] == ["distribution_point"]
    assert any("'SMS Management Point' has no inventory meaning" in w for w in built.warnings)


def test_unknown_os_or_architecture_is_not_guessed() -> None:
    """Server 10.0 is 2016, 2019 or 2022; a SystemType outside the known values says nothing
    of the architecture; a host without a discovery record has neither: all three are listed
    as undetermined (the command then stops), unless stated with --os."""
    systems = [
        {
            "name": "CM12-SITE01",
            "resource_id": "1",
            "os": "Microsoft Windows NT Server 10.0",
            "system_type": "x64-based PC",
        },
        {
            "name": "CM12-DP01",
            "resource_id": "2",
            "os": "Microsoft Windows NT Server 6.3",
            "system_type": "ARM-based PC",
        },
    ]
    resources = [
        *_answer()["resources"],
        {
            "role": "SMS Distribution Point",
            "server": "dp3.corp.example",
            "remote": "",
            "nal": _nal("dp3.corp.example", "P12"),
            "site": "P12",
        },
    ]
    answer = _answer(systems=systems, resources=resources)
    built = build_inventory(answer, _seed(), "cm12-site01", {})
    assert sorted(u.split(":")[0] for u in built.undetermined) == [
        "cm12-dp01",
        "cm12-site01",
        "dp3",
    ]
    stated = {
        "cm12-site01": ("2016", "x64"),
        "cm12-dp01": ("2012r2", "x64"),
        "dp3": ("2008r2", "x86"),
    }
    built = build_inventory(answer, _seed(), "cm12-site01", stated)
    assert built.undetermined == []
    assert built.data["hosts"]["dp3"]["os"] == {"version": "2008r2", "arch": "x86"}


def test_the_written_file_is_validated_and_holds_no_password(tmp_path: Path) -> None:
    built = build_inventory(_answer(), _seed(), "cm12-site01", {})
    out = write_checked(tmp_path / "site.yaml", built, "cm12-site01", "P12")
    inv = load_inventory(out)
    assert inv.file.sites["P12"].provider == "cm12-site01"
    assert "password:" not in out.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["site.yaml"]  # no temporary file left


def test_text_from_the_site_cannot_write_yaml_into_the_file(tmp_path: Path) -> None:
    """A server name with line breaks lands in a warning (a site system of another site), and
    every warning is a header comment: it must stay one comment line, not inventory content."""
    evil = "x\nhosts: {evil: {site: P12, roles: [], os: {version: xp}}}\n#"
    resources = [
        *_answer()["resources"],
        {
            "role": "SMS Distribution Point",
            "server": evil,
            "remote": "",
            "nal": _nal(evil, "S13"),
            "site": "S13",
        },
    ]
    built = build_inventory(_answer(resources=resources), _seed(), "cm12-site01", {})
    out = write_checked(tmp_path / "site.yaml", built, "cm12-site01", "P12")
    assert sorted(load_inventory(out).file.hosts) == ["cm12-dp01", "cm12-site01"]


def test_a_stated_os_that_is_no_windows_version_is_refused(tmp_path: Path) -> None:
    """Refused before any host is contacted (exit 2, nothing written)."""
    out = tmp_path / "site.yaml"
    invoke = str(Path(sys.executable).with_name("invoke"))
    res = subprocess.run(
        [
            invoke,
            "inventory",
            "from-site",
            "--provider",
            "cm07-site01",
            "--site",
            "C07",
            "--out",
            str(out),
            "--os",
            "cm07-dp01=2016r2/x64",
        ],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--os 'cm07-dp01=2016r2/x64': expected HOST=VERSION/ARCH with VERSION one of" in (
        res.stderr
    )
    assert not out.exists()


def test_the_version_is_not_guessed_when_no_site_system_is_listed() -> None:
    """The 2007/2012 R2 surface is told by an SMS_SystemResourceList row; with none, the
    version is undetermined unless --site-version states it."""
    answer = _answer(resources=[], surface=None)
    built = build_inventory(answer, _seed(), "cm12-site01", {})
    assert [u for u in built.undetermined if u.startswith("site P12: ConfigMgr version")]
    built = build_inventory(answer, _seed(), "cm12-site01", {}, "2012r2")
    assert built.undetermined == []
    assert built.data["sites"]["P12"]["version"] == "2012r2"
    assert not any("inferred" in w for w in built.warnings)  # stated, not inferred
