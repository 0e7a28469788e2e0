"""The multicast runbook's scripts (templates/multicast/ and templates/lib/) in the lab."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cmrunbook.lab import psfiles as pf
from cmrunbook.lab import wmi
from cmrunbook.lab.hosts import File, SimHost
from cmrunbook.lab.psexpr import ExprError, action_blocks, evaluate
from cmrunbook.lab.pslit import NotALiteral, parse_literal
from cmrunbook.lab.scripts import Context, PSError, Script, Unrecognized, not_recognized, operation
from cmrunbook.lab.site import SiteRole, SiteState, wql_like

_PKG_ID = re.compile(r"^[A-Za-z0-9]{8}$")


def provider_site(ctx: Context) -> SiteState:
    """The site whose SMS Provider namespace the script uses; it must live on this host."""
    code = str(ctx.script.input("CmrbSiteCode"))
    site = ctx.lab.sites.get(code.upper())
    if site is None or site.server != ctx.host.name:
        raise PSError(f'Invalid namespace "root\\sms\\site_{code}"')
    return site


def check_package_id(ctx: Context, var: str = "packageId") -> str:
    value = str(ctx.script.input(var))
    if ctx.script.has(f"Assert-CmrbPackageId ${var}") and not _PKG_ID.match(value):
        raise PSError(f"Not a ConfigMgr package ID: {value}")
    return value.upper()


def _multicast_images(site: SiteState, flag: int) -> list[dict[str, Any]]:
    return [
        {"PackageID": i["PackageID"], "Name": i["Name"], "SizeMB": round(i["PackageSize"] / 1024)}
        for i in site.images.values()
        if i["PkgFlags"] & flag
    ]


def _uses_image_lib(s: Script) -> bool:
    return s.has("function Get-CmrbMulticastImages", "-Class SMS_ImagePackage", "-band $Flag")


@operation(
    "multicast/probe_images",
    lambda s: (
        _uses_image_lib(s)
        and s.has("@(Get-CmrbMulticastImages -Flag $flag)")
        and not s.has("$limitMB")
    ),
)
def probe_images(ctx: Context) -> None:
    ctx.result.data = _multicast_images(provider_site(ctx), int(ctx.script.input("flag")))


@operation(
    "multicast/probe_large_image",
    lambda s: _uses_image_lib(s) and s.has("$limitMB", "$image.SizeMB -gt $limitMB"),
)
def probe_large_image(ctx: Context) -> None:
    images = _multicast_images(provider_site(ctx), int(ctx.script.input("flag")))
    limit = int(ctx.script.input("limitMB"))
    large = [
        f"{i['PackageID']} {i['Name']} ({i['SizeMB']} MB)" for i in images if i["SizeMB"] > limit
    ]
    ctx.result.data = bool(large)
    ctx.result.message = "Multicast images over the limit: " + ", ".join(large)


@operation(
    "multicast/probe_pxe_images",
    lambda s: s.has("-Class SMS_DistributionPoint -Filter $filter", "-Class SMS_BootImagePackage"),
)
def probe_pxe_images(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    env = {"$dpName": s.input("dpName"), "$share": s.input("share")}
    records = wmi.call_after(s, "$filter = ", "SMS_DistributionPoint")
    boots = wmi.call_after(s, "foreach ($record in", "SMS_BootImagePackage")
    found = []
    for rec in wmi.run_call(ctx.lab, site, s, records, env):
        record = {**env, "$record.PackageID": rec["PackageID"]}
        for boot in wmi.run_call(ctx.lab, site, s, boots, record):
            found.append({"PackageID": boot["PackageID"], "Name": boot["Name"]})
    ctx.result.data = found


@operation(
    "multicast/check_smswdstp",
    lambda s: s.has(
        "foreach ($candidate in $paths)",
        ".VersionInfo.FileVersion",
        "$required = [version]",
        "if ($version -lt $required) { $CmrbResult.ok = $false",  # the deciding line
    ),
)
def check_smswdstp(ctx: Context) -> None:
    s = ctx.script
    paths, install_dir = s.input("paths"), str(s.input("installDir"))
    required = str(s.input("required"))
    found = next(
        (p for p in (pf.expand_path(c, install_dir) for c in paths) if ctx.host.fs.get(p)),
        None,
    )
    if found is None:
        raise PSError(
            f"Smswdstp.dll was not found in any of: {'; '.join(paths)} (set smswdstp_paths)"
        )
    file = ctx.host.fs.get(found)
    assert file is not None
    version = (file.version or "0.0").split(" ")[0]
    ctx.result.data = {"path": found, "version": version, "required": required}
    if pf.text_key(version) < pf.text_key(required):
        ctx.result.ok = False
        ctx.result.message = (
            f"Smswdstp.dll is {version}, older than {required}: an OS image over 4 GB fails by "
            "multicast. Install the hotfix, or deploy the image by unicast or as a WIM under 4 GB "
            "(Workaround)."
        )


# -- OS image flags -----------------------------------------------------------------------------

_GUARD = re.compile(r"\(\[uint32\]\$image\.PkgFlags -band \$flag\) -(?P<op>ne|eq) 0")
_ASSIGN = re.compile(r"\$image\.PkgFlags = (?P<expr>[^\n]+)")


@operation(
    "multicast/image_multicast",
    lambda s: s.has("-Class SMS_ImagePackage -Filter", "$image.PkgFlags ="),
)
def image_multicast(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    flag = int(s.input("flag")) & 0xFFFFFFFF
    action = str(s.input("action"))
    package_id = check_package_id(ctx)
    call = wmi.call_after(s, "$packageId = ", "SMS_ImagePackage")
    matches = wmi.run_call(ctx.lab, site, s, call, {"$packageId": package_id})
    if not matches:  # Get-WmiObject returns $null: the script's first use of $image throws
        raise PSError(f"OS image {package_id} was not found on site {site.code}")
    stored = site.images[matches[0]["PackageID"]]
    before = stored["PkgFlags"]
    current = before  # the script's in-memory copy of the WMI object
    for actions, block in action_blocks(s.body):
        if action not in actions:
            continue
        if block.lstrip().startswith("$image.Get()"):
            current = stored["PkgFlags"]
        guard = _GUARD.search(block)
        assign = _ASSIGN.search(block)
        if guard is None or assign is None:
            raise Unrecognized("an image flag block without its PkgFlags test and assignment")
        is_set = bool(current & flag)
        if is_set != (guard["op"] == "ne"):
            continue
        try:
            current = evaluate(assign["expr"], {"$image.PkgFlags": current, "$flag": flag})
        except ExprError as exc:
            raise PSError(str(exc)) from exc
        if "$image.Put()" in block[assign.end() :]:
            old = stored["PkgFlags"]
            stored["PkgFlags"] = current
            ctx.lab.image_flags_changed(site, package_id, old, current, flag)
        if "$CmrbResult.changed = $true" in block:
            ctx.result.changed = True
    if re.search(r"^\$image\.Get\(\)\s*$", s.body, re.M):  # the top-level re-read
        current = stored["PkgFlags"]
    ctx.result.data = {"PackageID": package_id, "before": before, "after": current}


# -- site control file sessions -----------------------------------------------------------------


def _scf_lib(s: Script) -> bool:
    return s.has("function Open-CmrbScf", ".GetSessionHandle().SessionHandle",
                 "function Get-CmrbSiteRole",
                 "SMS_SCI_SysResUse")  # fmt: skip


class _Scf:
    """Open-/Close-CmrbScf, Get-/Save-/Restore-CmrbSiteRole as the script defines them."""

    def __init__(self, ctx: Context, site: SiteState) -> None:
        self.ctx, self.site, self.s = ctx, site, ctx.script
        self.can_commit = self.s.has("[void]$Session.scf.CommitSCF($CmrbSiteCode)")
        self.session = self.open()

    def open(self) -> Any:
        session = self.site.open_session()
        if self.s.has("$scf.RefreshSCF($CmrbSiteCode)"):
            self.site.refresh(session)
        return session

    def close(self, commit: bool) -> None:
        if commit and self.can_commit:
            removed, added = self.site.commit(self.session)
            self.ctx.lab.scf_committed(self.site, removed, added, self.s.step)

    def roles(self, role_name: str, server: str) -> list[SiteRole]:
        return [
            r for r in self.session.roles
            if r.SiteCode.lower() == self.site.code.lower()
            and r.RoleName.lower() == role_name.lower()
            and wql_like(r.NetworkOSPath, f"%{server}%")
        ]  # fmt: skip

    def delete(self, role: SiteRole) -> None:
        if not self.s.has("$role.Delete()"):
            raise Unrecognized("a role removal without $role.Delete()")
        self.session.roles = [r for r in self.session.roles if r.key() != role.key()]

    def save(self, role: SiteRole, backup_dir: str, label: str) -> str:
        if not self.s.has("$record | Export-Clixml -LiteralPath $file"):
            raise Unrecognized("Save-CmrbSiteRole without Export-Clixml")
        server: SimHost = self.ctx.host
        stamp = self.ctx.lab.clock.wall().strftime("%Y%m%d-%H%M%S")
        path = backup_dir.rstrip("\\") + f"\\{label}-{stamp}.xml"
        record = role.record()
        server.fs.mkdir(backup_dir)
        server.fs.put(File(path, data=bytearray(_clixml(record).encode("utf-8")), obj=record))
        return path

    def restore(self, backup_dir: str, label: str) -> str:
        saved = self.ctx.host.fs.list(backup_dir, f"{label}-*.xml")
        if not saved:
            raise PSError(
                f"No saved settings for {label} in {backup_dir}; "
                "add the role in the console instead."
            )
        if not self.s.has("$record = Import-Clixml -LiteralPath $saved[-1].FullName"):
            raise Unrecognized("Restore-CmrbSiteRole without Import-Clixml")
        latest = saved[-1]
        if self.s.has("[void]$role.Put()"):
            fields = {k: latest.obj[k] for k in SiteRole.__dataclass_fields__ if k in latest.obj}
            self.session.roles.append(SiteRole(**fields))
        return latest.path

    def remove_all(self, role: _RoleInputs, what: str) -> bool:
        """Save, then delete, every such role of the DP; True when there was one."""
        removed = False
        for found in self.roles(role.name, role.dp):
            saved = self.save(found, role.backup, role.label)
            self.delete(found)
            removed = self.ctx.result.changed = True
            self.ctx.result.message = f"{what} removed; settings saved to {saved}"
        return removed

    def add_saved(self, role: _RoleInputs, what: str) -> None:
        """Add the role back from its latest saved settings."""
        restored = self.restore(role.backup, role.label)
        self.ctx.result.changed = True
        self.ctx.result.message = f"{what} added from {restored}"


@dataclass(frozen=True)
class _RoleInputs:
    """What a role script is given: the action, the DP, the role and where its settings go."""

    action: str
    dp: str
    name: str
    backup: str
    label: str

    @classmethod
    def of(cls, s: Script) -> _RoleInputs:
        dp = str(s.input("dpName"))
        m = s.find(r"\$label = '(?P<prefix>[^']*)' \+ \$dpName")
        if m is None:
            raise Unrecognized("no $label = '<prefix>' + $dpName")
        return cls(
            str(s.input("action")), dp, str(s.input("roleName")), str(s.input("backupDir")),
            m["prefix"] + dp,
        )  # fmt: skip


@operation(
    "multicast/dp_multicast",
    lambda s: _scf_lib(s) and s.has("$roleName = ", "$label = 'multicast-role-'"),
)
def dp_multicast(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    role = _RoleInputs.of(s)
    blocks = action_blocks(s.body)
    removes = any(role.action in a and "Save-CmrbSiteRole" in b for a, b in blocks)
    adds = any(role.action in a and "Restore-CmrbSiteRole" in b for a, b in blocks)
    scf = _Scf(ctx, site)
    commit = False
    try:
        if removes:
            commit = scf.remove_all(role, "multicast role")
        if (
            role.action == "toggle"
            and commit
            and s.has("Close-CmrbScf -Session $session -Commit $true $session = Open-CmrbScf")
        ):
            scf.close(True)
            scf.session = scf.open()
            commit = False
        if adds and not scf.roles(role.name, role.dp):
            scf.add_saved(role, "multicast role")
            commit = True
    finally:
        scf.close(commit)


@operation("multicast/pxe_role", lambda s: _scf_lib(s) and s.has("$label = 'pxe-role-'"))
def pxe_role(ctx: Context) -> None:
    role = _RoleInputs.of(ctx.script)
    scf = _Scf(ctx, provider_site(ctx))
    commit = False
    try:
        if role.action == "uninstall":
            commit = scf.remove_all(role, "PXE service point")
        elif not scf.roles(role.name, role.dp):
            scf.add_saved(role, "PXE service point")
            commit = True
    finally:
        scf.close(commit)


@operation(
    "multicast/pxe_boot_image",
    lambda s: s.has(
        '-Class SMS_DistributionPoint -Filter ("PackageID=\'"', "SMS_SystemResourceList"
    ),
)
def pxe_boot_image(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    action, dp, share = str(s.input("action")), str(s.input("dpName")), str(s.input("share"))
    package_id = check_package_id(ctx)
    env = {"$packageId": package_id, "$dpName": dp, "$share": share}
    env["$like"] = wmi.concat(wmi.assigned(s, "like"), env)
    records = wmi.run_call(
        ctx.lab, site, s, wmi.call_after(s, "$like = ", "SMS_DistributionPoint"), env
    )
    if action == "remove":
        if records and not s.has("$record.Delete()"):
            raise Unrecognized("a boot image removal without $record.Delete()")
        for rec in records:
            site.dp_records.remove(rec)
            ctx.result.changed = True
    elif not records:
        resources = wmi.run_call(
            ctx.lab,
            site,
            s,
            wmi.call_after(s, "elseif ($records.Count", "SMS_SystemResourceList"),
            env,
        )
        if not resources:
            raise PSError(
                f"No {share} distribution point found on {dp}; is the PXE service point installed?"
            )
        if s.has("[void]$new.Put()"):
            site.add_dp_record(package_id, resources[0]["NALPath"])
        ctx.result.changed = True
    ctx.result.data = {"PackageID": package_id, "action": action}


# -- WDS -----------------------------------------------------------------------------------------

_SERVER_RANK = {"2008": 0, "2008r2": 1, "2012": 2, "2012r2": 3, "2016": 4, "2019": 5, "2022": 6}


def _rank(host: SimHost) -> int:
    return _SERVER_RANK.get(host.os_version, -1)


def _names(s: Script, var: str) -> list[str]:
    value = s.input(var)
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@operation(
    "multicast/wds_feature",
    lambda s: (
        s.has("$roleServices = ", "$role = ") and s.any("WindowsFeature", "ServerManagerCmd.exe")
    ),
)
def wds_feature(ctx: Context) -> None:
    s = ctx.script
    action = str(s.input("action"))
    if s.has("& ServerManagerCmd.exe $verb $name"):
        _servermanagercmd(ctx, action)
    elif s.any("Get-WindowsFeature -Name"):
        _feature_cmdlets(ctx, action)
    else:
        m = s.find(r"throw \('WDS cannot be changed by script on Windows ' \+ '(?P<os>[^']*)'")
        if m:
            raise PSError(
                f"WDS cannot be changed by script on Windows {m['os']}: "
                "use Add or Remove Windows Components by hand."
            )
        raise Unrecognized("no WDS mechanism found")
    ctx.result.data = {"action": action, "reboot_required": ctx.result.reboot_required}


def _servermanagercmd(ctx: Context, action: str) -> None:
    host, s = ctx.host, ctx.script
    if _rank(host) not in (0, 1):
        raise not_recognized("ServerManagerCmd.exe")
    if action == "uninstall":
        m = s.find(r"\$names = @\(\$(?P<var>\w+)\)\s*\n\s*\$verb = '-remove'")
        names, verb = (_names(s, m["var"]) if m else []), "-remove"
    else:
        m = s.find(r"\$names = \$(?P<var>\w+)\s*\n\s*\$verb = '-install'")
        names, verb = (_names(s, m["var"]) if m else []), "-install"
    if m is None:
        raise Unrecognized("ServerManagerCmd.exe without the $names/$verb it runs")
    for name in names:
        if verb == "-remove":
            changed, restart = ctx.lab.remove_features(host, [name])
            error = None
        else:
            changed, restart, error = ctx.lab.add_features(host, [name])
        if error:
            raise PSError(f"ServerManagerCmd {verb} {name} failed with exit code 1001: {error}")
        if changed:
            ctx.result.changed = True
            ctx.result.reboot_required = ctx.result.reboot_required or restart


def _feature_cmdlets(ctx: Context, action: str) -> None:
    host, s = ctx.host, ctx.script
    rank = _rank(host)
    if s.has("Import-Module ServerManager") and rank < 1:
        raise PSError(
            "The specified module 'ServerManager' was not loaded because no valid module file was "
            "found in any module directory."
        )
    imported = rank >= 2 or (rank == 1 and s.has("Import-Module ServerManager"))
    if not imported:
        raise not_recognized("Get-WindowsFeature")
    verbs = ("Remove", "Uninstall") if action == "uninstall" else ("Add", "Install")
    m = s.find(
        rf"\$result = (?P<cmd>(?:{verbs[0]}|{verbs[1]})-WindowsFeature) -Name \$(?P<var>\w+)"
    )
    if m is None:
        raise Unrecognized(f"no {verbs[0]}-/{verbs[1]}-WindowsFeature call")
    names = _names(s, m["var"])
    if action == "uninstall":
        wanted = set(names) | ({"WDS-Deployment", "WDS-Transport"} if "WDS" in names else set())
        if not host.features & wanted:
            return
    elif all(n in host.features for n in names):
        return
    cmd = m["cmd"]
    if cmd.startswith(("Install", "Uninstall")) and rank < 2:
        raise not_recognized(cmd)
    if action == "uninstall":
        _, restart = ctx.lab.remove_features(host, names)
        error = None
    else:
        _, restart, error = ctx.lab.add_features(host, names)
    if error:
        raise PSError(f"Installing {', '.join(names)} failed: Failed")
    ctx.result.changed = True
    ctx.result.reboot_required = restart


# -- verification ---------------------------------------------------------------------------------


@operation(
    "multicast/verify_dp",
    lambda s: s.has("Get-Service -Name", "foreach ($path in $keyPaths)"),
)
def verify_dp(ctx: Context) -> None:
    """WDSServer's state, and the multicast key's values in each registry view the script reads.

    The lab answers for the keys the script names ($keyPaths): a script that reads only the
    64-bit view of an x64 ConfigMgr 2007 DP finds no key there, as on a real one.
    """
    s, host = ctx.script, ctx.host
    paths = [str(p) for p in s.input("keyPaths")]
    service = s.find(r"Get-Service -Name '(?P<name>[^']+)'")
    names_m = s.find(r"foreach \(\$name in (?P<list>@\([^)]*\))\)")
    if service is None or names_m is None or not s.has("$found = $view"):
        raise Unrecognized("verify without a service name, value names or the first key found")
    try:
        serialized, signed = parse_literal(names_m["list"])
    except (NotALiteral, ValueError) as exc:
        raise Unrecognized(f"verify value names: {exc}") from exc
    broken: list[str] = []
    status = host.services.get(service["name"])
    if status is None:
        broken.append(f"the {service['name']} service is not installed")
    elif status != "Running":
        broken.append(f"the {service['name']} service is {status}")
    views: list[dict[str, Any]] = []
    for path in paths:
        view: dict[str, Any] = {"path": path, "exists": host.registry.key_exists(path)}
        if view["exists"]:
            for name in (serialized, signed):
                view[name] = len(str(host.registry.get(path, name) or ""))
        views.append(view)
    found = next((v for v in views if v["exists"]), None)
    if found is not None and found[serialized] == 0:
        broken.append(f"{serialized} is empty in {found['path']}")
    r = ctx.result
    if broken:
        verdict, r.message = "broken", "multicast is still broken: " + "; ".join(broken)
    elif found is None:
        verdict = "unknown"
        r.message = "cannot tell: no multicast key in " + " nor ".join(paths)
    elif found[signed] == 0:
        verdict = "not-settled"
        r.message = (
            f"not settled: {serialized} is written but {signed} is still empty in "
            f"{found['path']} (the MP has not signed it yet)"
        )
    else:
        verdict = "healthy"
        r.message = (
            "multicast works: WDSServer is running; the multicast key is signed in " + found["path"]
        )
    r.ok = verdict == "healthy"
    r.data = {"verdict": verdict, "problems": broken, "views": views}


def _clixml(record: dict[str, Any]) -> str:
    """A readable Export-Clixml rendering of a role record (a Hashtable)."""
    from xml.sax.saxutils import escape

    entries = "".join(
        f'<En><S N="Key">{escape(str(k))}</S><S N="Value">{escape(str(v))}</S></En>'
        for k, v in record.items()
    )
    return (
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>'
        f"<DCT>{entries}</DCT></Obj></Objs>"
    )
