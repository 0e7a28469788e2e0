"""`invoke inventory from-site` in the lab (templates/inventory/): from_site.ps1.j2 answered
from the site's own model (site.py, site_systems.py), query by query as the script sends them.

The script only reads. Each query is taken from the script (class, WHERE, the values it
assigns) and answered by `cmrunbook_lab.wmi`, so a wrong class or property fails as WMI would;
every property the script reads must be on the class for the site's version.
"""

from __future__ import annotations

import re
from typing import Any

from cmrunbook_lab import wmi
from cmrunbook_lab.scripts import Context, Operations, PSError, Unrecognized
from cmrunbook_lab.site_systems import provider_locations

OPERATIONS = Operations()

_LOCATION_CALL = "Get-WmiObject -Namespace 'root\\sms' -Class SMS_ProviderLocation"


@OPERATIONS.add(
    "inventory/from_site",
    lambda s: s.has(_LOCATION_CALL, "function Get-CmrbSystems"),
)
def from_site(ctx: Context) -> None:
    s, lab = ctx.script, ctx.lab
    code = str(s.input("siteCode"))
    collection_id = s.input("collectionId")
    for var, cls in (("candidate", "SMS_ProviderLocation"), ("location", "SMS_ProviderLocation")):
        wmi.check_reads(s.body, var, cls, "2007")
    locations = [
        wmi.as_queried("SMS_ProviderLocation", "2007", r) for r in provider_locations(lab, ctx.host)
    ]
    location = next((r for r in locations if str(r["SiteCode"]).lower() == code.lower()), None)
    if location is None:
        served = ", ".join(str(r["SiteCode"]) for r in locations)
        raise PSError(
            f"No SMS Provider for site {code} on this server (SMS_ProviderLocation names: {served})"
        )
    site = lab.sites[str(location["SiteCode"])]
    if str(s.input("CmrbSiteCode")) != code:
        raise Unrecognized("the namespace is not the site's")
    version = site.version
    # How the script tells the version, as the lab answers it below: no row, no version.
    if not s.has(
        "surface = $null",
        "$CmrbResult.data.surface = '2007'",
        "if ($null -ne $resource.PSObject.Properties['SslState']) {",
    ):
        raise Unrecognized("the version test is not the one the lab simulates")
    wmi.check_reads(s.body, "resource", "SMS_SystemResourceList", version)
    wmi.check_reads(s.body, "role", "SMS_SCI_SysResUse", version)
    wmi.check_reads(s.body, "system", "SMS_R_System", version)
    wmi.check_reads(s.body, "hw", "SMS_G_System_SYSTEM", version)
    env = {"$siteCode": code}
    rows = wmi.run_call(lab, site, s, wmi.call_after(s, "# Site systems and their roles"), env)
    on_2012 = "sslstate" in wmi.SURFACE["SMS_SystemResourceList"].properties(version)
    data: dict[str, Any] = {
        "site": code,
        "provider": {
            "machine": str(location["Machine"]),
            "namespace": str(location["NamespacePath"]),
            "local": bool(location["ProviderForLocalSite"]),
        },
        "surface": ("2012r2" if on_2012 else "2007") if rows else None,
        "resources": [
            {
                "role": str(r["RoleName"]),
                "server": str(r["ServerName"]),
                "remote": str(r.get("ServerRemoteName") or ""),
                "nal": str(r["NALPath"]),
                "site": str(r["SiteCode"]),
            }
            for r in rows
        ],
        "roles": [],
        "systems": [],
        "collection": None,
    }
    scf_call = wmi.call_after(s, "# The site control file's role entries")
    for r in wmi.run_call(lab, site, s, scf_call, env):
        flags = {
            str(p["PropertyName"]): int(p["Value"])
            for p in r.get("Props") or []
            if str(p.get("PropertyName")) in ("IsPXE", "IsMulticast")
        }
        data["roles"].append(
            {
                "role": str(r["RoleName"]),
                "nal": str(r["NALPath"]),
                "site": str(r["SiteCode"]),
                "props": flags,
            }
        )
    names = {e["server"].split(".")[0].upper() for e in data["resources"]}
    names.add(data["provider"]["machine"].split(".")[0].upper())
    if collection_id:
        if not re.fullmatch(r"[A-Za-z0-9]{8}", str(collection_id)):
            raise PSError(f"Not a ConfigMgr collection ID: {collection_id}")
        cenv = {"$collectionId": collection_id}
        colls = wmi.run_call(lab, site, s, wmi.call_after(s, "$collection = @("), cenv)
        if not colls:
            raise PSError(f"No collection {collection_id} in site {code}")
        members = [
            str(m["Name"])
            for m in wmi.run_call(lab, site, s, wmi.call_after(s, "$members = @()"), cenv)
        ]
        names.update(m.upper() for m in members)
        data["collection"] = {
            "id": collection_id,
            "name": str(colls[0]["Name"]),
            "members": members,
        }
    by_name = wmi.call_after(s, "function Get-CmrbSystems")
    by_id = wmi.call_after(s, "$type = ''")
    for name in sorted(names):
        for system in wmi.run_call(lab, site, s, by_name, {"$name": name}):
            rid = str(int(system["ResourceId"]))
            kind = ""
            for hw in wmi.run_call(lab, site, s, by_id, {"$id": rid}):
                kind = str(hw["SystemType"])
            data["systems"].append(
                {
                    "name": str(system["Name"]),
                    "resource_id": rid,
                    "os": str(system["OperatingSystemNameandVersion"]),
                    "system_type": kind,
                }
            )
    ctx.result.data = data
    ctx.result.message = (
        f"Site {code}: {len(data['resources'])} site system role(s), {len(data['roles'])} site "
        "control file role entries."
    )
