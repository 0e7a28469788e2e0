"""The lab's SMS Provider judges an SDMPackageXML by the documented digest shape, not by what
cmrunbook happens to send (docs/reference/CONFIGURATION-BASELINES.md 2-3).

Each test takes the definition `invoke publish` builds, breaks one documented rule, and checks
that the lab's site refuses it with a message naming the rule.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cmrunbook.load.project import Project
from cmrunbook.render.baseline import build
from cmrunbook_lab.sims.publish import Rejected, check_baseline, check_item, parse_digest

NS_2007 = (
    "http://schemas.microsoft.com/SystemsCenterConfigurationManager/2006/03/24/DesiredConfiguration"
)


@pytest.fixture(scope="module")
def docs() -> tuple[str, str]:
    project = Project.find()
    rb = project.load("client-hotfix-check").runbook
    params = {name: p.default for name, p in rb.parameters.items()}
    d = build(rb, "2007", params, project.renderer.templates_dirs, {})
    return d.ci_xml, d.baseline_xml


def judge(xml: str, version: str = "2007") -> dict[str, Any]:
    ns, item = parse_digest(xml, version)
    return check_item(ns, item)


def test_the_definition_publish_builds_is_accepted(docs: tuple[str, str]) -> None:
    facts = judge(docs[0])
    assert facts["kind"] == "OperatingSystem"
    assert len(facts["rules"]) == 3


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (NS_2007, "urn:other", "not the DCM digest namespace"),
        ('Depth="Base"', 'Depth="OneLevel"', "a filter without wildcards needs Base"),
        ('Operation="GreaterEquals"', 'Operation="Bigger"', "RuleOperatorType"),
        ('ValidatePermissions="false"', 'ValidatePermissions="maybe"', "ValidatePermissions"),
        ("<RootComplexSetting />", "", "no RootComplexSetting"),
        ("<Filter>TSCore.dll</Filter>", "<Filter></Filter>", "empty Path or Filter"),
        (' OperandA="5.0.7958.1104"', ' OperandA="5.0.7958.1104" OperandB="6"', "Between only"),
        ("</OperatingSystem>", "</OperatingSystem><OperatingSystem/>", "exactly one"),
        ("<DesiredConfigurationDigest", "<Digest", "not well-formed"),
    ],
)
def test_a_broken_rule_of_the_digest_is_refused(
    docs: tuple[str, str], old: str, new: str, why: str
) -> None:
    assert old in docs[0]
    with pytest.raises(Rejected, match=why):
        judge(docs[0].replace(old, new, 1))


def test_a_2012r2_site_checks_the_structure_in_the_declared_namespace(
    docs: tuple[str, str],
) -> None:
    # The 2012 R2 namespace is not documented (2.2): the structure is still checked.
    assert judge(docs[0].replace(NS_2007, "urn:other"), "2012r2")["kind"] == "OperatingSystem"
    with pytest.raises(Rejected, match="RuleOperatorType"):
        judge(docs[0].replace(NS_2007, "urn:other").replace("GreaterEquals", "Bigger"), "2012r2")


def test_a_baseline_must_reference_an_item_the_site_holds(docs: tuple[str, str]) -> None:
    held = judge(docs[0])["identity"]
    ns, baseline = parse_digest(docs[1], "2007")
    empty: Any = SimpleNamespace(config_items=[])
    with pytest.raises(Rejected, match="not on this site"):
        check_baseline(ns, baseline, empty)
    holding: Any = SimpleNamespace(config_items=[{"_identity": held}])
    assert check_baseline(ns, baseline, holding)["kind"] == "Baseline"
