"""A runbook's check as a configuration item and baseline: the XML the SMS Provider stores.

The runbook's `publish:` block says what is checked (a file, the folders it may be in, the rule
on its version); this module adds what the definition format needs beyond it. Every element,
attribute and class comes from docs/reference/CONFIGURATION-BASELINES.md (its section numbers are
cited here and in templates/publish/). Values no page confirms are `Fact`s marked UNCONFIRMED:
`invoke publish --dry-run` lists them, `--set NAME=VALUE` replaces them, and a real publish asks
before it sends them.

The XML is rendered by Jinja2 with autoescaping on: names, paths and versions from a runbook are
always text in the document, never markup.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from cmrunbook.errors import UsageError
from cmrunbook.load.runbook import Runbook

#: Versions a definition can be made for: DCM on 2007, Compliance Settings on 2012 R2 (1.1).
PUBLISH_VERSIONS = ("2007", "2012r2")

#: Seeds the identities of everything cmrunbook publishes, so the same check on the same runbook
#: always gets the same LogicalNames (3.1): a second publish finds the first one.
_IDENTITY = uuid.uuid5(uuid.NAMESPACE_URL, "https://cmrunbook/publish")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
#: A file version operand: up to four dotted numbers (3.5), checked before it reaches a site.
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


@dataclass(frozen=True)
class Fact:
    """A value of the definition format that is not in the runbook.

    `confirmed_on` are the versions for which a page of the reference says it (`section`);
    on any other version it is UNCONFIRMED."""

    name: str
    values: Mapping[str, str]
    section: str
    confirmed_on: frozenset[str]
    what: str

    def confirmed(self, version: str) -> bool:
        return version in self.confirmed_on


FACTS: tuple[Fact, ...] = (
    Fact(
        "digest_namespace",
        {
            "2007": "http://schemas.microsoft.com/SystemsCenterConfigurationManager/2006/03/24/"
            "DesiredConfiguration",
            "2012r2": "http://schemas.microsoft.com/SystemsCenterConfigurationManager/2009/07/10/"
            "DesiredConfiguration",
        },
        "2.2",
        frozenset({"2007"}),
        "XML namespace of DesiredConfigurationDigest",
    ),
    Fact(
        "authoring_scope",
        {v: "ScopeId_" + str(_IDENTITY).upper() for v in PUBLISH_VERSIONS},
        "3.1",
        frozenset(),
        "AuthoringScopeId of the item and baseline (whether a site accepts a scope other than "
        "its own is not documented)",
    ),
    Fact(
        "rule_severity",
        {v: "Error" for v in PUBLISH_VERSIONS},
        "3.6",
        frozenset(),
        "Rule Severity (RuleSeverityType; its values were not found)",
    ),
    Fact(
        "baseline_element",
        {v: "Baseline" for v in PUBLISH_VERSIONS},
        "3.8",
        frozenset(),
        "element of a baseline digest",
    ),
    Fact(
        "baseline_items",
        {v: "RequiredItems" for v in PUBLISH_VERSIONS},
        "3.8",
        frozenset(),
        "element of a baseline that holds the OperatingSystemReference",
    ),
    Fact(
        "desired_config_type",
        {v: "1" for v in PUBLISH_VERSIONS},
        "4.2",
        frozenset(),
        "SMS_BaselineAssignment.DesiredConfigType (its values were not found)",
    ),
)
FACT_NAMES = tuple(f.name for f in FACTS)
#: Facts used as XML element names: an override must be a plain XML name.
_ELEMENT_FACTS = frozenset({"baseline_element", "baseline_items"})


@dataclass(frozen=True)
class Unconfirmed:
    """One UNCONFIRMED value the definition uses, as --dry-run shows it."""

    name: str
    value: str
    section: str
    what: str


@dataclass(frozen=True)
class Definition:
    """What `invoke publish` sends for one runbook to one site version."""

    runbook: str
    version: str
    name: str
    ci_xml: str
    baseline_xml: str
    ci_unique_id: str
    baseline_unique_id: str
    desired_config_type: int
    unconfirmed: tuple[Unconfirmed, ...]


def baseline_unique_id(runbook: Runbook, params: Mapping[str, Any]) -> str | None:
    """The CI_UniqueID (without a version, 3.1) of the baseline `build` makes for the runbook's
    check with these parameter values and the default scope: a site check reads its compliance
    states by it. None for a runbook that declares no publish: block."""
    if runbook.publish is None:
        return None
    scope = next(f for f in FACTS if f.name == "authoring_scope").values[PUBLISH_VERSIONS[-1]]
    return f"{scope}/{_logical('Baseline', *_check_key(runbook, params))}"


def _check_key(runbook: Runbook, params: Mapping[str, Any]) -> tuple[str, ...]:
    """What a published check's identities are derived from: the runbook, the file, the rule's
    operator and operand."""
    spec = runbook.publish
    assert spec is not None
    operand = _text(params[spec.rule.parameter])
    return (runbook.id, spec.file, spec.rule.operator, operand)


def _logical(kind: str, *parts: str) -> str:
    """A LogicalName (3.1): the kind, then a name-based UUID of what it identifies."""
    return f"{kind}_{uuid.uuid5(_IDENTITY, '/'.join(parts))}"


def _text(value: Any) -> str:
    """One line of text: attribute values are kept on one line, so the document is one line."""
    return " ".join(str(value).split())


def fact_values(version: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """Each fact's value for `version`, `overrides` (from --set) replacing the defaults."""
    unknown = sorted(set(overrides) - set(FACT_NAMES))
    if unknown:
        raise UsageError(f"--set {unknown[0]}: not a publish value; known: {', '.join(FACT_NAMES)}")
    values = {f.name: overrides.get(f.name, f.values[version]) for f in FACTS}
    for name in _ELEMENT_FACTS:
        if not _XML_NAME.match(values[name]):
            raise UsageError(f"--set {name}={values[name]!r}: expected an XML element name")
    if not values["desired_config_type"].isdigit():
        raise UsageError("--set desired_config_type: expected a number")
    return values


def build(
    runbook: Runbook,
    version: str,
    params: Mapping[str, Any],
    templates_dirs: Sequence[Path],
    overrides: Mapping[str, str],
) -> Definition:
    """The definition of `runbook`'s check for a site of `version`.

    `params` are the runbook's parameter values (defaults with --set applied): the rule's
    operand is one of them. Raises UsageError when the runbook cannot be published there."""
    spec = runbook.publish
    if spec is None:
        raise UsageError(f"runbook {runbook.id} declares no publish: block; it cannot be published")
    if version not in PUBLISH_VERSIONS:
        raise UsageError(
            f"site version {version}: a baseline can be published to "
            f"{' or '.join(PUBLISH_VERSIONS)} only"
        )
    values = fact_values(version, overrides)
    operand = _text(params[spec.rule.parameter])
    if not _VERSION.match(operand):
        raise UsageError(
            f"{spec.rule.parameter}={operand!r}: the rule compares file versions; expected "
            "dotted numbers such as 5.0.7958.1104"
        )
    key = _check_key(runbook, params)
    ci = {"logical_name": _logical("OperatingSystem", *key), "version": 1}
    baseline = {"logical_name": _logical("Baseline", *key), "version": 1}
    parts = [
        {
            "logical_name": _logical("File", *key, folder.path),
            "rule_name": _logical("Rule", *key, folder.path),
            "path": _text(folder.path),
            "only_64bit": folder.only_64bit,
        }
        for folder in spec.folders
    ]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in templates_dirs]),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    context = {
        "namespace": values["digest_namespace"],
        "scope": values["authoring_scope"],
        "severity": values["rule_severity"],
        "baseline_element": values["baseline_element"],
        "baseline_items": values["baseline_items"],
        "name": _text(spec.name),
        "description": _text(spec.description),
        "file": _text(spec.file),
        "parts": parts,
        "rule": {
            "property": spec.rule.property,
            "operator": spec.rule.operator,
            "operand": operand,
        },
        "platform": spec.platform.model_dump(),
        "ci": ci,
        "baseline": baseline,
    }

    def render(name: str) -> str:
        text = env.get_template(name).render(context)
        return "".join(line.strip() for line in text.splitlines())

    scope = values["authoring_scope"]
    return Definition(
        runbook=runbook.id,
        version=version,
        name=_text(spec.name),
        ci_xml=render("publish/ci.xml.j2"),
        baseline_xml=render("publish/baseline.xml.j2"),
        ci_unique_id=f"{scope}/{ci['logical_name']}",
        baseline_unique_id=f"{scope}/{baseline['logical_name']}",
        desired_config_type=int(values["desired_config_type"]),
        unconfirmed=tuple(
            Unconfirmed(f.name, values[f.name], f.section, f.what)
            for f in FACTS
            if f.name not in overrides and not f.confirmed(version)
        ),
    )
