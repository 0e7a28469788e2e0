"""What a site's SMS Provider says about its own site systems: where the provider is, and the
discovery and hardware-inventory records of the servers (site server, DPs).

Kept apart from `site.py` (clients, packages, the site control file): these records are read
only by `invoke inventory from-site`. Sources are shared/kb/SMS-PROVIDER.md sections:
* SMS_ProviderLocation (9; cc145228): Machine, NamespacePath, ProviderForLocalSite, SiteCode,
  in root\\sms of the provider's server. Whether Machine holds an FQDN or a NetBIOS name is
  not documented; the lab gives the name the lab file gives the site server (its address).
* SMS_R_System (7.1; cc145392): a discovered server carries OperatingSystemNameandVersion in
  the form "Microsoft Windows NT Server 5.2" [practitioner values]; the NT version per Windows
  release is Microsoft's table
  (https://learn.microsoft.com/windows/win32/sysinfo/operating-system-version).
* SMS_G_System_SYSTEM (7.4; cc145495): SystemType, whose values the lab takes from
  Win32_ComputerSystem ("X86-based PC", "x64-based PC",
  https://learn.microsoft.com/windows/win32/cimwin32prov/win32-computersystem); that the
  site's inventory copies them unchanged is UNCONFIRMED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cmrunbook_lab.hosts import SimHost
    from cmrunbook_lab.site import SiteState
    from cmrunbook_lab.world import Lab

#: Windows server releases by the NT version OperatingSystemNameandVersion carries.
SERVER_NT_VERSION = {
    "nt4": "4.0",
    "2000": "5.0",
    "2003": "5.2",
    "2008": "6.0",
    "2008r2": "6.1",
    "2012": "6.2",
    "2012r2": "6.3",
}
SYSTEM_TYPE = {"x86": "X86-based PC", "x64": "x64-based PC"}
#: Resource IDs of site systems: apart from the clients' (site.py counts those from 16777220).
_FIRST_SERVER_ID = 33554432


def provider_locations(lab: Lab, host: SimHost) -> list[dict[str, Any]]:
    """SMS_ProviderLocation on `host`: one instance per site whose provider it is."""
    return [
        {
            "Machine": host.address,
            "NamespacePath": f"\\\\{host.address}\\root\\sms\\site_{code}",
            "ProviderForLocalSite": True,
            "SiteCode": code,
        }
        for code, site in lab.sites.items()
        if site.server == host.name
    ]


def _servers(lab: Lab, site: SiteState) -> list[SimHost]:
    """The site's servers (site server, DPs), in lab-file order."""
    return [
        h
        for h in lab.hosts.values()
        if h.site_code == site.code and {"site_server", "distribution_point"} & set(h.roles)
    ]


def _server_records(lab: Lab, site: SiteState) -> list[tuple[SimHost, dict[str, Any]]]:
    """Each server with its SMS_R_System record (system discovery finds servers too); a server
    OS the NT-version table lacks has no record."""
    out = []
    for i, h in enumerate(_servers(lab, site)):
        if h.os_version not in SERVER_NT_VERSION:
            continue
        name = h.address.split(".")[0].upper()
        nt_version = SERVER_NT_VERSION[h.os_version]
        out.append(
            (
                h,
                {
                    "ResourceId": _FIRST_SERVER_ID + 4 * i,
                    "Name": name,
                    "NetbiosName": name,
                    "ClientVersion": None,
                    "OperatingSystemNameandVersion": f"Microsoft Windows NT Server {nt_version}",
                    "Client": 0,
                    "Active": 1,
                    "Obsolete": 0,
                },
            )
        )
    return out


def server_resources(lab: Lab, site: SiteState) -> list[dict[str, Any]]:
    """SMS_R_System records of the site's servers."""
    return [record for _, record in _server_records(lab, site)]


def system_hardware(lab: Lab, site: SiteState) -> list[dict[str, Any]]:
    """SMS_G_System_SYSTEM of the hardware-inventoried clients and of the servers."""
    out = [
        _hardware(c["ResourceId"], c["Name"], lab.hosts[c["_host"]])
        for c in site.clients
        if c["_os"] is not None
    ]
    out += [_hardware(r["ResourceId"], r["Name"], h) for h, r in _server_records(lab, site)]
    return out


def _hardware(resource_id: int, name: str, host: SimHost) -> dict[str, Any]:
    return {"ResourceID": resource_id, "Name": name, "SystemType": SYSTEM_TYPE[host.arch]}
