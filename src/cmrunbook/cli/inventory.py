"""`invoke inventory from-site`: an inventory written from what the site's SMS Provider knows.

One read-only script (templates/inventory/from_site.ps1.j2) runs on the provider over WinRM and
returns the site's role entries, site systems and (optionally) one collection's members; this
module maps them to inventory hosts and roles, validates the result with the project's own
loader and only then writes it. What the provider's answer does not settle is never guessed:
a role with no inventory meaning is a warning (the host is kept without it), a host whose OS or
architecture is unknown stops the command unless `--os HOST=VERSION/ARCH` states it.

The classes, properties and role names come from shared/kb/SMS-PROVIDER.md (sections 3.2, 4,
5.2, 5.5, 7, 9); the template cites each one.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from invoke.exceptions import Exit

from cmrunbook.cli.common import EXIT_FAILED, cli_task
from cmrunbook.errors import UsageError
from cmrunbook.text import printable

TEMPLATE = "inventory/from_site.ps1.j2"
#: Seconds allowed for the provider script (a few WMI queries).
DEADLINE = 300.0

DP_ROLE = "sms distribution point"  # 4, 3.1 [ms815915]
PXE_ROLE = "sms pxe service point"  # 4, 5.4 [cc144681]; case differs in cc143733 (12.5)
MULTICAST_ROLE = "sms multicast service point"  # 4 [practitioner; mt745740 ServerRoleType]
SITE_SYSTEM_ROLE = "sms site system"  # 4 [Get-CMSiteRole docs]: every site system has it

#: `Microsoft Windows NT <Workstation|Server> <major.minor>` (SMS_R_System, 7.1 practitioner
#: values) to the inventory's Windows version. NT versions: Microsoft's "Operating System
#: Version" table (https://learn.microsoft.com/windows/win32/sysinfo/operating-system-version).
#: Server 10.0 is 2016, 2019 or 2022 alike: left undetermined.
NT_VERSIONS = {
    ("workstation", "4.0"): "nt4",
    ("server", "4.0"): "nt4",
    ("workstation", "5.0"): "2000",
    ("server", "5.0"): "2000",
    ("workstation", "5.1"): "xp",
    ("server", "5.2"): "2003",
    ("workstation", "6.0"): "vista",
    ("server", "6.0"): "2008",
    ("workstation", "6.1"): "7",
    ("server", "6.1"): "2008r2",
    ("workstation", "6.2"): "8",
    ("server", "6.2"): "2012",
    ("workstation", "6.3"): "8.1",
    ("server", "6.3"): "2012r2",
    ("workstation", "10.0"): "10",
}
_OS_TEXT = re.compile(r"^Microsoft Windows NT (Workstation|Server) (\d+\.\d+)\b", re.IGNORECASE)
#: SMS_G_System_SYSTEM.SystemType (7.4, cc145495) in Win32_ComputerSystem's values
#: (https://learn.microsoft.com/windows/win32/cimwin32prov/win32-computersystem): UNCONFIRMED
#: that the site's inventory keeps them unchanged; any other value is left undetermined.
SYSTEM_TYPES = {"x86-based pc": "x86", "x64-based pc": "x64"}
_NAL = re.compile(r'MSWNET:\["SMS_SITE=(?P<site>[^"]*)"\]\\\\(?P<server>[^\\]+)\\(?P<share>[^\\]*)')

FROM_SITE_HELP = {
    "action": "from-site: write an inventory from the site's SMS Provider.",
    "provider": "Inventory name of the site server with the SMS Provider (in --inventory).",
    "site": "Site code, e.g. C07.",
    "out": "Inventory file to write (written only when it validates).",
    "inventory": "Inventory with the provider host: its WinRM settings and credentials source "
    "are used, and copied into the written file (default: inventory/example.yaml).",
    "collection": "Also write the members of this collection (8 letters and digits) as clients.",
    "os": "HOST=VERSION/ARCH for a host whose OS the site does not tell (repeatable).",
    "site_version": "The ConfigMgr version (2007, 2012r2, ...) when the site does not tell it.",
    "non_interactive": "Never prompt for credentials.",
}


@dataclass
class Found:
    """One host as the provider's answer describes it."""

    name: str
    address: str
    roles: set[str] = field(default_factory=set)
    multicast: bool = False
    pxe: bool = False


@dataclass
class SiteAnswer:
    """The inventory data built from the provider's answer, and what it could not settle."""

    data: dict[str, Any]
    warnings: list[str]
    undetermined: list[str]


@cli_task(positional=["action"], iterable=["os"], help=FROM_SITE_HELP)
def inventory(
    c: Any,
    action: str,
    provider: str | None = None,
    site: str | None = None,
    out: str | None = None,
    inventory: str | None = None,
    collection: str | None = None,
    os: list[str] | None = None,
    site_version: str | None = None,
    non_interactive: bool = False,
) -> None:
    """Inventory tools: `invoke inventory from-site --provider HOST --site CODE --out FILE`."""
    if action != "from-site":
        raise UsageError(f"unknown inventory action {action!r}; known: from-site")
    if not provider or not site or not out:
        raise UsageError("inventory from-site needs --provider, --site and --out")
    if not re.fullmatch(r"[A-Za-z0-9]{3}", site):
        raise UsageError(f"--site {site!r}: a site code is 3 letters and digits")
    if collection is not None and not re.fullmatch(r"[A-Za-z0-9]{8}", collection):
        raise UsageError(f"--collection {collection!r}: a collection ID is 8 letters and digits")
    stated = _stated_os(os or [])
    if site_version is not None:
        from cmrunbook.load.runbook import ConfigMgrVersion

        if site_version not in get_args(ConfigMgrVersion):
            known = ", ".join(get_args(ConfigMgrVersion))
            raise UsageError(f"--site-version {site_version!r}: expected one of {known}")
    seed, answer = query_site(
        provider, site.upper(), inventory, collection, interactive=not non_interactive
    )
    built = build_inventory(answer, seed, provider, stated, site_version)
    for line in built.warnings:
        print(f"warning: {printable(line)}", file=sys.stderr)
    if built.undetermined:
        for line in built.undetermined:
            print(f"error: {printable(line)}", file=sys.stderr)
        raise UsageError(
            f"{len(built.undetermined)} fact(s) the site does not tell; state them with --os "
            f"HOST=VERSION/ARCH (e.g. --os cm07-dp01=2008r2/x64) or --site-version; {out} not "
            "written"
        )
    path = write_checked(Path(out), built, provider, site.upper())
    hosts = built.data["hosts"]
    print(
        f"{path}: {len(hosts)} host(s) of site {site.upper()} from the SMS Provider on {provider}"
    )


def _stated_os(values: list[str]) -> dict[str, tuple[str, str]]:
    """`--os HOST=VERSION/ARCH` options as {host: (version, arch)}, checked against the
    inventory's Windows versions so a typo is named here, not in the written file."""
    from cmrunbook.load.inventory import WindowsVersion

    known = get_args(WindowsVersion)
    out: dict[str, tuple[str, str]] = {}
    for value in values:
        m = re.fullmatch(r"([^=\s]+)=([0-9a-z.]+)/(x86|x64)", value.strip())
        if m is None or m[2] not in known:
            raise UsageError(
                f"--os {value!r}: expected HOST=VERSION/ARCH with VERSION one of "
                f"{', '.join(known)}, e.g. cm07-dp01=2008r2/x64"
            )
        out[m[1].lower()] = (m[2], m[3])
    return out


def query_site(
    provider: str, site: str, inventory: str | None, collection: str | None, *, interactive: bool
) -> tuple[Any, dict[str, Any]]:
    """Run the from-site script on the provider; (the seed inventory, the script's data).

    A provider that cannot be reached or a script that fails ends the command (exit 1), with
    nothing written."""
    from cmrunbook.load.inventory import insecure_warnings, load_inventory
    from cmrunbook.load.project import Project
    from cmrunbook.remote import TransportError
    from cmrunbook.render.result import parse_result
    from cmrunbook.run.connect import credentials_for, open_host

    project = Project.find()
    seed = load_inventory(project.inventory(inventory))
    host = seed.hosts.get(provider)
    if host is None:
        raise UsageError(f"--provider {provider}: no such host in {seed.path}")
    script = project.renderer.script(
        TEMPLATE,
        {"site": {"code": site}, "params": {"collection_id": collection}},
        header=f"cmrunbook inventory from-site | {site} on {provider}",
    )
    # It logs on as a run does: the same insecure settings are said first.
    for line in insecure_warnings(seed, [provider]):
        print(f"warning: {printable(line)}", file=sys.stderr)
    creds = credentials_for(seed, interactive=interactive)
    try:
        with open_host(host, seed, creds) as remote:
            reply = remote.run(script, deadline=DEADLINE)
    except TransportError as exc:
        print(f"error: cannot reach the SMS Provider: {printable(str(exc))}", file=sys.stderr)
        raise Exit(code=EXIT_FAILED) from None
    result = parse_result(reply.stdout)
    if result is None or not result.ok or not isinstance(result.data, dict):
        why = result.message if result else (reply.stderr.strip() or f"exit {reply.exit_code}")
        print(
            f"error: the SMS Provider on {provider} did not answer for site {site}: "
            f"{printable(why)}",
            file=sys.stderr,
        )
        raise Exit(code=EXIT_FAILED)
    return seed, result.data


def _nal(nal: str) -> tuple[str, str, str] | None:
    """(site, server, share) of a NAL path (3.2), None when it is not one."""
    m = _NAL.search(nal)
    return (m["site"], m["server"], m["share"]) if m else None


def _key(server: str) -> str:
    """The inventory name of a site system: its NetBIOS name (first label), lower case."""
    return server.split(".")[0].lower()


def build_inventory(
    answer: dict[str, Any],
    seed: Any,
    provider: str,
    stated: dict[str, tuple[str, str]],
    site_version: str | None = None,
) -> SiteAnswer:
    """Inventory data from the script's answer; warnings and what it could not settle beside
    it. `stated` and `site_version` are what the user said with --os and --site-version."""
    site = str(answer["site"]).upper()
    warnings: list[str] = []
    hosts: dict[str, Found] = {}
    machine = str(answer["provider"]["machine"])
    server = hosts.setdefault(_key(machine), Found(_key(machine), machine))
    server.roles.add("site_server")

    def on_site(kind: str, role: str, row_site: str, nal: str) -> tuple[str, str, str] | None:
        parsed = _nal(nal)
        if parsed is None:
            warnings.append(f"{kind} {role!r}: NAL path {nal!r} not understood; ignored")
            return None
        if row_site.upper() != site or parsed[0].upper() != site:
            warnings.append(
                f"{kind} {role!r} on {parsed[1]} belongs to site {parsed[0] or row_site}, "
                f"not {site}: not included"
            )
            return None
        return parsed

    for r in answer["resources"]:
        role = str(r["role"])
        parsed = on_site("site system role", role, str(r["site"]), str(r["nal"]))
        if parsed is None:
            continue
        _, name, share = parsed
        found = hosts.setdefault(_key(name), Found(_key(name), str(r["remote"]) or name))
        if role.lower() == DP_ROLE and not share:
            found.roles.add("distribution_point")
        elif role.lower() == DP_ROLE and share.upper() == "SMSPXEIMAGES$":
            continue  # the PXE service point's boot-image share (3.2, KB947683): not a host
        elif role.lower() == PXE_ROLE:
            found.pxe = True
        elif role.lower() == MULTICAST_ROLE:
            found.multicast = True
        elif role.lower() != SITE_SYSTEM_ROLE:
            warnings.append(
                f"{found.name}: role {role!r} has no inventory meaning; host kept without it"
            )
    for r in answer["roles"]:
        role = str(r["role"])
        parsed = on_site("site control file role", role, str(r["site"]), str(r["nal"]))
        if parsed is None:
            continue
        found = hosts.setdefault(_key(parsed[1]), Found(_key(parsed[1]), parsed[1]))
        props = r.get("props") or {}
        if role.lower() == PXE_ROLE:
            found.pxe = True
        elif role.lower() == MULTICAST_ROLE:
            found.multicast = True
        elif role.lower() == DP_ROLE:
            # 2012 R2: PXE and multicast are properties of the DP's entry (5.5; IsMulticast is
            # practitioner-sourced).
            found.pxe = found.pxe or props.get("IsPXE") == 1
            found.multicast = found.multicast or props.get("IsMulticast") == 1
        elif role.lower() != SITE_SYSTEM_ROLE:
            warnings.append(
                f"{found.name}: role {role!r} has no inventory meaning; host kept without it"
            )
    clients: list[str] = []
    collection = answer.get("collection")
    if collection:
        for member in collection["members"]:
            name = _key(str(member))
            clients.append(name)
            hosts.setdefault(name, Found(name, name)).roles.add("client")
    for found in hosts.values():
        if (found.pxe or found.multicast) and "distribution_point" not in found.roles:
            warnings.append(
                f"{found.name}: has a {'PXE' if found.pxe else 'multicast'} role but no "
                "distribution point role; written without the role"
            )
            found.pxe = found.multicast = False
        if not found.roles:
            warnings.append(f"{found.name}: no role the inventory knows; written with roles: []")
    systems = {_key(str(s["name"])): s for s in answer["systems"]}
    undetermined: list[str] = []
    out_hosts: dict[str, Any] = {}
    for found in sorted(hosts.values(), key=_order):
        os_version, arch = _os_of(found.name, systems.get(found.name), stated, undetermined)
        entry: dict[str, Any] = {
            "address": found.address,
            "site": site,
            "roles": [
                r for r in ("site_server", "distribution_point", "client") if r in found.roles
            ],
            "os": {"version": os_version, "arch": arch},
        }
        if "distribution_point" in found.roles:
            entry["dp"] = {"multicast": found.multicast, "pxe": found.pxe}
        if "client" in found.roles:
            # Whether a client has WinRM is not in the site's data: not assumed.
            entry["winrm"] = False
        out_hosts[found.name] = entry
    surface = answer.get("surface")
    version = site_version or str(surface or "")
    if not version:
        undetermined.append(
            f"site {site}: ConfigMgr version not known (the provider listed no site system "
            "role, whose class surface tells 2007 from 2012 R2); state it with --site-version"
        )
    elif not site_version and version == "2012r2":
        warnings.append(
            f"site {site}: version 2012r2 inferred from the 2012 class surface "
            "(SMS_SystemResourceList.SslState, hh458483); 2012 RTM/SP1 and current branch have it "
            f"too: check sites.{site}.version"
        )
    warnings.append(
        f"site {site}: release and install_dir are not read from the site; the inventory "
        "default install_dir (C:\\Program Files\\Microsoft Configuration Manager) applies unless "
        "you set it"
    )
    data: dict[str, Any] = {
        "credentials": seed.file.credentials.model_dump(exclude_none=True),
        "winrm": seed.file.winrm.model_dump(exclude_none=True),
        "sites": {site: {"version": version, "provider": _key(machine)}},
    }
    if collection and clients:
        data["groups"] = {f"collection-{str(collection['id']).lower()}": {"hosts": clients}}
    data["hosts"] = out_hosts
    return SiteAnswer(data, warnings, undetermined)


def _order(found: Found) -> tuple[bool, bool, str]:
    """Written order: the site server, the other site systems, then clients; by name."""
    return ("site_server" not in found.roles, "client" in found.roles, found.name)


def _os_of(
    name: str,
    system: dict[str, Any] | None,
    stated: dict[str, tuple[str, str]],
    undetermined: list[str],
) -> tuple[str, str]:
    """The host's (Windows version, architecture): stated with --os, else from the site's
    records; what neither settles is added to `undetermined` (and a placeholder returned that
    is never written, since the command stops)."""
    if name in stated:
        return stated[name]
    version = arch = None
    if system is not None:
        m = _OS_TEXT.match(str(system["os"]))
        if m:
            version = NT_VERSIONS.get((m[1].lower(), m[2]))
        arch = SYSTEM_TYPES.get(str(system["system_type"]).lower())
    if version is None or arch is None:
        what = (
            "no discovery record"
            if system is None
            else (f"OS {system['os']!r}, SystemType {system['system_type']!r}")
        )
        undetermined.append(f"{name}: OS or architecture not known from the site ({what})")
        return "", ""
    return version, arch


def write_checked(path: Path, built: SiteAnswer, provider: str, site: str) -> Path:
    """Write the inventory only if the project's loader accepts it: validated in a temporary
    file next to `path`, then renamed over it."""
    from cmrunbook.load.inventory import load_inventory

    header = [
        f"# Inventory of site {site}, written by `invoke inventory from-site` from the SMS "
        f"Provider on {provider}.",
        "# Credentials are never written: `credentials` only says where they come from.",
        # One line each: text from the site must not end the comment and become YAML.
        *(f"# warning: {' '.join(w.split())}" for w in built.warnings),
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(built.data, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".from-site-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        load_inventory(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
