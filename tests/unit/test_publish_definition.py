"""The definition `invoke publish` sends: what an administrator would check in it.

Runbook text stays text in the XML (escaping), the rule and parts are the runbook's check, each
site version gets its own namespace and list of UNCONFIRMED values, the identity is stable (a
second publish finds the first), and a bad `publish:` block is a located error, exit 2.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from helpers_engine import edit_line, line_of, make_root, run_program

from cmrunbook.errors import UsageError
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import Runbook
from cmrunbook.render.baseline import Definition, build
from cmrunbook.run.sitebatch import compliance_identity

NS_2007 = (
    "http://schemas.microsoft.com/SystemsCenterConfigurationManager/2006/03/24/DesiredConfiguration"
)
RUNBOOK = "client-hotfix-check"


@pytest.fixture(scope="module")
def project() -> Project:
    return Project.find()


def runbook(project: Project, **publish: Any) -> Runbook:
    """client-hotfix-check, its publish: block changed by `publish`."""
    rb = project.load(RUNBOOK).runbook
    assert rb.publish is not None
    return rb.model_copy(update={"publish": rb.publish.model_copy(update=publish)})


def definition(project: Project, rb: Runbook, version: str, **facts: str) -> Definition:
    params = {name: p.default for name, p in rb.parameters.items()}
    return build(rb, version, params, project.renderer.templates_dirs, facts)


def parsed(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode("utf-16"))


def test_runbook_text_is_text_in_the_xml_never_markup(project: Project) -> None:
    hostile = "Check \"><Injected/> & <!-- ' -->"
    rb = runbook(project, name=hostile, description=hostile, file="TS<x>&.dll")
    d = definition(project, rb, "2007")
    for xml in (d.ci_xml, d.baseline_xml):
        root = parsed(xml)
        assert not list(root.iter(f"{{{NS_2007}}}Injected"))
        names = [e.get("Text") for e in root.iter(f"{{{NS_2007}}}DisplayName")]
        assert names == [hostile]
    filters = {e.text for e in parsed(d.ci_xml).iter(f"{{{NS_2007}}}Filter")}
    assert filters == {"TS<x>&.dll"}


def test_the_item_is_the_runbooks_check_on_both_architectures(project: Project) -> None:
    d = definition(project, project.load(RUNBOOK).runbook, "2007")
    root = parsed(d.ci_xml)
    assert root.tag == f"{{{NS_2007}}}DesiredConfigurationDigest"
    (item,) = list(root)
    assert item.tag == f"{{{NS_2007}}}OperatingSystem"
    parts = {
        f.findtext(f"{{{NS_2007}}}Path"): (f.get("Is64Bit"), f.get("Depth"))
        for f in item.iter(f"{{{NS_2007}}}File")
    }
    assert parts == {
        "%windir%\\CCM": ("false", "Base"),
        "%windir%\\System32\\CCM": ("false", "Base"),
        "%windir%\\SysWOW64\\CCM": ("true", "Base"),
    }
    rules = [(r.get("Operation"), r.get("OperandA")) for r in item.iter(f"{{{NS_2007}}}Rule")]
    assert rules == [("GreaterEquals", "5.0.7958.1104")] * 3
    for f in item.iter(f"{{{NS_2007}}}File"):
        assert f.findtext(f"{{{NS_2007}}}Filter") == "TSCore.dll"
        rule_path = f"{{{NS_2007}}}PropertyRules/{{{NS_2007}}}Version/{{{NS_2007}}}Rule"
        assert f.find(rule_path) is not None
    os_info = item.find(f"{{{NS_2007}}}OperatingSystemDiscoveryInfo")
    assert os_info is not None
    assert (os_info.get("MajorVersion"), os_info.get("MinorVersion")) == ("5", "1")


def test_the_baseline_references_the_item(project: Project) -> None:
    d = definition(project, project.load(RUNBOOK).runbook, "2012r2")
    (item,) = list(parsed(d.ci_xml))
    refs = [e for e in parsed(d.baseline_xml).iter() if e.tag.endswith("}OperatingSystemReference")]
    assert [(r.get("AuthoringScopeId"), r.get("LogicalName"), r.get("Version")) for r in refs] == [
        (item.get("AuthoringScopeId"), item.get("LogicalName"), item.get("Version"))
    ]
    (baseline,) = list(parsed(d.baseline_xml))
    assert d.baseline_unique_id.endswith("/" + baseline.get("LogicalName", ""))


def test_each_version_its_namespace_and_its_unconfirmed_values(project: Project) -> None:
    rb = project.load(RUNBOOK).runbook
    d07, d12 = definition(project, rb, "2007"), definition(project, rb, "2012r2")
    assert parsed(d07.ci_xml).tag == f"{{{NS_2007}}}DesiredConfigurationDigest"
    assert "digest_namespace" not in {u.name for u in d07.unconfirmed}
    assert "digest_namespace" in {u.name for u in d12.unconfirmed}
    assert {"rule_severity", "desired_config_type"} <= {u.name for u in d07.unconfirmed}
    replaced = definition(
        project, rb, "2012r2", digest_namespace="urn:site", rule_severity="Warning"
    )
    root = parsed(replaced.ci_xml)
    assert root.tag == "{urn:site}DesiredConfigurationDigest"
    assert {r.get("Severity") for r in root.iter("{urn:site}Rule")} == {"Warning"}
    assert not {"digest_namespace", "rule_severity"} & {u.name for u in replaced.unconfirmed}


def test_identity_is_stable_and_follows_the_operand(project: Project) -> None:
    rb = project.load(RUNBOOK).runbook
    first, again = definition(project, rb, "2007"), definition(project, rb, "2007")
    assert (first.ci_unique_id, first.baseline_unique_id) == (
        again.ci_unique_id,
        again.baseline_unique_id,
    )
    params = {name: p.default for name, p in rb.parameters.items()}
    params["tscore_version"] = "5.0.7958.1200"
    other = build(rb, "2007", params, project.renderer.templates_dirs, {})
    assert other.baseline_unique_id != first.baseline_unique_id


def test_a_site_check_reads_the_states_of_the_baseline_publish_makes(project: Project) -> None:
    """The CI_UniqueID a site reading reads compliance states by is the published baseline's,
    on either version, and follows the operand; `compliance_ci_unique_id` replaces it."""
    rb = runbook(project)
    params = {name: p.default for name, p in rb.parameters.items()}
    ids = {definition(project, rb, v).baseline_unique_id for v in ("2007", "2012r2")}
    assert ids == {compliance_identity(rb, params)}
    other = compliance_identity(rb, {**params, "tscore_version": "5.0.7958.1200"})
    assert other not in ids and other.startswith("ScopeId_")
    given = {**params, "compliance_ci_unique_id": "ScopeId_A/OperatingSystem_b"}
    assert compliance_identity(rb, given) == "ScopeId_A/OperatingSystem_b"
    assert compliance_identity(project.load("multicast").runbook, {}) == ""


def test_refused_without_a_publish_block_or_on_another_version(project: Project) -> None:
    rb = project.load(RUNBOOK).runbook
    with pytest.raises(UsageError, match="no publish: block"):
        definition(project, rb.model_copy(update={"publish": None}), "2007")
    with pytest.raises(UsageError, match="2007 or 2012r2 only"):
        definition(project, rb, "cb")
    with pytest.raises(UsageError, match="XML element name"):
        definition(project, rb, "2007", baseline_element="<x>")
    params = {name: p.default for name, p in rb.parameters.items()}
    params["tscore_version"] = "5.0 or later"
    with pytest.raises(UsageError, match=r"tscore_version='5\.0 or later'.*dotted numbers"):
        build(rb, "2007", params, project.renderer.templates_dirs, {})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("parameter: tscore_version", "parameter: client_dirs", "type version"),
        ("file: TSCore.dll", "file: TS*.dll", "without folder or wildcards"),
        ("operator: GreaterEquals", "operator: Bigger", "GreaterEquals"),
    ],
)
def test_a_bad_publish_block_is_a_located_error(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    root = make_root(tmp_path / "root", runbooks=[RUNBOOK])
    path = root / "runbooks" / f"{RUNBOOK}.yaml"
    number = line_of(path, old)
    edit_line(path, number, old, new)
    res = run_program(
        "publish", RUNBOOK, "--site", "P12", "--out", str(tmp_path / "d.xml"), root=root
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{RUNBOOK}.yaml:{number}:" in res.stderr and expected in res.stderr
    assert not (tmp_path / "d.xml").exists()
