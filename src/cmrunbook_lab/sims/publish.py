"""`invoke publish` in the lab (templates/publish/): the SMS Provider storing a configuration
item, a baseline and a baseline assignment, as docs/reference/CONFIGURATION-BASELINES.md says.

The site does not trust the client: it parses each SDMPackageXML it is given and checks it
against the documented digest shape (section numbers below), stores what it accepts as
SMS_ConfigurationItem rows, refuses a second item with an identity it already holds (3.1: the
identity is AuthoringScopeId + LogicalName + Version), and refuses an assignment whose baseline
or collection it does not have. The 2012 R2 digest namespace is not documented (2.2): a 2012 R2
site checks the structure in whatever namespace the document declares; a 2007 site requires the
documented one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from cmrunbook_lab import wmi
from cmrunbook_lab.scripts import Context, Operations, PSError, Unrecognized
from cmrunbook_lab.sims.provider import provider_site
from cmrunbook_lab.site import SiteState

OPERATIONS = Operations()

NAMESPACE_2007 = (
    "http://schemas.microsoft.com/SystemsCenterConfigurationManager/2006/03/24/DesiredConfiguration"
)
#: RuleOperatorType (3.6).
OPERATORS = frozenset(
    [
        "Equals",
        "NotEquals",
        "OneOf",
        "AllOf",
        "NoneOf",
        "GreaterThan",
        "LessThan",
        "GreaterEquals",
        "LessEquals",
        "Between",
        "BeginsWith",
        "NotBeginsWith",
        "EndsWith",
        "NotEndsWith",
        "Contains",
        "NotContains",
        "Matches",
        "NotMatches",
        "Other",
    ]
)
DEPTHS = frozenset({"Base", "OneLevel", "Subtree"})  # SearchDepthType (3.4)
BOOLEANS = frozenset({"true", "false", "1", "0"})
#: First CI_ID and AssignmentID the lab hands out (the values are the site's, not documented).
FIRST_CI_ID = 16777217
FIRST_ASSIGNMENT_ID = 1

_ASSIGNMENT = "[wmiclass]('\\\\.\\' + $CmrbNamespace + ':SMS_BaselineAssignment')"


class Rejected(PSError):
    """The provider refused an SDMPackageXML."""

    def __init__(self, why: str) -> None:
        super().__init__(f"The SMS Provider rejected the SDMPackageXML: {why}")


def _local(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag."""
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _identity(item: ET.Element, what: str) -> tuple[str, str, str]:
    """AuthoringScopeId, LogicalName, Version of an item or reference (3.1, 3.7)."""
    values = tuple(item.get(a, "") for a in ("AuthoringScopeId", "LogicalName", "Version"))
    scope, logical, version = values
    if not scope or not logical or not version.isdigit():
        raise Rejected(f"{what} needs AuthoringScopeId, LogicalName and a numeric Version")
    return scope, logical, version


def parse_digest(text: str, site_version: str) -> tuple[str, ET.Element]:
    """The digest's namespace and its one item element (2.1, 2.2)."""
    try:
        root = ET.fromstring(text.encode("utf-16") if "utf-16" in text[:60] else text)
    except ET.ParseError as exc:
        raise Rejected(f"not well-formed XML ({exc})") from None
    ns, name = _local(root.tag)
    if name != "DesiredConfigurationDigest":
        raise Rejected(f"the root element is {name}, not DesiredConfigurationDigest")
    if site_version == "2007" and ns != NAMESPACE_2007:
        raise Rejected(f"the digest's namespace {ns!r} is not the DCM digest namespace")
    items = [child for child in root if _local(child.tag)[0] == ns]
    if len(items) != 1:
        raise Rejected(f"a digest holds exactly one configuration item, this one {len(items)}")
    return ns, items[0]


def _child(parent: ET.Element, ns: str, name: str, what: str) -> ET.Element:
    found = parent.find(f"{{{ns}}}{name}")
    if found is None:
        raise Rejected(f"{what} has no {name} element")
    return found


def check_item(ns: str, item: ET.Element) -> dict[str, Any]:
    """An operating system item with File parts and rules (3.2-3.6); its stored facts."""
    kind = _local(item.tag)[1]
    if kind != "OperatingSystem":
        raise Rejected(f"the lab's site stores operating system items only, not {kind}")
    scope, logical, version = _identity(item, kind)
    display = _child(_child(item, ns, "Annotation", kind), ns, "DisplayName", "Annotation")
    _child(_child(item, ns, "Settings", kind), ns, "RootComplexSetting", "Settings")
    _child(item, ns, "OperatingSystemDiscoveryInfo", kind)
    files = list(_child(item, ns, "Parts", kind).iter(f"{{{ns}}}File"))
    if not files:
        raise Rejected("the item has no File part")
    rules: list[dict[str, str]] = []
    for part in files:
        part_name = part.get("LogicalName") or ""
        if not part_name:
            raise Rejected("a File part has no LogicalName")
        if (part.get("ValidatePermissions") or "").lower() not in BOOLEANS:
            raise Rejected(f"File {part_name}: ValidatePermissions (required) is not a boolean")
        if (part.get("Is64Bit") or "false").lower() not in BOOLEANS:
            raise Rejected(f"File {part_name}: Is64Bit is not a boolean")
        depth = part.get("Depth") or "Base"
        path = (_child(part, ns, "Path", f"File {part_name}").text or "").strip()
        name = (_child(part, ns, "Filter", f"File {part_name}").text or "").strip()
        if not path or not name:
            raise Rejected(f"File {part_name}: empty Path or Filter")
        if depth not in DEPTHS or (depth != "Base" and not re.search(r"[*?]", name)):
            raise Rejected(
                f"File {part_name}: Depth {depth} (a filter without wildcards needs Base)"
            )
        props = _child(part, ns, "PropertyRules", f"File {part_name}")
        for prop in props:
            for rule in prop:
                if _local(rule.tag)[1] != "Rule":
                    raise Rejected(f"File {part_name}: {_local(rule.tag)[1]} is not a Rule")
                op = rule.get("Operation") or ""
                if op not in OPERATORS or not rule.get("OperandA") or not rule.get("Severity"):
                    raise Rejected(
                        f"File {part_name}: a Rule needs a RuleOperatorType Operation, "
                        "OperandA and Severity"
                    )
                if rule.get("OperandB") is not None and op != "Between":
                    raise Rejected(f"File {part_name}: OperandB is for Between only")
                if not rule.get("LogicalName"):
                    raise Rejected(f"File {part_name}: a Rule has no LogicalName")
                rules.append(
                    {
                        "path": path,
                        "file": name,
                        "property": _local(prop.tag)[1],
                        "operation": op,
                        "operand": rule.get("OperandA") or "",
                        "is64bit": (part.get("Is64Bit") or "false").lower(),
                    }
                )
    if not rules:
        raise Rejected("the item has no rule")
    return {
        "identity": (scope, logical, version),
        "name": display.get("Text") or "",
        "kind": kind,
        "rules": rules,
    }


def check_baseline(ns: str, item: ET.Element, site: SiteState) -> dict[str, Any]:
    """A baseline: identity, and OperatingSystemReferences to items the site holds (3.7)."""
    kind = _local(item.tag)[1]
    scope, logical, version = _identity(item, kind)
    display = _child(_child(item, ns, "Annotation", kind), ns, "DisplayName", "Annotation")
    refs = list(item.iter(f"{{{ns}}}OperatingSystemReference"))
    if not refs:
        raise Rejected("the baseline references no operating system item")
    held = {r["_identity"] for r in site.config_items}
    for ref in refs:
        if _identity(ref, "OperatingSystemReference") not in held:
            raise Rejected(f"the baseline references {ref.get('LogicalName')}, not on this site")
    return {"identity": (scope, logical, version), "name": display.get("Text") or "", "kind": kind}


def store_item(ctx: Context, site: SiteState, xml: str, facts: dict[str, Any]) -> int:
    """Add the item as an SMS_ConfigurationItem row; its CI_ID. Refuses a held identity."""
    if any(r["_identity"] == facts["identity"] for r in site.config_items):
        scope, logical, version = facts["identity"]
        raise PSError(f"A configuration item {scope}/{logical} version {version} already exists")
    ci_id = FIRST_CI_ID + len(site.config_items)
    scope, logical, version = facts["identity"]
    site.config_items.append(
        {
            "CI_ID": ci_id,
            "CI_UniqueID": f"{scope}/{logical}",
            "CIVersion": int(version),
            "SDMPackageXML": xml,
            "LocalizedDisplayName": facts["name"],
            "IsLatest": True,
            "IsUserDefined": True,
            "_identity": facts["identity"],
            "_kind": facts["kind"],
            "_rules": facts.get("rules", []),
        }
    )
    ctx.lab.record_change(
        ctx.host.name, "configuration item created", ci_id=ci_id, kind=facts["kind"]
    )
    return ci_id


@OPERATIONS.add(
    "publish/publish",
    lambda s: s.has("$ciXml = ", "$baselineXml = ", _ASSIGNMENT),
)
def publish(ctx: Context) -> None:
    s, lab = ctx.script, ctx.lab
    site = provider_site(ctx)
    code, version = site.code, site.version
    collection_id = str(s.input("collectionId"))
    if not s.has("if ($collectionId -notmatch '^[A-Za-z0-9]{8}$') {"):
        raise Unrecognized("the collection ID is not checked before it reaches WQL")
    if not re.fullmatch(r"[A-Za-z0-9]{8}", collection_id):
        raise PSError(f"Not a ConfigMgr collection ID: {collection_id}")
    for var, cls in (
        ("item", "SMS_ConfigurationItem"),
        ("baseline", "SMS_ConfigurationItem"),
        ("assignment", "SMS_BaselineAssignment"),
    ):
        wmi.check_reads(s.body, var, cls, version)
    env = {"$collectionId": collection_id, "$baselineUniqueId": s.input("baselineUniqueId")}
    if not wmi.run_call(lab, site, s, wmi.call_after(s, "$collection = @("), env):
        raise PSError(f"No collection {collection_id} in site {code}; nothing created")
    existing = wmi.run_call(lab, site, s, wmi.call_after(s, "$existing = @("), env)
    if existing:
        ci_id = int(existing[0]["CI_ID"])
        ctx.result.ok = False
        ctx.result.data = {"existing": ci_id, "ci": None, "baseline": None, "assignment": None}
        ctx.result.message = (
            f"This check is already published on site {code} as baseline CI_ID {ci_id}; "
            "nothing created"
        )
        return
    created: dict[str, Any] = {"existing": None, "ci": None, "baseline": None, "assignment": None}
    ctx.result.data = created
    if not s.has(
        "$item.SDMPackageXML = $ciXml",
        "$itemPath = $item.Put()",
        "$baseline.SDMPackageXML = $baselineXml",
        "$baselinePath = $baseline.Put()",
    ):
        raise Unrecognized("the items are not put as the lab simulates")
    ci_xml, baseline_xml = str(s.input("ciXml")), str(s.input("baselineXml"))
    ns, item = parse_digest(ci_xml, version)
    created["ci"] = store_item(ctx, site, ci_xml, check_item(ns, item))
    ctx.result.changed = True
    ns, item = parse_digest(baseline_xml, version)
    created["baseline"] = store_item(ctx, site, baseline_xml, check_baseline(ns, item, site))
    if not s.has(
        "$assignment.AssignedCIs = @($created.baseline)",
        "$assignment.TargetCollectionID = $collectionId",
        "$assignment.AssignmentName = $assignmentName",
        "$assignment.DesiredConfigType = $desiredConfigType",
        "$assignment.ApplyToSubTargets = $false",
        "$assignmentPath = $assignment.Put()",
    ):
        raise Unrecognized("the assignment is not made as the lab simulates")
    assignment_id = FIRST_ASSIGNMENT_ID + len(site.baseline_assignments)
    site.baseline_assignments.append(
        {
            "AssignmentID": assignment_id,
            "AssignmentName": str(s.input("assignmentName")),
            "AssignedCIs": [created["baseline"]],
            "TargetCollectionID": collection_id.upper(),
            "ApplyToSubTargets": False,
            "DesiredConfigType": int(s.input("desiredConfigType")),
            "StartTime": lab.clock.wall().strftime("%Y%m%d%H%M%S.000000+000"),
        }
    )
    lab.record_change(
        ctx.host.name,
        "baseline assigned",
        assignment_id=assignment_id,
        baseline=created["baseline"],
        collection=collection_id.upper(),
    )
    created["assignment"] = assignment_id
    ctx.result.message = (
        f"Created configuration item CI_ID {created['ci']}, baseline CI_ID {created['baseline']}, "
        f"assignment {assignment_id} to collection {collection_id}"
    )
