"""The SMS Provider's WMI classes as the lab's sites hold them, and the WQL the scripts send.

A script's query is read from the script (its class, its WHERE properties), its variable parts
filled with the values the script assigns, then answered here as WMI would: an unknown class is
`Invalid class "X"`, an unknown property `Invalid query`, so a template that names the wrong class
or property fails the way it would on a real site instead of being answered anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cmrunbook_lab.scripts import PSError, Script, Unrecognized
from cmrunbook_lab.site import wql_like

if TYPE_CHECKING:
    from cmrunbook_lab.site import SiteState
    from cmrunbook_lab.world import Lab


@dataclass(frozen=True)
class ClassSurface:
    """One SMS Provider class as the SDK documents it, per ConfigMgr version.

    `common` exists on 2007 and 2012 R2, `only_2007` / `only_2012r2` on one of them; `lazy` are
    returned only by a direct Get, null in query results. `source` is the reference's tag
    (shared/kb/SMS-PROVIDER.md) the lists come from."""

    source: str
    common: tuple[str, ...]
    only_2007: tuple[str, ...] = ()
    only_2012r2: tuple[str, ...] = ()
    lazy: tuple[str, ...] = ()

    def properties(self, version: str) -> frozenset[str]:
        """The property names of the class on a site of `version` (2007, or 2012 R2 and later)."""
        extra = self.only_2007 if version in ("2003", "2007") else self.only_2012r2
        return frozenset(p.lower() for p in (*self.common, *extra))

    def all_names(self) -> tuple[str, ...]:
        return (*self.common, *self.only_2007, *self.only_2012r2)


# SMS_PackageBaseclass (SMS-PROVIDER.md 1.2): the members every package class inherits.
_PACKAGE_BASE = (
    "ActionInProgress",
    "AlternateContentProviders",
    "Description",
    "ExtendedData",
    "ExtendedDataSize",
    "ForcedDisconnectDelay",
    "ForcedDisconnectEnabled",
    "ForcedDisconnectNumRetries",
    "Icon",
    "IconSize",
    "IgnoreAddressSchedule",
    "ISVData",
    "ISVDataSize",
    "Language",
    "LastRefreshTime",
    "Manufacturer",
    "MIFFilename",
    "MIFName",
    "MIFPublisher",
    "MIFVersion",
    "Name",
    "PackageID",
    "PackageType",
    "PkgFlags",
    "PkgSourceFlag",
    "PkgSourcePath",
    "PreferredAddressType",
    "Priority",
    "RefreshPkgSourceFlag",
    "RefreshSchedule",
    "ShareName",
    "ShareType",
    "SourceDate",
    "SourceSite",
    "SourceVersion",
    "StoredPkgPath",
    "StoredPkgVersion",
    "Version",
)
# 1.2/1.3: absent from the 2007 base class (cc146062), present in 2012 R2 (hh469117).
_PACKAGE_BASE_2012 = (
    "LocalizedCategoryInstanceNames",
    "NumOfPrograms",
    "PackageSize",
    "SecuredScopeNames",
    "SedoObjectVersion",
)
# 8: lazy members of the base class.
_PACKAGE_LAZY = (
    "AlternateContentProviders",
    "ExtendedData",
    "ExtendedDataSize",
    "IconSize",
    "ISVData",
    "ISVDataSize",
    "RefreshPkgSourceFlag",
    "RefreshSchedule",
)

#: The documented surface of each simulated class; a WHERE or a read of anything else fails.
SURFACE: dict[str, ClassSurface] = {
    "SMS_ImagePackage": ClassSurface(
        "SMS-PROVIDER.md 1.2-1.4, 8 [cc144889; cc146062; hh458231; hh469117]",
        (*_PACKAGE_BASE, "ImageDiskLayout", "ImageProperty"),
        only_2012r2=_PACKAGE_BASE_2012,
        lazy=(*_PACKAGE_LAZY, "ImageDiskLayout", "ImageProperty"),
    ),
    "SMS_BootImagePackage": ClassSurface(
        "SMS-PROVIDER.md 2.1, 8 [cc146094; hh458285; MD sms_bootimagepackage]",
        (
            *_PACKAGE_BASE,
            "Architecture",
            "BackgroundBitmapPath",
            "ContextID",
            "EnableLabShell",
            "ImageDiskLayout",
            "ImageIndex",
            "ImagePath",
            "ImageProperty",
            "ReferencedDrivers",
        ),
        only_2012r2=(
            *_PACKAGE_BASE_2012,
            "DefaultImage",
            "ImageOSVersion",
            "OptionalComponents",
            "PreExecCommandLine",
            "PreExecSourceDirectory",
            "ScratchSpace",
        ),
        lazy=(
            *_PACKAGE_LAZY,
            "BackgroundBitmapPath",
            "ContextID",
            "EnableLabShell",
            "ImageDiskLayout",
            "ImageIndex",
            "ImageProperty",
            "OptionalComponents",
            "PreExecCommandLine",
            "ReferencedDrivers",
            "ScratchSpace",
        ),
    ),
    "SMS_DistributionPoint": ClassSurface(
        "SMS-PROVIDER.md 3.1 [SR07 6d28a4d1; SR12R2 f639d294; ms815915; cc144580]",
        (
            "BitsEnabled",
            "IsPeerDP",
            "IsProtected",
            "ISVData",
            "ISVDataSize",
            "LastRefreshTime",
            "PackageID",
            "RefreshNow",
            "ResourceType",
            "ServerNALPath",
            "SiteCode",
            "SiteName",
            "SourceSite",
            "Status",
        ),
        only_2007=("IsFileStreaming",),
        only_2012r2=("ObjectTypeID", "PackageType", "SecureObjectID"),
        lazy=("ISVData", "ISVDataSize"),
    ),
    "SMS_PackageStatusDistPointsSummarizer": ClassSurface(
        "SMS-PROVIDER.md 6.1 [cc143014; hh442764]",
        (
            "LastCopied",
            "PackageID",
            "ServerNALPath",
            "SiteCode",
            "SourceNALPath",
            "SourceVersion",
            "State",
            "SummaryDate",
        ),
        only_2012r2=("PackageType", "SecuredTypeID", "SecureObjectID"),
    ),
    "SMS_PackageStatusRootSummarizer": ClassSurface(
        "SMS-PROVIDER.md 6.2 [cc143198; hh442650]",
        (
            "Failed",
            "Installed",
            "Name",
            "PackageID",
            "Retrying",
            "SourceCompressedSize",
            "SourceDate",
            "SourceSite",
            "SourceSize",
            "SourceVersion",
            "Targeted",
        ),
    ),
    "SMS_SystemResourceList": ClassSurface(
        "SMS-PROVIDER.md 4 [cc146487; hh458483]",
        ("NALPath", "ResourceType", "RoleName", "ServerName", "ServerRemoteName", "SiteCode"),
        only_2012r2=("InternetEnabled", "InternetShared", "SslState"),
    ),
    "SMS_SCI_SysResUse": ClassSurface(
        "SMS-PROVIDER.md 5.2 [cc144370; hh458450; SCD16 sms_sci_sysresuse]",
        (
            "FileType",
            "ItemName",
            "ItemType",
            "NALPath",
            "NALType",
            "NetworkOSPath",
            "PropLists",
            "Props",
            "RoleName",
            "SiteCode",
        ),
        only_2007=("InboxRoot",),
        only_2012r2=("RoleCount", "SslState", "Type"),
    ),
    "SMS_SiteControlFile": ClassSurface(
        "SMS-PROVIDER.md 5.1 [cc146139; SCD16 sms_sitecontrolfile]",
        ("BuildNumber", "FileType", "FormatVersion", "SCFData", "SerialNumber", "SiteCode"),
        lazy=("BuildNumber", "FormatVersion", "SCFData"),
    ),
    "SMS_R_System": ClassSurface(
        "SMS-PROVIDER.md 7.1 [cc145392 (2007 list cut short); MD sms_r_system]",
        (
            "Active",
            "ADSiteName",
            "AgentName",
            "AgentSite",
            "AgentTime",
            "Client",
            "ClientType",
            "ClientVersion",
            "CPUType",
            "CreationDate",
            "HardwareID",
            "IPAddresses",
            "IPSubnets",
            "LastLogonUserDomain",
            "LastLogonUserName",
            "MACAddresses",
            "Name",
            "NetbiosName",
            "Obsolete",
            "OperatingSystemNameandVersion",
            "PreviousSMSUUID",
            "ResourceDomainORWorkgroup",
            "ResourceId",
            "ResourceNames",
            "ResourceType",
            "SMSAssignedSites",
            "SMSInstalledSites",
            "SMSUniqueIdentifier",
            "SMSUUIDChangeDate",
            "SNMPCommunityName",
            "SystemContainerName",
            "SystemGroupName",
            "SystemOUName",
        ),
        only_2007=(
            "AMTFullVersion",
            "AMTStatus",
            "IPXAddresses",
            "IPXNetworkNumbers",
            "IsClientAMT30Compatible",
        ),
        only_2012r2=(
            "AlwaysInternet",
            "Decommissioned",
            "DistinguishedName",
            "InternetEnabled",
            "IPv6Addresses",
            "IPv6Prefixes",
            "IsVirtualMachine",
            "LastLogonTimestamp",
            "SID",
            "SMBIOSGUID",
            "SMSResidentSites",
        ),
    ),
    "SMS_G_System_SoftwareFile": ClassSurface(
        "SMS-PROVIDER.md 7.2 [cc144084; hh458054]",
        (
            "CreationDate",
            "FileCount",
            "FileDescription",
            "FileID",
            "FileModifiedDate",
            "FileName",
            "FilePath",
            "FileSize",
            "FileVersion",
            "ModifiedDate",
            "ProductId",
            "ResourceID",
        ),
    ),
    # docs/reference/FLEET-COMPLIANCE.md "Compliance states": the 2007 page's syntax [cc143662],
    # CIVersion and the user members on 2012 R2 [hh949173].
    "SMS_G_System_CI_ComplianceState": ClassSurface(
        "FLEET-COMPLIANCE.md [cc143662; hh949173]",
        (
            "CI_ID",
            "CI_UniqueID",
            "ComplianceState",
            "ComplianceStateName",
            "DesiredState",
            "IsApplicable",
            "IsDetected",
            "LastComplianceErrorID",
            "LocalizedDisplayName",
            "ResourceID",
            "SDMPackageVersion",
        ),
        only_2012r2=("CIVersion", "MaxNoncomplianceCriticality", "UserID", "UserName"),
    ),
    # 7.4: no SDK page; the names follow Win32_OperatingSystem (SMS 2.0 Administrator's Guide).
    "SMS_G_System_OPERATING_SYSTEM": ClassSurface(
        "SMS-PROVIDER.md 7.4 [practitioner; no SDK page]",
        ("ResourceID", "BuildNumber", "Caption", "CSDVersion", "Version"),
    ),
    "SMS_G_System_SYSTEM": ClassSurface(
        "SMS-PROVIDER.md 7.4 [cc145495]",
        (
            "Domain",
            "GroupID",
            "Name",
            "ResourceID",
            "RevisionID",
            "SMSID",
            "SystemRole",
            "SystemType",
            "TimeStamp",
        ),
    ),
    "SMS_ProviderLocation": ClassSurface(
        "SMS-PROVIDER.md 9 [cc145228; MD sms_providerlocation] (namespace root\\sms)",
        ("Machine", "NamespacePath", "ProviderForLocalSite", "SiteCode"),
    ),
    "SMS_G_System_LastSoftwareScan": ClassSurface(
        "SMS-PROVIDER.md 7.3 [cc143742]",
        ("ResourceID", "LastScanDate", "LastScanOpcode", "LastCollectedFileScanDate"),
    ),
    "SMS_Collection": ClassSurface(
        "SMS-PROVIDER.md 7.6 [cc145320; ms815946; hh442671]",
        (
            "CollectionID",
            "CollectionRules",
            "CollectionVariablesCount",
            "Comment",
            "CurrentStatus",
            "LastChangeTime",
            "LastMemberChangeTime",
            "LastRefreshTime",
            "MemberClassName",
            "Name",
            "OwnedByThisSite",
            "RefreshSchedule",
            "RefreshType",
            "ReplicateToSubSites",
            "ServiceWindowsCount",
        ),
        only_2012r2=(
            "CollectionType",
            "LimitToCollectionID",
            "LimitToCollectionName",
            "MemberCount",
        ),
        lazy=("CollectionRules",),
    ),
    "SMS_FullCollectionMembership": ClassSurface(
        "SMS-PROVIDER.md 7.5 [cc146287]",
        (
            "AMTFullVersion",
            "AMTStatus",
            "ClientType",
            "CollectionID",
            "Domain",
            "IsActive",
            "IsAlwaysInternet",
            "IsApproved",
            "IsAssigned",
            "IsBlocked",
            "IsClient",
            "IsDecommissioned",
            "IsDirect",
            "IsInternetEnabled",
            "IsObsolete",
            "Name",
            "ResourceID",
            "ResourceType",
            "SiteCode",
            "SMSID",
            "SuppressAutoProvision",
        ),
    ),
    # docs/reference/CONFIGURATION-BASELINES.md 4.1: the 2007 page's syntax; IsLatest and the
    # other base-class members from the 2012 R2 line (SMS_ConfigurationItemBaseClass).
    "SMS_ConfigurationItem": ClassSurface(
        "CONFIGURATION-BASELINES.md 4.1 [cc144352; MD sms_configurationitem, "
        "sms_configurationitembaseclass]",
        (
            "ApplicabilityCondition",
            "CategoryInstance_UniqueIDs",
            "CI_ID",
            "CI_UniqueID",
            "CIType_ID",
            "CIVersion",
            "CreatedBy",
            "DateCreated",
            "DateLastModified",
            "EffectiveDate",
            "EULAAccepted",
            "EULAExists",
            "EULASignoffDate",
            "EULASignoffUser",
            "IsBundle",
            "IsDigest",
            "IsEnabled",
            "IsExpired",
            "IsHidden",
            "IsQuarantined",
            "IsSuperseded",
            "IsUserDefined",
            "LastModifiedBy",
            "LocalizedCategoryInstanceNames",
            "LocalizedDescription",
            "LocalizedDisplayName",
            "LocalizedEulas",
            "LocalizedInformation",
            "LocalizedInformativeURL",
            "LocalizedPropertyLocaleID",
            "ModelName",
            "PermittedUses",
            "SDMPackageLocalizedData",
            "SDMPackageVersion",
            "SDMPackageXML",
        ),
        only_2012r2=(
            "ConfigurationFlags",
            "ExecutionContext",
            "IsLatest",
            "ModelID",
            "PlatformCategoryInstance_UniqueIDs",
            "PlatformType",
            "SecuredScopeNames",
            "SedoObjectVersion",
        ),
    ),
    # 4.2: the SMS_CIAssignmentBaseClass members of the CI assignment classes (inferred for
    # SMS_BaselineAssignment, whose own page was not found).
    "SMS_BaselineAssignment": ClassSurface(
        "CONFIGURATION-BASELINES.md 4.2 [MD how-to-list-configuration-assignments, "
        "sms_updatesassignment, sms_applicationassignment]",
        (
            "ApplyToSubTargets",
            "AssignedCIs",
            "AssignmentAction",
            "AssignmentDescription",
            "AssignmentID",
            "AssignmentName",
            "AssignmentType",
            "AssignmentUniqueID",
            "CreationTime",
            "DesiredConfigType",
            "DisableMomAlerts",
            "DPLocality",
            "Enabled",
            "EnforcementDeadline",
            "EvaluationSchedule",
            "ExpirationTime",
            "LastModificationTime",
            "LastModifiedBy",
            "LocaleID",
            "LogComplianceToWinEvent",
            "NonComplianceCriticality",
            "NotifyUser",
            "OverrideServiceWindows",
            "RaiseMomAlertsOnFailure",
            "RebootOutsideOfServiceWindows",
            "SendDetailedNonComplianceStatus",
            "SourceSite",
            "StartTime",
            "SuppressReboot",
            "TargetCollectionID",
            "UseGMTTimes",
        ),
    ),
}

#: The members of a .NET / PowerShell WMI object wrapper, which every instance has.
WRAPPER_MEMBERS = frozenset(
    m.lower()
    for m in (
        "PSObject",
        "Properties",
        "Path",
        "__PATH",
        "__CLASS",
        "__RELPATH",
        "ClassPath",
        "Scope",
        "Options",
        "SystemProperties",
        "Qualifiers",
    )
)


def surface(cls: str) -> tuple[str, ClassSurface]:
    """The documented class of that name (any case); `Invalid class` for any other."""
    name = next((c for c in SURFACE if c.lower() == cls.lower()), None)
    if name is None:
        raise PSError(f'Invalid class "{cls}"')
    return name, SURFACE[name]


def missing_property(prop: str) -> PSError:
    """What PowerShell 2.0 under Set-StrictMode -Version 2.0 says on a member the object lacks."""
    return PSError(f"Property '{prop}' cannot be found on this object. Make sure that it exists.")


def check_reads(text: str, var: str, cls: str, version: str) -> None:
    """Every `$var.Prop` in `text` must be a property of `cls` on a `version` site (or a member of
    the object wrapper); the first that is not fails as StrictMode 2.0 does. Method calls
    (`$var.Get()`) are not property reads."""
    _, cls_surface = surface(cls)
    props = cls_surface.properties(version)
    for m in re.finditer(rf"\${re.escape(var)}\.(?P<p>\w+)(?P<call>\s*\()?", text):
        name = m["p"]
        if m["call"] or name.lower() in props or name.lower() in WRAPPER_MEMBERS:
            continue
        raise missing_property(name)


def as_queried(cls: str, version: str, row: dict[str, Any]) -> dict[str, Any]:
    """An instance as a query returns it: without the properties the class lacks on this version,
    its lazy properties null (SMS-PROVIDER.md 8: "null/zero, which may not be the real value")."""
    _, cls_surface = surface(cls)
    props = cls_surface.properties(version)
    lazy = {p.lower() for p in cls_surface.lazy}
    known = {p.lower() for p in cls_surface.all_names()}
    out: dict[str, Any] = {}
    for key, value in row.items():
        k = key.lower()
        if k in known and k not in props:
            continue
        out[key] = None if k in lazy else value
    return out


_SELECT = re.compile(
    r"^\s*SELECT\s+\*\s+FROM\s+(?P<cls>\w+)(?:\s+WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_COND = re.compile(
    r"\s*(?P<prop>\w+)\s*(?P<op>=|LIKE)\s*(?P<val>'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|-?\d+)\s*",
    re.IGNORECASE,
)


def _unquote(text: str) -> str | int:
    if text[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return int(text)


def instances(lab: Lab, site: SiteState, cls: str) -> list[dict[str, Any]]:
    """Every instance of a class on the site's provider, as a query returns it; `Invalid class`
    for a class the SDK does not document."""
    name, _ = surface(cls)
    return [as_queried(name, site.version, r) for r in site.wmi_instances(name, lab)]


def query(lab: Lab, site: SiteState, wql: str) -> list[dict[str, Any]]:
    """Answer `SELECT * FROM Class [WHERE p = v AND p LIKE 'x' ...]` as WMI would."""
    m = _SELECT.match(wql)
    if m is None:
        raise PSError("Invalid query")
    rows = instances(lab, site, m["cls"])
    _, cls_surface = surface(m["cls"])
    on_site = cls_surface.properties(site.version)
    props = {p.lower(): p for p in cls_surface.all_names() if p.lower() in on_site}
    conds: list[tuple[str, str, str | int]] = []
    where = m["where"] or ""
    pos = 0
    while where and pos < len(where):
        c = _COND.match(where, pos)
        if c is None:
            raise PSError("Invalid query")
        if c["prop"].lower() not in props:
            raise PSError("Invalid query")
        conds.append((props[c["prop"].lower()], c["op"].upper(), _unquote(c["val"])))
        pos = c.end()
        if pos < len(where):
            conj = re.match(r"AND\s+", where[pos:], re.IGNORECASE)
            if conj is None:
                raise PSError("Invalid query")
            pos += conj.end()
    return [r for r in rows if all(_test(r.get(p), op, v) for p, op, v in conds)]


def _test(have: Any, op: str, want: str | int) -> bool:
    if have is None:
        return False
    if op == "LIKE":
        return wql_like(str(have), str(want))
    if isinstance(want, int) or isinstance(have, int):
        try:
            return int(have) == int(want)
        except (TypeError, ValueError):
            return False
    return str(have).lower() == str(want).lower()


def filter_query(cls: str, where: str | None) -> str:
    """The WQL of `Get-WmiObject -Class cls [-Filter where]`."""
    return f"SELECT * FROM {cls}" + (f" WHERE {where}" if where else "")


# -- reading a query out of the script -------------------------------------------------------


def balanced(text: str, start: int) -> str:
    """The text of the parenthesised group opening at `start`, without its parentheses."""
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise Unrecognized("unbalanced parentheses")


_TERM = re.compile(
    r"\s*(?:(?P<dq>\"[^\"$`]*\")|(?P<sq>'(?:[^']|'')*')"
    r"|(?P<wql>\(ConvertTo-CmrbWql(?P<like>Like)?\s+(?P<wqlarg>\$\w+(?:\.\w+)?)\))"
    r"|(?P<cast>\[string\]\[uint32\]|\[string\])?(?P<var>\$\w+(?:\.\w+)?))\s*"
)


def concat(expr: str, env: Mapping[str, Any]) -> str:
    """Evaluate a PowerShell string concatenation of literals, `$vars`, `ConvertTo-CmrbWql` and
    `ConvertTo-CmrbWqlLike` (templates/lib/sms.ps1.j2), as PowerShell would."""
    text = expr.strip()
    while text.startswith("(") and balanced(text, 0) == text[1:-1]:
        text = text[1:-1].strip()
    lowered = {k.lower(): v for k, v in env.items()}
    out: list[str] = []
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise Unrecognized(f"cannot read the string expression {expr!r}")
        if m["dq"]:
            out.append(m["dq"][1:-1])
        elif m["sq"]:
            out.append(m["sq"][1:-1].replace("''", "'"))
        else:
            name = (m["wqlarg"] or m["var"]).lower()
            if name not in lowered:
                raise Unrecognized(f"{name} has no value the lab knows")
            value = "" if lowered[name] is None else str(lowered[name])
            if m["wql"]:
                value = value.replace("\\", "\\\\").replace("'", "\\'")
            if m["like"]:
                value = value.replace("[", "[[]").replace("%", "[%]").replace("_", "[_]")
            out.append(value)
        pos = m.end()
        if pos >= len(text):
            return "".join(out)
        if text[pos] != "+":
            raise Unrecognized(f"cannot read the string expression {expr!r}")
        pos += 1


_CALL = re.compile(
    r"Get-WmiObject -Namespace \$CmrbNamespace "
    r"(?:-Class (?P<cls>\w+)(?: -Filter (?P<filter>[($]))?|-Query (?P<query>[($]))"
)


def wmi_calls(s: Script) -> list[tuple[int, str | None, str | None]]:
    """Each Get-WmiObject on the provider: (offset, class of -Class, -Filter/-Query expression).

    The expression is a parenthesised string expression or a `$variable`."""
    out: list[tuple[int, str | None, str | None]] = []
    for m in _CALL.finditer(s.body):
        opening = m["filter"] or m["query"]
        expr = None
        if opening == "(":
            expr = "(" + balanced(s.body, m.end() - 1) + ")"
        elif opening == "$":
            var = re.match(r"\$\w+", s.body[m.end() - 1 :])
            assert var is not None
            expr = var.group()
        out.append((m.start(), m["cls"], expr))
    return out


def run_call(
    lab: Lab,
    site: SiteState,
    s: Script,
    call: tuple[int, str | None, str | None],
    env: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Answer one of `wmi_calls`, with `env` the script's variables at that point."""
    offset, cls, expr = call
    text = _evaluate(s, offset, expr, env) if expr else None
    if cls is not None:
        return query(lab, site, filter_query(cls, text))
    assert text is not None
    return query(lab, site, text)


def _evaluate(s: Script, offset: int, expr: str, env: Mapping[str, Any]) -> str:
    """The string a -Filter/-Query expression holds at `offset`: a `$variable` from `env` or
    from its last assignment before that point, or a concatenation evaluated with `env`."""
    if not expr.startswith("$"):
        return concat(expr, env)
    lowered = {k.lower(): v for k, v in env.items()}
    if expr.lower() in lowered:
        return str(lowered[expr.lower()])
    found = [
        m
        for m in re.finditer(rf"^\s*{re.escape(expr)} = (?P<e>[^\n]+)$", s.body, re.M)
        if m.start() < offset
    ]
    if not found:
        raise Unrecognized(f"{expr} is not assigned")
    return concat(found[-1]["e"], env)


def call_after(
    s: Script, snippet: str, cls: str | None = None
) -> tuple[int, str | None, str | None]:
    """The first provider call after `snippet` in the body (optionally of a -Class)."""
    anchor = s.body.find(snippet)
    if anchor < 0:
        raise Unrecognized(f"no {snippet!r} in the script")
    for call in wmi_calls(s):
        if call[0] > anchor and (cls is None or call[1] == cls):
            return call
    raise Unrecognized(f"no Get-WmiObject after {snippet!r}")


def assigned(s: Script, var: str, after: str = "") -> str:
    """The right-hand side of the first `$var = ...` line after `after`."""
    start = s.body.find(after) if after else 0
    if start < 0:
        raise Unrecognized(f"no {after!r} in the script")
    m = re.compile(rf"^\s*\${var} = (?P<e>[^\n]+)$", re.M).search(s.body, start)
    if m is None:
        raise Unrecognized(f"${var} is not assigned")
    return m["e"]
