"""A lab built from an inventory: the sites, hosts, roles and versions of an admin's own site, so
a run can be rehearsed end to end before it touches production (`invoke lab --from-inventory`).

The inventory says what exists (sites with version and provider, hosts with address, roles, OS,
DP multicast/PXE, WinRM or not). What it never knows comes from a lab file when one is given:
the state of a host of the same name (files, logs, WDS features, its multicast fault), the OS
and boot images and collections of a site of the same code, the delays and the injected faults.
Without a lab file the hosts start healthy, with no images. `--fault HOST=KIND` sets a DP's
multicast fault on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from cmrunbook.errors import UsageError
from cmrunbook.load.inventory import load_inventory
from cmrunbook_lab.labfile import (
    Delays,
    DPSpec,
    HostSpec,
    LabFile,
    MulticastFault,
    SiteSpec,
    load_lab_file,
)


def lab_file_from_inventory(
    inventory: Path, lab_file: Path | None = None, faults: dict[str, str] | None = None
) -> LabFile:
    """The lab file of the inventory's site(s); `faults` maps a DP host to its multicast fault."""
    inv = load_inventory(inventory)
    base = load_lab_file(lab_file) if lab_file else None
    names = set(inv.file.hosts)
    sites: dict[str, SiteSpec] = {}
    for code, site in inv.file.sites.items():
        known = base.sites.get(code) if base else None
        fields: dict[str, Any] = {
            "version": site.version,
            "release": site.release,
            "server": site.provider,
            "install_dir": site.install_dir,
        }
        if known is None:
            sites[code] = SiteSpec(**fields)
            continue
        boot = [
            b.model_copy(
                update={
                    "dps": [h for h in b.dps if h in names],
                    "pxe_dps": [h for h in b.pxe_dps if h in names],
                }
            )
            for b in known.boot_images
        ]
        collections = {
            cid: c.model_copy(update={"members": [m for m in c.members if m in names]})
            for cid, c in known.collections.items()
        }
        sites[code] = known.model_copy(
            update={**fields, "boot_images": boot, "collections": collections}
        )
    hosts: dict[str, HostSpec] = {}
    for name, host in inv.file.hosts.items():
        fields = {
            "address": host.address or name,
            "site": host.site,
            "roles": list(host.roles),
            "os": host.os,
            "winrm": host.winrm is not False,
        }
        known_host = base.hosts.get(name) if base else None
        dp = None
        if host.dp is not None or "distribution_point" in host.roles:
            state = known_host.dp if known_host and known_host.dp else DPSpec()
            wanted = host.dp
            dp = state.model_copy(
                update={
                    "multicast": bool(wanted and wanted.multicast),
                    "pxe": bool(wanted and wanted.pxe),
                }
            )
        if known_host is None:
            hosts[name] = HostSpec(**fields, dp=dp)
        else:
            client = known_host.client if "client" in host.roles else None
            hosts[name] = known_host.model_copy(update={**fields, "dp": dp, "client": client})
    for name, kind in (faults or {}).items():
        kinds = get_args(MulticastFault)
        if kind not in kinds:
            raise UsageError(f"--fault {name}={kind}: unknown fault; known: {', '.join(kinds)}")
        dp_host = hosts.get(name)
        if dp_host is None or dp_host.dp is None:
            raise UsageError(f"--fault {name}={kind}: {name} is not a DP of {inventory}")
        hosts[name] = dp_host.model_copy(
            update={"dp": dp_host.dp.model_copy(update={"multicast_fault": kind})}
        )
    spec = LabFile(
        speed=base.speed if base else 1.0,
        delays=base.delays if base else Delays(),
        sites=sites,
        hosts=hosts,
        faults=base.faults if base else [],
    )
    problems = spec.problems()
    if problems:
        source = f"{inventory}" + (f" with {lab_file}" if lab_file else "")
        raise UsageError(
            "; ".join(f"{source}: {'.'.join(map(str, where))}: {what}" for where, what in problems)
        )
    return spec


def parse_faults(values: list[str]) -> dict[str, str]:
    """`--fault HOST=KIND` options as {host: kind}."""
    out: dict[str, str] = {}
    for value in values:
        host, sep, kind = value.partition("=")
        if not sep or not host or not kind:
            raise UsageError(f"--fault {value!r}: expected HOST=KIND, e.g. cm07-dp01=wds")
        out[host] = kind
    return out
