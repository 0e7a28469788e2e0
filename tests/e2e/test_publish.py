"""`invoke publish`, the real CLI against the lab: what an administrator checks on the site.

A dry run and --out change nothing on the site; a publish creates exactly one configuration item,
one baseline referencing it and one assignment of that baseline to the named collection, on a
2007 and a 2012 R2 site; without --yes, to an unknown collection, or a second time, nothing is
created and the command says why.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, custom_lab_file

RUNBOOK = "client-hotfix-check"
NS_2007 = (
    "http://schemas.microsoft.com/SystemsCenterConfigurationManager/2006/03/24/DesiredConfiguration"
)


def with_p12_collection(data: dict[str, Any]) -> None:
    data["sites"]["P12"]["collections"] = {"P1200030": {"name": "XP clients", "members": []}}


@pytest.fixture
def lab12(make_lab: Callable[..., Lab], tmp_path: Path) -> Lab:
    return make_lab(custom_lab_file(tmp_path, with_p12_collection))


def publish(lab: Lab, site: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.cli("publish", RUNBOOK, "--site", site, "--inventory", lab.inventory, *extra)


def site_objects(lab: Lab, code: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    site = lab.world.sites[code]
    return site.config_items, site.baseline_assignments


@pytest.mark.parametrize(("code", "collection"), [("C07", "C0700020"), ("P12", "P1200030")])
def test_publish_creates_one_item_baseline_and_assignment(
    lab12: Lab, code: str, collection: str
) -> None:
    res = publish(lab12, code, "--collection", collection, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    items, assignments = site_objects(lab12, code)
    assert [i["_kind"] for i in items] == ["OperatingSystem", "Baseline"]
    item, baseline = items
    assert {(r["path"], r["is64bit"]) for r in item["_rules"]} == {
        ("%windir%\\CCM", "false"),
        ("%windir%\\System32\\CCM", "false"),
        ("%windir%\\SysWOW64\\CCM", "true"),
    }
    assert {(r["file"], r["property"], r["operation"], r["operand"]) for r in item["_rules"]} == {
        ("TSCore.dll", "Version", "GreaterEquals", "5.0.7958.1104")
    }
    assert len(assignments) == 1
    assert assignments[0]["AssignedCIs"] == [baseline["CI_ID"]]
    assert assignments[0]["TargetCollectionID"] == collection
    out = res.stdout
    assert f"CI_ID {item['CI_ID']}" in out and f"baseline CI_ID {baseline['CI_ID']}" in out
    if code == "C07":
        root = ET.fromstring(item["SDMPackageXML"].encode("utf-16"))
        assert root.tag == f"{{{NS_2007}}}DesiredConfigurationDigest"
    # A real publish says first which values no documentation confirms.
    assert "UNCONFIRMED" in res.stderr


def test_a_second_publish_refuses_and_creates_nothing(lab: Lab) -> None:
    assert publish(lab, "C07", "--collection", "C0700020", "--yes").returncode == 0
    before = [dict(i) for i in lab.world.sites["C07"].config_items]
    again = publish(lab, "C07", "--collection", "C0700021", "--yes")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "already published" in again.stderr and f"CI_ID {before[1]['CI_ID']}" in again.stderr
    items, assignments = site_objects(lab, "C07")
    assert [i["CI_ID"] for i in items] == [i["CI_ID"] for i in before]
    assert len(assignments) == 1


def test_dry_run_shows_definition_and_calls_and_touches_nothing(lab12: Lab) -> None:
    res = publish(lab12, "P12", "--collection", "P1200030", "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<DesiredConfigurationDigest" in res.stdout
    assert 'Operation="GreaterEquals" OperandA="5.0.7958.1104"' in res.stdout
    assert "SMS_BaselineAssignment CreateInstance()" in res.stdout
    assert "UNCONFIRMED digest_namespace" in res.stdout
    assert site_objects(lab12, "P12") == ([], [])
    assert lab12.world.changes == []


def test_out_writes_the_importable_definition_and_touches_nothing(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "defs" / "tscore.xml"
    res = publish(lab, "C07", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    baseline = out.with_name("tscore-baseline.xml")
    for path in (out, baseline):
        assert path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")  # UTF-16, as the SDK exports
        root = ET.fromstring(path.read_bytes())
        assert root.tag == f"{{{NS_2007}}}DesiredConfigurationDigest"
    rules = list(ET.fromstring(out.read_bytes()).iter(f"{{{NS_2007}}}Rule"))
    assert {(r.get("Operation"), r.get("OperandA")) for r in rules} == {
        ("GreaterEquals", "5.0.7958.1104")
    }
    assert site_objects(lab, "C07") == ([], [])


def test_without_yes_nothing_is_created(lab: Lab) -> None:
    res = publish(lab, "C07", "--collection", "C0700020")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "not confirmed" in res.stderr and "nothing created" in res.stderr
    assert site_objects(lab, "C07") == ([], [])


def test_unknown_collection_is_refused_and_nothing_created(lab: Lab) -> None:
    res = publish(lab, "C07", "--collection", "C0799999", "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "No collection C0799999 in site C07" in res.stderr
    assert site_objects(lab, "C07") == ([], [])
