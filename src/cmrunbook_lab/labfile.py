"""The lab file: which simulated sites and hosts exist, their state, delays and injected faults.

A lab file is YAML, safe-loaded with line marks, validated like runbooks and inventories, so a
typo names its file:line:column. Its sites and hosts mirror an inventory (the lab writes a
matching one, see `cmrunbook_lab.inventory_out`); on top it holds the state an inventory never
knows: image flags, installed features, file versions, which fault breaks multicast.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field

from cmrunbook.errors import ConfigError
from cmrunbook.load.inventory import OS
from cmrunbook.load.runbook import ConfigMgrVersion, Role, Strict
from cmrunbook.load.sourcemap import load_yaml
from cmrunbook.load.validation import parse

DEFAULT_LAB = "default-lab.yaml"
MulticastFault = Literal["none", "image-flags", "mcs-key", "wds"]
LogFormat = Literal["cmtrace", "sms2007", "msi"]
FaultKind = Literal[
    "log-failure",
    "log-hang",
    "log-rollover",
    "reboot-during",
    "script-failure",
    "distribution-failure",
]
WdsFeature = Literal["WDS", "WDS-Deployment", "WDS-Transport"]
#: A client's compliance state for a baseline, by the names of SMS_G_System_CI_ComplianceState's
#: ComplianceState values (0 unknown, 1 compliant, 2 non-compliant, 4 error:
#: docs/reference/FLEET-COMPLIANCE.md); `site.COMPLIANCE_STATE` maps them to the numbers.
BaselineState = Literal["unknown", "compliant", "non-compliant", "error"]


class Delays(Strict):
    """Seconds at speed 1; every one is divided by the lab's `speed`."""

    role_uninstall: float = Field(
        45, ge=0, description="SCF commit -> role removal starts on the DP."
    )
    role_install: float = Field(
        60, ge=0, description="SCF commit -> role install starts on the DP."
    )
    log_line: float = Field(2, ge=0, description="Between the lines of one setup sequence.")
    image_flags: float = Field(
        5, ge=0, description="Image flag toggle -> DP multicast key rewritten."
    )
    distmgr: float = Field(20, ge=0, description="RefreshPkgSource() -> distmgr.log STATMSG 2311.")
    distmgr_done: float = Field(10, ge=0, description="STATMSG 2311 -> STATMSG 2301.")
    restart_down: float = Field(60, ge=0, description="How long a restarting host does not answer.")
    mcs_signing: float = Field(
        120,
        ge=0,
        description="A DP's new SerializedMCSKey -> the MP's SignedSerializedMCSKey: 'a couple "
        "of minutes or a couple of hours' (retro64.ca).",
    )
    shutdown_grace: float | None = Field(
        None, ge=0, description="Restart command -> host down; default: the script's /t value."
    )


class OSImage(Strict):
    package_id: str = Field(pattern=r"^[A-Za-z0-9]{8}$")
    name: str
    pkg_flags: int = Field(0, ge=0, le=0xFFFFFFFF)
    size_kb: int = Field(
        0, ge=0, description="Source size (KB): SourceSize of its package status summary."
    )


class BootImage(Strict):
    package_id: str = Field(pattern=r"^[A-Za-z0-9]{8}$")
    name: str
    image_os_version: str = Field(description="e.g. 6.1.7601 (WinPE 3.1)")
    architecture: Literal["x86", "x64"] = "x86"
    dps: list[str] = Field(default_factory=list, description="Lab hosts holding the image.")
    pxe_dps: list[str] = Field(
        default_factory=list, description="PXE DPs whose SMSPXEIMAGES$ share holds the image."
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        description="Files inside the image (path -> version), e.g. bootsect.exe.",
    )


class CollectionSpec(Strict):
    """A collection of the site (SMS_Collection), its members by lab host name."""

    name: str
    members: list[str] = Field(default_factory=list)


class SiteSpec(Strict):
    version: ConfigMgrVersion
    release: str = ""
    server: str = Field(description="Lab host name of the site server (SMS Provider).")
    install_dir: str = r"C:\Program Files\Microsoft Configuration Manager"
    os_images: list[OSImage] = Field(default_factory=list)
    boot_images: list[BootImage] = Field(default_factory=list)
    collections: dict[str, CollectionSpec] = Field(
        default_factory=dict,
        description="CollectionID -> collection (SMS_FullCollectionMembership).",
    )


class FileSpec(Strict):
    version: str | None = None
    size: int = Field(4096, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    arch: Literal["x86", "x64", "other"] | None = Field(
        None, description="PE machine type; default: x64 in an x64/amd64 folder, else x86."
    )
    read_only: bool = False


class LogLineSpec(Strict):
    """One line of a log the lab starts with (CMTrace fields)."""

    message: str
    component: str = "TSManager"
    level: Literal["info", "warning", "error"] = "info"
    thread: int = Field(3048, ge=0)


class LogFileSpec(Strict):
    """A log already on the host when the lab starts, e.g. a failed task sequence's smsts.log."""

    format: LogFormat = "cmtrace"
    hours_ago: float = Field(2, ge=0, description="When its lines were written, before the start.")
    lines: list[LogLineSpec]


class DPSpec(Strict):
    multicast: bool = False
    pxe: bool = False
    wds: list[WdsFeature] = Field(
        default_factory=lambda: list(get_args(WdsFeature)),
        description="Installed WDS features at start.",
    )
    multicast_fault: MulticastFault = "none"
    wds_uninstall_reboot: bool = Field(True, description="WDS removal asks for a restart.")
    wds_install_reboot: bool = False
    pxe_install_reboot: bool = Field(False, description="pxe.msi returns 3010 on install.")
    nal_name: str | None = Field(
        None,
        description="The server name its site registered it by (NAL paths, site control file); "
        "default: the NetBIOS name (first label of the address) on 2007, the address later.",
    )
    mcs_key: str | None = Field(
        None,
        description="Registry key holding the multicast key; default: "
        "SOFTWARE\\Microsoft\\SMS\\MCS in the view the site's ConfigMgr writes "
        "(Wow6432Node for 2007 on x64).",
    )


class ClientSpec(Strict):
    tscore_version: str | None = Field(None, description="TSCore.dll file version; None: absent.")
    client_version: str = "5.00.7958.1000"
    inventoried: bool = Field(True, description="The site inventory holds TSCore.dll's version.")
    inventoried_version: str | None = Field(
        None,
        description="The version the last software scan reported (default: tscore_version); "
        "an older one when the client was patched after that scan.",
    )
    client_dir: str | None = Field(None, description="Local SMS Path; default by OS and site.")
    second_record: Literal["current", "obsolete"] | None = Field(
        None,
        description="A second SMS_R_System record of the same name (a client reinstalled or "
        "reimaged and discovered again), current or marked obsolete; None: one record.",
    )
    second_record_version: str = Field(
        "5.0.7958.1104", description="The TSCore.dll version the second record's inventory holds."
    )
    baseline_state: BaselineState | None = Field(
        None,
        description="The compliance state the client reports for a baseline deployed to a "
        "collection it is in (SMS_G_System_CI_ComplianceState); None: it reports none yet.",
    )


class HostSpec(Strict):
    address: str | None = Field(None, description="The name ConfigMgr knows it by (FQDN).")
    site: str
    roles: list[Role]
    os: OS
    winrm: bool = True
    log_dir: str | None = Field(None, description="Where its site-system logs are.")
    log_format: dict[str, LogFormat] = Field(
        default_factory=dict, description="Per log name; default cmtrace."
    )
    log_max_bytes: int = Field(1_000_000, ge=1024, description="Rollover to .lo_ past this size.")
    files: dict[str, FileSpec] = Field(default_factory=dict)
    log_files: dict[str, LogFileSpec] = Field(
        default_factory=dict, description="Full path -> a log present at start."
    )
    dirs: list[str] = Field(default_factory=list)
    registry: dict[str, dict[str, Any]] = Field(default_factory=dict)
    dp: DPSpec | None = None
    client: ClientSpec | None = None
    pending_reboot: bool = False


class ClientGenerator(Strict):
    """Many clients from a few lines, for fleet checks: versions cycle by weight, deterministic."""

    count: int = Field(ge=1, le=100_000)
    site: str
    prefix: str = "lab-wks"
    os: OS = OS(version="xp", arch="x86")
    tscore_versions: dict[str, int] = Field(
        default_factory=lambda: {"5.0.7958.1000": 3, "5.0.7958.1104": 1},
        description="TSCore.dll version -> weight.",
    )
    no_winrm_every: int = Field(3, ge=0, description="Every n-th client has no WinRM (0: none).")
    not_inventoried_every: int = Field(
        0, ge=0, description="Every n-th has no inventoried version."
    )
    client_version: str = "5.00.7958.1000"
    second_record_every: int = Field(
        0,
        ge=0,
        description="Every n-th is discovered twice: a second, later current record whose "
        "inventory holds second_record_version.",
    )
    second_record_version: str = "5.0.7958.1104"
    obsolete_record_every: int = Field(
        0,
        ge=0,
        description="Every n-th has a second record marked obsolete, whose inventory holds "
        "obsolete_record_version.",
    )
    obsolete_record_version: str = "5.0.7958.1000"
    collection: str | None = Field(
        None, description="A collection of the site the generated clients are members of."
    )
    baseline_states: dict[BaselineState | Literal["none"], int] = Field(
        default_factory=dict,
        description="Compliance state a client reports for a deployed baseline -> weight; "
        "'none': no state yet. Empty: no client reports one.",
    )


class FaultSpec(Strict):
    """A fault on one host; `step` is a glob on the step key (the script header's second field)."""

    host: str
    kind: FaultKind
    step: str | None = Field(
        None, description="Step key glob; for log faults, the triggering step."
    )
    log: str | None = Field(None, description="Log name, for log faults (default: every log).")
    operation: Literal["install", "uninstall", "any"] = "any"
    role: Literal["multicast", "pxe", "any"] = "any"
    down_seconds: float = Field(30, ge=0, description="reboot-during: seconds the host is down.")
    message: str = "Injected failure."
    package_id: str | None = Field(
        None, description="distribution-failure: only this package (default: any)."
    )
    count: int | None = Field(1, ge=1, description="How many times it applies; null: always.")


class LabFile(Strict):
    """The lab file's format."""

    speed: float = Field(1.0, gt=0, description="2 = everything twice as fast.")
    delays: Delays = Delays()
    sites: dict[str, SiteSpec]
    hosts: dict[str, HostSpec]
    clients: list[ClientGenerator] = Field(default_factory=list)
    faults: list[FaultSpec] = Field(default_factory=list)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-references that a model cannot check field by field: (where, what)."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        for code, site in self.sites.items():
            server = self.hosts.get(site.server)
            if server is None or "site_server" not in server.roles:
                out.append(
                    (("sites", code, "server"), f"'{site.server}' is not a site_server host")
                )
            for cid, coll in site.collections.items():
                out.extend(
                    (("sites", code, "collections", cid, "members"), f"unknown host '{h}'")
                    for h in coll.members
                    if h not in self.hosts
                    and not h.startswith(tuple(g.prefix for g in self.clients))
                )
            for i, image in enumerate(site.boot_images):
                out.extend(
                    (("sites", code, "boot_images", i), f"unknown host '{h}'")
                    for h in [*image.dps, *image.pxe_dps]
                    if h not in self.hosts
                )
        for name, host in self.hosts.items():
            if host.site not in self.sites:
                out.append((("hosts", name, "site"), f"unknown site '{host.site}'"))
            if host.dp and "distribution_point" not in host.roles:
                out.append((("hosts", name, "dp"), "dp settings need the role distribution_point"))
            if host.client and "client" not in host.roles:
                out.append((("hosts", name, "client"), "client settings need the role client"))
        for i, gen in enumerate(self.clients):
            if gen.site not in self.sites:
                out.append((("clients", i, "site"), f"unknown site '{gen.site}'"))
            elif gen.collection and gen.collection not in self.sites[gen.site].collections:
                out.append(
                    (("clients", i, "collection"), f"no collection '{gen.collection}' in its site")
                )
        prefixes = tuple(g.prefix for g in self.clients)
        for i, fault in enumerate(self.faults):
            if fault.host not in self.hosts and not (prefixes and fault.host.startswith(prefixes)):
                out.append((("faults", i, "host"), f"fault names unknown host '{fault.host}'"))
        return out


def default_lab_path() -> Path:
    """The lab file shipped with the package."""
    return Path(str(resources.files("cmrunbook_lab").joinpath(DEFAULT_LAB)))


def load_lab_file(path: Path | None = None) -> LabFile:
    """Load and validate a lab file (the packaged default when no path is given)."""
    path = path or default_lab_path()
    data, smap = load_yaml(path)
    lab = parse(LabFile, data, smap)
    problems = [smap.problem(where, what) for where, what in lab.problems()]
    if problems:
        raise ConfigError(problems)
    return lab
