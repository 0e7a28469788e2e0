"""`invoke publish RUNBOOK --site CODE --collection ID`: a runbook's check as a baseline.

The check a runbook declares in its `publish:` block becomes a configuration item and a baseline
on the site's SMS Provider, assigned to one collection, so the clients evaluate it themselves
(Desired Configuration Management on 2007, Compliance Settings on 2012 R2). `--dry-run` shows
the definition and the WMI calls, `--out FILE` writes the definition for an import by hand;
neither contacts a host. A real publish creates objects on the site: it needs --yes or a yes at
the prompt, and says first which values no documentation confirms.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from invoke.exceptions import Exit

from cmrunbook.cli.common import EXIT_FAILED, cli_task
from cmrunbook.errors import UsageError
from cmrunbook.text import printable

if TYPE_CHECKING:
    from cmrunbook.load.inventory import Inventory
    from cmrunbook.load.project import Project
    from cmrunbook.render.baseline import Definition

TEMPLATE = "publish/publish.ps1.j2"
DEADLINE = 300.0  # seconds for the script: a query, three Put() calls

PUBLISH_HELP = {
    "runbook": "Runbook id whose check is published (it declares a publish: block).",
    "site": "Site code (the inventory's sites:); its version picks the definition format.",
    "collection": "Collection ID the baseline is assigned to (8 letters and digits).",
    "inventory": "Inventory file (default: inventory/example.yaml or CMRUNBOOK_INVENTORY).",
    "dry_run": "Show the definition, the WMI calls and the UNCONFIRMED values; touch nothing.",
    "out": "Write the importable definition (UTF-16) to FILE, the baseline to FILE-baseline; "
    "contact no host.",
    "set": "NAME=VALUE: a runbook parameter (e.g. tscore_version=5.0.7958.1104) or a publish "
    "value that --dry-run lists as UNCONFIRMED.",
    "yes": "Publish without asking (it creates a configuration item, baseline and assignment).",
    "non_interactive": "Never prompt: without --yes, refuse.",
}

#: The provider calls the publish script makes, in order, as --dry-run lists them
#: (templates/publish/publish.ps1.j2; CONFIGURATION-BASELINES.md 4).
CALLS = (
    "Get-WmiObject -Query \"SELECT * FROM SMS_Collection WHERE CollectionID='{collection}'\""
    "   (none: stop, nothing created)",
    'Get-WmiObject -Query "SELECT * FROM SMS_ConfigurationItem WHERE CI_UniqueID LIKE '
    "'{baseline_unique_id}%'\"   (found: already published, stop, nothing created)",
    "[wmiclass]SMS_ConfigurationItem CreateInstance(); SDMPackageXML = <configuration item>; Put()",
    "[wmiclass]SMS_ConfigurationItem CreateInstance(); SDMPackageXML = <baseline>; Put()",
    "[wmiclass]SMS_BaselineAssignment CreateInstance(); AssignmentName = '{assignment}'; "
    "AssignedCIs = @(<baseline CI_ID>); TargetCollectionID = '{collection}'; "
    "ApplyToSubTargets = $false; DesiredConfigType = {desired}; StartTime = <now>; Put()",
)


@cli_task(positional=["runbook"], iterable=["set"], help=PUBLISH_HELP)
def publish(
    c: Any,
    runbook: str,
    site: str | None = None,
    collection: str | None = None,
    inventory: str | None = None,
    dry_run: bool = False,
    out: str | None = None,
    set: list[str] | None = None,
    yes: bool = False,
    non_interactive: bool = False,
) -> None:
    """Publish a runbook's check as a configuration baseline assigned to a collection."""
    from cmrunbook.cli.common import setup
    from cmrunbook.plan.planner import coerce
    from cmrunbook.render.baseline import FACT_NAMES, build

    if not site:
        raise UsageError("publish needs --site CODE (and --collection ID unless --out)")
    site = site.upper()
    if out is None and not collection:
        raise UsageError("publish needs --collection ID (or --out FILE to write the definition)")
    if collection is not None and not re.fullmatch(r"[A-Za-z0-9]{8}", collection):
        raise UsageError(f"--collection {collection!r}: a collection ID is 8 letters and digits")
    project, loaded, inv = setup(runbook, inventory)
    rb = loaded.runbook
    params = {name: p.default for name, p in rb.parameters.items()}
    facts: dict[str, str] = {}
    for pair in set or []:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--set expects name=value, got {pair!r}")
        if name in rb.parameters:
            params[name] = coerce(name, rb.parameters[name], value, "--set")
        elif name in FACT_NAMES:
            facts[name] = value
        else:
            known = ", ".join([*sorted(rb.parameters), *FACT_NAMES])
            raise UsageError(
                f"--set {name}: not a parameter of {rb.id} nor a publish value; known: {known}"
            )
    site_spec = inv.file.sites.get(site)
    if site_spec is None:
        raise UsageError(f"--site {site}: no such site in {inv.path}")
    definition = build(rb, site_spec.version, params, project.renderer.templates_dirs, facts)
    provider = site_spec.provider
    if out is not None:
        for path in write_definition(Path(out), definition):
            print(f"wrote {path}")
        _say_unconfirmed(definition, sys.stdout)
        return
    assert collection is not None
    collection = collection.upper()
    assignment = f"{definition.name} -> {collection}"
    if dry_run:
        show(definition, provider, site, collection, assignment)
        return
    _say_unconfirmed(definition, sys.stderr)
    if not yes:
        _confirm(definition.name, site, collection, interactive=not non_interactive)
    data = _run(
        project,
        inv,
        provider,
        site,
        collection,
        assignment,
        definition,
        interactive=not non_interactive,
    )
    print(
        f"Published {rb.id} to site {site}: configuration item CI_ID {data['ci']}, baseline "
        f"CI_ID {data['baseline']}, assignment {data['assignment']} to collection {collection}"
    )


def write_definition(path: Path, definition: Definition) -> list[Path]:
    """The two digests as files an administrator imports: UTF-16, as the SDK's export writes
    SDMPackageXML (CONFIGURATION-BASELINES.md 4.5). The baseline goes next to FILE."""
    baseline = path.with_name(f"{path.stem}-baseline{path.suffix or '.xml'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(definition.ci_xml, encoding="utf-16")
    baseline.write_text(definition.baseline_xml, encoding="utf-16")
    return [path, baseline]


def show(
    definition: Definition, provider: str, site: str, collection: str, assignment: str
) -> None:
    """--dry-run: where it would go, the two documents, the calls, the UNCONFIRMED values."""
    print(
        f"DRY RUN: publish {definition.runbook} to site {site} ({definition.version}) through "
        f"the SMS Provider on {provider}; nothing is changed, no host is contacted."
    )
    print(f"\nConfiguration item {definition.ci_unique_id}:\n{printable(definition.ci_xml)}")
    print(f"\nBaseline {definition.baseline_unique_id}:\n{printable(definition.baseline_xml)}")
    print(f"\nWMI calls in root\\sms\\site_{site} on {provider}:")
    values = {
        "collection": collection,
        "baseline_unique_id": definition.baseline_unique_id,
        "assignment": assignment,
        "desired": definition.desired_config_type,
    }
    for number, call in enumerate(CALLS, 1):
        print(f"  {number}. {printable(call.format(**values))}")
    _say_unconfirmed(definition, sys.stdout)


def _say_unconfirmed(definition: Definition, stream: TextIO) -> None:
    if not definition.unconfirmed:
        return
    print(
        f"\n{len(definition.unconfirmed)} value(s) UNCONFIRMED for {definition.version} "
        "(no documentation found; docs/reference/CONFIGURATION-BASELINES.md; "
        "replace with --set NAME=VALUE):",
        file=stream,
    )
    for u in definition.unconfirmed:
        print(
            f"  UNCONFIRMED {u.name} = {printable(u.value)}   ({u.what}; section {u.section})",
            file=stream,
        )


def _confirm(name: str, site: str, collection: str, *, interactive: bool) -> None:
    """A real publish changes the site: a person says yes, or --yes was given."""
    from cmrunbook.run.console import TextConsole

    question = (
        f"Create configuration item and baseline '{name}' on site {site} and assign it "
        f"to collection {collection}?"
    )
    if not interactive or not TextConsole(sys.stderr).confirm(question):
        raise UsageError(
            f"publishing changes site {site}: not confirmed (pass --yes); nothing created"
        )


def _run(
    project: Project,
    inv: Inventory,
    provider: str,
    site: str,
    collection: str,
    assignment: str,
    definition: Definition,
    *,
    interactive: bool,
) -> dict[str, Any]:
    """Send the publish script to the provider; its data (the created IDs), or exit 1."""
    from cmrunbook.load.inventory import insecure_warnings
    from cmrunbook.remote import TransportError
    from cmrunbook.render.result import parse_result
    from cmrunbook.run.connect import credentials_for, open_host

    script = project.renderer.script(
        TEMPLATE,
        {
            "site": {"code": site},
            "params": {
                "collection_id": collection,
                "ci_xml": definition.ci_xml,
                "baseline_xml": definition.baseline_xml,
                "baseline_unique_id": definition.baseline_unique_id,
                "assignment_name": assignment,
                "desired_config_type": definition.desired_config_type,
            },
        },
        header=f"cmrunbook publish {definition.runbook} | {site} on {provider}",
    )
    for line in insecure_warnings(inv, [provider]):
        print(f"warning: {printable(line)}", file=sys.stderr)
    creds = credentials_for(inv, interactive=interactive)
    try:
        with open_host(inv.hosts[provider], inv, creds) as remote:
            reply = remote.run(script, deadline=DEADLINE)
    except TransportError as exc:
        print(f"error: cannot reach the SMS Provider: {printable(str(exc))}", file=sys.stderr)
        raise Exit(code=EXIT_FAILED) from None
    result = parse_result(reply.stdout)
    data = result.data if result and isinstance(result.data, dict) else {}
    if result is None or not result.ok:
        why = result.message if result else (reply.stderr.strip() or f"exit {reply.exit_code}")
        print(f"error: publish to site {site} on {provider}: {printable(why)}", file=sys.stderr)
        made = [f"{k} {data[k]}" for k in ("ci", "baseline", "assignment") if data.get(k)]
        if made:
            print(f"error: created before the failure: {', '.join(made)}", file=sys.stderr)
        raise Exit(code=EXIT_FAILED)
    return data
