"""A site's SMS Provider data: images, distribution point records, the site control file, clients.

Only what the runbooks' WMI queries read and write is kept, in the shapes of the real classes
(SMS_ImagePackage, SMS_BootImagePackage, SMS_DistributionPoint, SMS_SCI_SysResUse,
SMS_SystemResourceList, SMS_R_System), so a query can be answered field by field.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cmrunbook_lab.labfile import SiteSpec
from cmrunbook_lab.site_systems import server_resources, system_hardware

if TYPE_CHECKING:
    from cmrunbook_lab.world import Lab

MULTICAST_ROLE = "SMS Multicast Service Point"
PXE_ROLE = "SMS PXE Service Point"
DP_ROLE = "SMS Distribution Point"
PXE_SHARE = "SMSPXEIMAGES$"


def nal_path(server: str, site: str, share: str = "") -> str:
    """A ConfigMgr NAL path: the display form, the network type, the site, the UNC path."""
    unc = f"\\\\{server}\\" + (f"{share}\\" if share else "")
    return f'["Display={unc}"]MSWNET:["SMS_SITE={site}"]{unc}'


def nal_server(nal: str) -> str:
    """The server a NAL path names (`...MSWNET:["SMS_SITE=C07"]\\\\SERVER\\...` -> SERVER)."""
    m = re.search(r'MSWNET:\["SMS_SITE=[^"]*"\]\\\\([^\\]+)', nal)
    return m.group(1) if m else ""


def nal_share(nal: str) -> str:
    """The share a NAL path names after its server ('' for the server itself)."""
    m = re.search(r'MSWNET:\["SMS_SITE=[^"]*"\]\\\\[^\\]+\\([^\\]*)', nal)
    return m.group(1) if m else ""


#: SMS_G_System_CI_ComplianceState.ComplianceState per state name: "0 Compliance state unknown,
#: 1 Compliant, 2 Non-compliant, 4 Error" (docs/reference/FLEET-COMPLIANCE.md, "Compliance
#: states").
COMPLIANCE_STATE = {"unknown": 0, "compliant": 1, "non-compliant": 2, "error": 4}


def wql_like(value: str, pattern: str) -> bool:
    """WQL LIKE, case-insensitive, as learn.microsoft.com/windows/win32/wmisdk/like-operator
    gives it: % any run, _ one character, [abc] or [a-f] one of a set or range, [^...] one not
    in it (so [_] is a literal underscore)."""
    regex: list[str] = []
    pos = 0
    while pos < len(pattern):
        c = pattern[pos]
        end = pattern.find("]", pos + 2) if c == "[" else -1
        if c == "%":
            regex.append(".*")
        elif c == "_":
            regex.append(".")
        elif end != -1:
            regex.append(_like_set(pattern[pos + 1 : end]))
            pos = end
        else:
            regex.append(re.escape(c))
        pos += 1
    return re.fullmatch("".join(regex), value, re.IGNORECASE | re.DOTALL) is not None


def _like_set(body: str) -> str:
    """The regex of a LIKE set's inside (`abc`, `a-f`, `^a-f`): its characters escaped, its
    ranges kept."""
    negate = body.startswith("^") and len(body) > 1
    chars = body[1:] if negate else body
    parts: list[str] = []
    i = 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            parts.append(f"{re.escape(chars[i])}-{re.escape(chars[i + 2])}")
            i += 3
        else:
            parts.append(re.escape(chars[i]))
            i += 1
    return ("[^" if negate else "[") + "".join(parts) + "]"


@dataclass
class SiteRole:
    """An SMS_SCI_SysResUse instance of the site control file."""

    RoleName: str
    NALPath: str
    NetworkOSPath: str
    SiteCode: str
    NALType: str = "Windows NT Server"
    ItemName: str = ""
    ItemType: str = "System Resource Usage"
    FileType: int = 2
    Props: list[dict[str, Any]] = field(default_factory=list)
    PropLists: list[dict[str, Any]] = field(default_factory=list)

    def key(self) -> tuple[str, str]:
        return (self.RoleName.lower(), self.NALPath.lower())

    def server(self) -> str:
        """The server its NAL path names."""
        return nal_server(self.NALPath)

    def record(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)


@dataclass
class ScfSession:
    """An open site control file session: a private copy until CommitSCF."""

    handle: str = ""
    roles: list[SiteRole] = field(default_factory=list)


class SiteState:
    """One site as its SMS Provider answers."""

    def __init__(self, code: str, spec: SiteSpec, dp_hosts: dict[str, str]) -> None:
        """`dp_hosts` maps each DP host name of the site to the server name ConfigMgr uses."""
        self.code = code
        self.spec = spec
        self.version = spec.version
        self.server = spec.server
        self.install_dir = spec.install_dir
        self.images: dict[str, dict[str, Any]] = {
            i.package_id.upper(): {
                "PackageID": i.package_id.upper(),
                "Name": i.name,
                "PkgFlags": i.pkg_flags,
                "PackageSize": i.size_kb,
                "PackageType": 257,
                # Lazy (SMS-PROVIDER.md 8): null in a query, read by Get(); lost by a Put() of
                # an object that was not re-read.
                "ImageProperty": f'<WIM><IMAGE INDEX="1"><NAME>{i.name}</NAME></IMAGE></WIM>',
                "RefreshSchedule": ["lab-schedule-token"],
            }
            for i in spec.os_images
        }
        self.boot_images: dict[str, dict[str, Any]] = {
            b.package_id.upper(): {
                "PackageID": b.package_id.upper(),
                "Name": b.name,
                "ImageOSVersion": b.image_os_version,
                "Architecture": b.architecture,
                "SourceVersion": 1,
                "Files": dict(b.files),
                "LastRefreshTime": "",
            }
            for b in spec.boot_images
        }
        # SMS_PackageStatusDistPointsSummarizer.State per (PackageID, ServerNALPath lower case):
        # 0 installed (the default), 1 install pending, 3 install failed.
        self.dp_state: dict[tuple[str, str], int] = {}
        # SourceVersion on each DP (PackageID, NAL lower): set when an update reaches it; until
        # then 1, the version every package has at lab start.
        self.dp_version: dict[tuple[str, str], int] = {}
        self.dp_servers = dict(dp_hosts)
        self.dp_records: list[dict[str, Any]] = []
        for b in spec.boot_images:
            for host in b.dps:
                self.add_dp_record(b.package_id.upper(), nal_path(dp_hosts[host], code))
            for host in b.pxe_dps:
                self.add_dp_record(b.package_id.upper(), nal_path(dp_hosts[host], code, PXE_SHARE))
        self.scf: list[SiteRole] = []
        self.pxe_shares: set[str] = set()  # DP hosts whose SMSPXEIMAGES$ DP exists
        self.clients: list[dict[str, Any]] = []
        self.refreshes: list[str] = []
        self.collections = {
            cid.upper(): {"CollectionID": cid.upper(), "Name": c.name, "members": list(c.members)}
            for cid, c in spec.collections.items()
        }
        # Configuration items (baselines too) and baseline assignments created through the
        # provider (sims/publish.py), as SMS_ConfigurationItem / SMS_BaselineAssignment rows.
        self.config_items: list[dict[str, Any]] = []
        self.baseline_assignments: list[dict[str, Any]] = []

    # -- WMI classes of the SMS Provider ---------------------------------------------------

    def wmi_instances(self, cls: str, lab: Lab) -> list[dict[str, Any]]:
        """Instances of one class (see `cmrunbook_lab.wmi.SURFACE`), as fresh dicts."""
        public = (
            "ResourceId",
            "Name",
            "NetbiosName",
            "ClientVersion",
            "OperatingSystemNameandVersion",
            "Client",
            "Active",
            "Obsolete",
        )
        if cls == "SMS_R_System":
            return [{k: c[k] for k in public} for c in self.clients] + server_resources(lab, self)
        if cls == "SMS_G_System_SYSTEM":
            return system_hardware(lab, self)
        if cls == "SMS_G_System_SoftwareFile":
            return [{"ResourceID": c["ResourceId"], **f} for c in self.clients for f in c["_files"]]
        if cls == "SMS_G_System_OPERATING_SYSTEM":
            return [{"ResourceID": c["ResourceId"], **c["_os"]} for c in self.clients if c["_os"]]
        if cls == "SMS_G_System_LastSoftwareScan":
            return [
                {"ResourceID": c["ResourceId"], "LastScanDate": c["_scan"]}
                for c in self.clients
                if c["_scan"]
            ]
        if cls == "SMS_Collection":
            return [
                {"CollectionID": cid, "Name": c["Name"], "MemberCount": len(c["members"])}
                for cid, c in self.collections.items()
            ]
        if cls == "SMS_FullCollectionMembership":
            by_host = {c["_host"].lower(): c for c in self.clients if not c["_extra"]}
            return [
                {
                    "CollectionID": cid,
                    "ResourceID": by_host[m.lower()]["ResourceId"],
                    "Name": by_host[m.lower()]["Name"],
                }
                for cid, c in self.collections.items()
                for m in c["members"]
                if m.lower() in by_host
            ]
        if cls == "SMS_ConfigurationItem":
            return [
                {k: v for k, v in r.items() if not k.startswith("_")} for r in self.config_items
            ]
        if cls == "SMS_G_System_CI_ComplianceState":
            return self.compliance_states()
        if cls == "SMS_BaselineAssignment":
            return [dict(r) for r in self.baseline_assignments]
        if cls == "SMS_BootImagePackage":
            out = []
            for b in self.boot_images.values():
                row = {k: v for k, v in b.items() if k != "Files"}
                if self.version == "2007":
                    row.pop("ImageOSVersion")  # the 2007 class has no such property
                out.append(row)
            return out
        if cls == "SMS_DistributionPoint":
            return [dict(r) for r in self.dp_records]
        if cls == "SMS_PackageStatusDistPointsSummarizer":
            return [
                {
                    "PackageID": r["PackageID"],
                    "ServerNALPath": r["ServerNALPath"],
                    "SiteCode": self.code,
                    "State": self.dp_state.get((r["PackageID"], r["ServerNALPath"].lower()), 0),
                    "SourceVersion": self.dp_version.get(
                        (r["PackageID"], r["ServerNALPath"].lower()), 1
                    ),
                    "SummaryDate": "",
                }
                for r in self.dp_records
            ]
        if cls == "SMS_ImagePackage":
            return [dict(i) for i in self.images.values()]
        if cls == "SMS_PackageStatusRootSummarizer":
            return [
                {
                    "PackageID": i["PackageID"],
                    "Name": i["Name"],
                    "SourceSize": i["PackageSize"],
                    "SourceCompressedSize": i["PackageSize"],
                    "SourceVersion": 1,
                    "Targeted": 1,
                    "Installed": 1,
                    "Retrying": 0,
                    "Failed": 0,
                }
                for i in self.images.values()
            ]
        if cls == "SMS_SystemResourceList":
            return self.system_resources()
        if cls == "SMS_SCI_SysResUse":
            # A query without a session handle reads the global copy (SMS-PROVIDER.md 5.1).
            return [r.record() for r in self.scf]
        return []

    def compliance_states(self) -> list[dict[str, Any]]:
        """SMS_G_System_CI_ComplianceState: a row per deployed baseline and client of its
        collection that reports a state (the lab file's `baseline_state`), under the baseline's
        own CI_ID and CI_UniqueID. Whether a real site reports a baseline's state under the
        baseline's CI_UniqueID or its items' is UNCONFIRMED (docs/reference/
        FLEET-COMPLIANCE.md); the client's check reads it as a parameter."""
        items = {r["CI_ID"]: r for r in self.config_items}
        by_host = {c["_host"].lower(): c for c in self.clients if not c["_extra"]}
        out = []
        for assignment in self.baseline_assignments:
            collection = self.collections.get(assignment["TargetCollectionID"])
            members = collection["members"] if collection else []
            for ci_id in assignment["AssignedCIs"]:
                item = items[ci_id]
                for member in members:
                    client = by_host.get(member.lower())
                    if client is None or client["_baseline_state"] is None:
                        continue
                    out.append(
                        {
                            "CI_ID": ci_id,
                            "CI_UniqueID": item["CI_UniqueID"],
                            "CIVersion": item["CIVersion"],
                            "ComplianceState": COMPLIANCE_STATE[client["_baseline_state"]],
                            "LocalizedDisplayName": item["LocalizedDisplayName"],
                            "ResourceID": client["ResourceId"],
                        }
                    )
        return out

    # -- distribution point records --------------------------------------------------------

    def add_dp_record(self, package_id: str, server_nal_path: str) -> None:
        self.dp_records.append(
            {
                "PackageID": package_id,
                "ServerNALPath": server_nal_path,
                "SiteCode": self.code,
                "SiteName": self.code,
                "Status": 0,
            }
        )

    def system_resources(self) -> list[dict[str, Any]]:
        """SMS_SystemResourceList: each DP, and the SMSPXEIMAGES$ DP of each PXE service point."""
        out = [
            {
                "RoleName": DP_ROLE,
                "NALPath": nal_path(server, self.code),
                "SiteCode": self.code,
                "ServerName": server,
                "ResourceType": "Windows NT Server",
            }
            for server in self.dp_servers.values()
        ]
        out += [
            {
                "RoleName": DP_ROLE,
                "NALPath": nal_path(self.dp_servers[h], self.code, PXE_SHARE),
                "SiteCode": self.code,
                "ServerName": self.dp_servers[h],
                "ResourceType": "Windows NT Server",
            }
            for h in sorted(self.pxe_shares)
        ]
        return out

    # -- site control file -----------------------------------------------------------------

    def role_record(
        self,
        role_name: str,
        host: str,
        props: list[dict[str, Any]] | None = None,
        prop_lists: list[dict[str, Any]] | None = None,
    ) -> SiteRole:
        server = self.dp_servers[host]
        nal = nal_path(server, self.code)
        return SiteRole(
            RoleName=role_name,
            NALPath=nal,
            NetworkOSPath=f"\\\\{server}",
            SiteCode=self.code,
            ItemName=f"{nal},{role_name}",
            Props=copy.deepcopy(props or []),
            PropLists=copy.deepcopy(prop_lists or []),
        )

    def open_session(self, handle: str) -> ScfSession:
        """GetSessionHandle: a private copy of the site control file as it is now."""
        session = ScfSession(handle)
        self.refresh(session)
        return session

    def refresh(self, session: ScfSession) -> None:
        session.roles = [SiteRole(**r.record()) for r in self.scf]

    def commit(self, session: ScfSession) -> tuple[list[SiteRole], list[SiteRole]]:
        """Make the session's copy the site control file; returns (removed, added) roles."""
        before = {r.key(): r for r in self.scf}
        after = {r.key(): r for r in session.roles}
        removed = [r for k, r in before.items() if k not in after]
        added = [r for k, r in after.items() if k not in before]
        self.scf = [SiteRole(**r.record()) for r in session.roles]
        return removed, added
