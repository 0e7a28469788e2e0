"""The multicast runbook's scripts (templates/multicast/ and templates/lib/) in the lab."""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from cmrunbook_lab import psfiles as pf
from cmrunbook_lab import wmi
from cmrunbook_lab.hosts import File, SimHost, norm_path
from cmrunbook_lab.psexpr import ExprError, action_blocks, evaluate
from cmrunbook_lab.pslit import NotALiteral, parse_literal
from cmrunbook_lab.scripts import (
    Context,
    Operations,
    PSError,
    Script,
    Unrecognized,
    not_recognized,
)
from cmrunbook_lab.sims.provider import check_package_id, provider_site
from cmrunbook_lab.site import ScfSession, SiteRole, SiteState, nal_server, nal_share

OPERATIONS = Operations()


def _function_text(s: Script, name: str) -> str:
    """The text of `function name { ... }` in the script ('' when it is not defined)."""
    start = s.body.find(f"function {name} {{")
    if start < 0:
        return ""
    end = s.body.find("\n}\n", start)
    return s.body[start : end if end > 0 else len(s.body)]


def _multicast_images(ctx: Context, flag: int) -> list[dict[str, Any]]:
    """Get-CmrbMulticastImages as the script defines it: every property it reads from the
    queried SMS_ImagePackage must exist on the site's version (StrictMode 2.0), and the size comes
    from where the script takes it."""
    site = provider_site(ctx)
    fn = _function_text(ctx.script, "Get-CmrbMulticastImages")
    wmi.check_reads(fn, "image", "SMS_ImagePackage", site.version)
    by_summary = "-Class SMS_PackageStatusRootSummarizer" in fn and "$summary[0].SourceSize" in fn
    sizes = {
        r["PackageID"]: r["SourceSize"]
        for r in wmi.instances(ctx.lab, site, "SMS_PackageStatusRootSummarizer")
    }
    out = []
    for image in wmi.instances(ctx.lab, site, "SMS_ImagePackage"):
        if not image["PkgFlags"] & flag:
            continue
        size_kb = sizes.get(image["PackageID"]) if by_summary else image.get("PackageSize")
        size_mb = round(size_kb / 1024) if size_kb is not None else -1
        out.append({"PackageID": image["PackageID"], "Name": image["Name"], "SizeMB": size_mb})
    return out


def _uses_image_lib(s: Script) -> bool:
    return s.has("function Get-CmrbMulticastImages", "-Class SMS_ImagePackage", "-band $Flag")


@OPERATIONS.add(
    "multicast/probe_images",
    lambda s: (
        _uses_image_lib(s)
        and s.has("@(Get-CmrbMulticastImages -Flag $flag)")
        and not s.has("$limitMB")
    ),
)
def probe_images(ctx: Context) -> None:
    ctx.result.data = _multicast_images(ctx, int(ctx.script.input("flag")))


@OPERATIONS.add(
    "multicast/probe_large_image",
    lambda s: _uses_image_lib(s) and s.has("$limitMB", "$image.SizeMB -gt $limitMB"),
)
def probe_large_image(ctx: Context) -> None:
    images = _multicast_images(ctx, int(ctx.script.input("flag")))
    limit = int(ctx.script.input("limitMB"))
    large = [
        f"{i['PackageID']} {i['Name']} ({i['SizeMB']} MB)" for i in images if i["SizeMB"] > limit
    ]
    unknown = [f"{i['PackageID']} {i['Name']}" for i in images if i["SizeMB"] < 0]
    if unknown and not ctx.script.has("if ($image.SizeMB -lt 0)"):
        raise Unrecognized("a size check without the unknown-size case")
    ctx.result.data = bool(large or unknown)
    ctx.result.message = "Multicast images over the limit: " + ", ".join(large)
    if unknown:
        ctx.result.message += "; of unknown size (no package status summary): " + ", ".join(unknown)


# -- exact server identity (lib/sms.ps1.j2) -----------------------------------------------------


@dataclass(frozen=True)
class _Server:
    """New-CmrbServerIdentity: the DP's FQDN ('' when unknown) and NetBIOS name."""

    fqdn: str
    netbios: str

    @property
    def display(self) -> str:
        return self.fqdn or self.netbios

    @classmethod
    def of(cls, s: Script) -> _Server:
        if not s.has(
            "function New-CmrbServerIdentity",
            "function Test-CmrbServerName",
            "[string]::Equals($Name, $Server.fqdn, [StringComparison]::OrdinalIgnoreCase)",
            "$server = New-CmrbServerIdentity -Address $dpAddress -NetbiosName $dpNetbiosName",
        ):
            raise Unrecognized("no exact server identity (New-CmrbServerIdentity)")
        address, netbios = str(s.input("dpAddress")), str(s.input("dpNetbiosName"))
        ip = re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", address) is not None
        if ip and not netbios:
            raise PSError(
                f"The inventory address {address} is an IP address: set dp_netbios_name for this "
                "host so that its site control file entries can be found by name."
            )
        fqdn = address if "." in address and not ip else ""
        return cls(fqdn, netbios or address.split(".")[0])

    def names(self, server: str) -> bool:
        """Test-CmrbServerName: is `server` (from a NAL path) this server, exactly?"""
        if not server:
            return False
        if "." in server:
            if self.fqdn:
                return server.lower() == self.fqdn.lower()
            return server.split(".")[0].lower() == self.netbios.lower()
        return server.lower() == self.netbios.lower()

    def nal(self, nal: str, share: str) -> bool:
        """Test-CmrbNalPath: this server and exactly this share."""
        return self.names(nal_server(nal)) and nal_share(nal).lower() == share.lower()


@OPERATIONS.add(
    "multicast/probe_pxe_images",
    lambda s: s.has(
        "-Class SMS_DistributionPoint)",
        "Test-CmrbNalPath -NalPath ([string]$record.ServerNALPath)",
        "-Class SMS_BootImagePackage",
    ),
)
def probe_pxe_images(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    server, share = _Server.of(s), str(s.input("share"))
    found = []
    for rec in wmi.instances(ctx.lab, site, "SMS_DistributionPoint"):
        if not server.nal(rec["ServerNALPath"], share):
            continue
        boot = site.boot_images.get(rec["PackageID"])
        if boot is not None:
            found.append({"PackageID": boot["PackageID"], "Name": boot["Name"]})
    ctx.result.data = found


@OPERATIONS.add(
    "multicast/check_smswdstp",
    lambda s: s.has(
        "foreach ($drive in [System.IO.DriveInfo]::GetDrives())",
        "if ($arch -ne 'x64' -and $candidate -match '\\\\x64\\\\') { continue }",
        "$check = Test-CmrbFileVersion -Path $found -Required $required",
        "elseif ($check.status -ne 'ok') { $CmrbResult.ok = $false",  # the deciding line
    ),
)
def check_smswdstp(ctx: Context) -> None:
    s, host = ctx.script, ctx.host
    pf.require(s, pf.VERSION_LIB, "ConvertTo-CmrbVersion", "Test-CmrbFileVersion")
    paths, arch = [str(p) for p in s.input("paths")], str(s.input("arch"))
    required = str(s.input("required"))
    # The host's fixed drives: C: and every drive one of its files is on.
    drives = sorted({"C:"} | {f.path[:2].upper() for f in host.fs.files.values()})
    candidates: list[str] = []
    for candidate in paths:
        if arch != "x64" and re.search(r"\\x64\\", candidate):
            continue
        if "{drive}" in candidate:
            candidates += [candidate.replace("{drive}", d) for d in drives]
        else:
            candidates.append(candidate)
    found = next((c for c in candidates if pf.leaf(host.fs, c) is not None), None)
    if found is None:
        raise PSError(
            f"Smswdstp.dll was not found in any of: {'; '.join(candidates)} (set smswdstp_paths)"
        )
    want = pf.version_tuple(required)
    assert want is not None
    check = pf.test_file_version(host.fs, found, want)
    ctx.result.data = {"path": found, "version": check["version"], "required": required}
    if check["status"] == "unreadable":
        ctx.result.ok = False
        ctx.result.message = (
            f"Smswdstp.dll at {found} has no readable file version: check it by hand."
        )
    elif check["status"] != "ok":
        ctx.result.ok = False
        ctx.result.message = (
            f"Smswdstp.dll is {check['version']}, older than {required}: an OS image over 4 GB "
            "fails by multicast. Install the hotfix, or deploy the image by unicast or as a WIM "
            "under 4 GB (Workaround)."
        )


# -- OS image flags -----------------------------------------------------------------------------

_GUARD = re.compile(r"\(\[uint32\]\$image\.PkgFlags -band \$flag\) -(?P<op>ne|eq) 0")
_ASSIGN = re.compile(r"\$image\.PkgFlags = (?P<expr>[^\n]+)")
_LAZY_LOST = ("ImageProperty", "RefreshSchedule")


@OPERATIONS.add(
    "multicast/image_multicast",
    lambda s: s.has("-Class SMS_ImagePackage -Filter", "$image.PkgFlags ="),
)
def image_multicast(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    wmi.check_reads(s.body, "image", "SMS_ImagePackage", site.version)
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
    blocks = action_blocks(s.body)
    first_block = s.body.find("if ($action -eq")
    # A query result lacks its lazy properties until Get() re-reads the object.
    complete = bool(re.search(r"^\$image\.Get\(\)\s*$", s.body[:first_block], re.M))
    for actions, block in blocks:
        if action not in actions:
            continue
        if block.lstrip().startswith("$image.Get()"):
            current, complete = stored["PkgFlags"], True
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
            if not complete:
                # Put() of a query result writes its null lazy properties back (the practitioner
                # reports in SMS-PROVIDER.md 8: "can corrupt the object").
                lost = {k: stored[k] for k in _LAZY_LOST if stored.get(k) is not None}
                for k in _LAZY_LOST:
                    stored[k] = None
                ctx.lab.record_change(
                    site.server,
                    "OS image lazy properties written back empty",
                    package_id=package_id,
                    lost=sorted(lost),
                )
            ctx.lab.image_flags_changed(site, package_id, old, current, flag)
        if "$CmrbResult.changed = $true" in block:
            ctx.result.changed = True
    if re.search(r"^\$image\.Get\(\)\s*$", s.body[max(first_block, 0) :], re.M):
        current = stored["PkgFlags"]  # the closing re-read
    ctx.result.data = {"PackageID": package_id, "before": before, "after": current}


@OPERATIONS.add(
    "multicast/image_flag_wait",
    lambda s: s.has(
        "$marker = Join-Path $backupDir ('image-multicast-wait-' + "
        "$server.netbios.ToLowerInvariant() + '.txt')",
        "if ($elapsed -lt $waitSeconds)",
    ),
)
def image_flag_wait(ctx: Context) -> None:
    """The wait between clearing and setting the multicast option, on the lab's clock."""
    s, host = ctx.script, ctx.host
    server = _Server.of(s)
    wait = int(s.input("waitSeconds"))
    backup = str(s.input("backupDir")).rstrip("\\")
    marker = backup + f"\\image-multicast-wait-{server.netbios.lower()}.txt"
    now = ctx.lab.clock.wall()
    file = host.fs.get(marker)
    if file is None:
        host.fs.mkdir(backup)
        file = host.fs.put(File(marker, data=bytearray(now.isoformat().encode("utf-8"))))
        ctx.lab.record_change(host.name, "file written", path=marker)
    started = datetime.fromisoformat(bytes(file.data or b"").decode("utf-8"))
    elapsed = (now - started).total_seconds() * ctx.lab.speed  # lab time runs `speed` x
    ctx.result.data = {"started": started.isoformat(), "elapsed": int(elapsed), "wait": wait}
    if elapsed < wait:
        ctx.result.ok = False
        ctx.result.message = (
            f"waiting for distribution manager: {int(wait - elapsed)} s of {wait} s left"
        )
    else:
        host.fs.remove(marker)
        ctx.lab.record_change(host.name, "file removed", path=marker)
        ctx.result.message = f"waited {int(elapsed)} s since the multicast option was cleared"


# -- site control file sessions -----------------------------------------------------------------
#
# 2007 SDK (GetSessionHandle cc145509; context qualifiers, MD develop/core/understand/context-
# qualifiers): the SessionHandle context goes with every call on the site control file; a call
# without it works on the unprotected global copy, and CommitSCF (cc144568) writes only the
# session's changes to the database. So here a Put/Delete without the handle is recorded as a
# write to the global copy and never reaches the site: no role is added or removed, and the
# setup-log waits that follow see nothing.


def _scf_lib(s: Script) -> bool:
    return s.has(
        "function Open-CmrbScf",
        "'GetSessionHandle'",
        "function Get-CmrbSiteRole",
        "SMS_SCI_SysResUse",
    )


class _Scf:
    """Open-/Close-CmrbScf, Get-/Save-/Restore-CmrbSiteRole as the script defines them."""

    def __init__(self, ctx: Context, site: SiteState, server: _Server) -> None:
        self.ctx, self.site, self.s, self.server = ctx, site, ctx.script, server
        s = self.s
        self.context = s.has(
            "$context.Add('SessionHandle', $handle)", "$options.Context = $Session.context"
        )
        invoke = self.context and s.has(
            "$Session.scf.InvokeMethod($Name, $inParams, "
            "(New-CmrbScfOptions -Session $Session -Type 'InvokeMethodOptions'))"
        )
        self.refresh_in_session = invoke and s.has(
            "Invoke-CmrbScfMethod -Session $session -Name 'RefreshSCF'"
        )
        self.commit_in_session = invoke and s.has(
            "Invoke-CmrbScfMethod -Session $Session -Name 'CommitSCF'"
        )
        self.query_in_session = self.context and s.has(
            "(New-CmrbScfOptions -Session $Session -Type 'EnumerationOptions')"
        )
        self.delete_in_session = self.context and s.has(
            ".Delete((New-CmrbScfOptions -Session $session -Type 'DeleteOptions'))"
        )
        self.put_in_session = self.context and s.has(
            "$role.Put((New-CmrbScfOptions -Session $Session -Type 'PutOptions'))"
        )
        self.session = self.open()

    def open(self) -> ScfSession:
        return self.site.open_session("{" + str(uuid.uuid4()).upper() + "}")

    def close(self, commit: bool) -> None:
        if commit and self.commit_in_session:
            removed, added = self.site.commit(self.session)
            self.ctx.lab.scf_committed(self.site, removed, added, self.s.step)

    def _outside(self, what: str, role: SiteRole) -> None:
        self.ctx.lab.record_change(
            self.site.server,
            f"site control file: {what} without the session handle (global copy; not committed)",
            role=role.RoleName,
            nal_path=role.NALPath,
        )

    def roles(self, role_name: str) -> list[SiteRole]:
        """Get-CmrbSiteRole and Assert-CmrbOneRole: the entries of the role naming the server."""
        source = self.session.roles if self.query_in_session else self.site.scf
        found = [
            r
            for r in source
            if r.SiteCode.lower() == self.site.code.lower()
            and r.RoleName.lower() == role_name.lower()
            and r.FileType == 2
            and self.server.names(r.server())
        ]
        asserts = self.s.has("if ($Roles.Count -gt 1) {", "Assert-CmrbOneRole -Roles $roles")
        if len(found) > 1 and asserts:
            raise PSError(
                f"Refusing to change {role_name}: {len(found)} site control file entries name "
                f"{self.server.display} ({'; '.join(r.NALPath for r in found)})"
            )
        return found

    def delete(self, role: SiteRole) -> None:
        if not self.delete_in_session:
            self._outside("Delete", role)
            return
        self.session.roles = [r for r in self.session.roles if r.key() != role.key()]

    def save(self, role: SiteRole, backup_dir: str, label: str) -> str:
        if not self.s.has("$record | Export-Clixml -LiteralPath $file", "PropLists = $lists"):
            raise Unrecognized("Save-CmrbSiteRole without Export-Clixml of Props and PropLists")
        server: SimHost = self.ctx.host
        stamp = self.ctx.lab.clock.wall().strftime("%Y%m%d-%H%M%S")
        base = backup_dir.rstrip("\\") + f"\\{label}-{stamp}"
        path, n = base + ".xml", 1
        unique = self.s.has("while (Test-Path -LiteralPath $file) {")
        while unique and server.fs.get(path) is not None:
            n += 1
            path = f"{base}-{n}.xml"
        record = {
            k: copy.deepcopy(getattr(role, k))
            for k in ("RoleName", "NALPath", "NALType", "SiteCode", "Props", "PropLists")
        }
        server.fs.mkdir(backup_dir)
        server.fs.put(File(path, data=bytearray(_clixml(record).encode("utf-8")), obj=record))
        self.ctx.lab.record_change(server.name, "file written", path=path)
        return path

    def restore(self, backup_dir: str, label: str, role_name: str) -> str:
        # Sort-Object LastWriteTime, Name: the file system keeps files in the order written.
        written = {key: n for n, key in enumerate(self.ctx.host.fs.files)}
        saved = sorted(
            self.ctx.host.fs.list(backup_dir, f"{label}-*.xml"),
            key=lambda f: written[norm_path(f.path)],
        )
        if not saved:
            raise PSError(
                f"No saved settings for {label} in {backup_dir}; "
                "add the role in the console instead."
            )
        if not self.s.has("$record = Import-Clixml -LiteralPath $saved[-1].FullName"):
            raise Unrecognized("Restore-CmrbSiteRole without Import-Clixml")
        latest = saved[-1]
        record = latest.obj
        if not self.server.names(nal_server(record["NALPath"])):
            raise PSError(
                f"Refusing to restore {latest.path}: it is the role of {record['NALPath']}, "
                f"not of {self.server.display}"
            )
        # ItemName/ItemType are read-only keys the provider derives (SMS-PROVIDER.md 5.2: RO
        # [key, read]; the SDK's create sample cc144681 never sets them): writing them fails.
        if self.s.has("$role['ItemName'] =") or self.s.has("'ItemName', 'ItemType'"):
            raise PSError('Failed to put the instance: "ItemName" is a read-only key property')
        keeps_lists = self.s.has("$role['PropLists'] = ")
        role = SiteRole(
            RoleName=record["RoleName"],
            NALPath=record["NALPath"],
            NetworkOSPath="\\\\" + nal_server(record["NALPath"]),
            SiteCode=record["SiteCode"],
            NALType=record["NALType"],
            ItemName=f"{record['NALPath']},{record['RoleName']}",
            Props=copy.deepcopy(record["Props"]),
            PropLists=copy.deepcopy(record["PropLists"]) if keeps_lists else [],
        )
        if not self.put_in_session:
            self._outside("Put", role)
        else:
            self.session.roles.append(role)
        return latest.path

    def remove_one(self, role: _RoleInputs, what: str) -> bool:
        """Save, then delete, the one such role of the server; an error when there is none."""
        found = self.roles(role.name)
        if not found:
            raise PSError(
                f"No {role.name} entry names {self.server.display} in the site control file of "
                f"site {self.site.code}: nothing was changed (is the role registered under "
                "another name? set dp_netbios_name)"
            )
        saved = self.save(found[0], role.backup, role.label)
        self.delete(found[0])
        self.ctx.result.changed = True
        self.ctx.result.message = (
            f"{what} of {self.server.display} removed; settings saved to {saved}"
        )
        return True

    def add_saved(self, role: _RoleInputs, what: str) -> None:
        """Add the role back from its latest saved settings."""
        restored = self.restore(role.backup, role.label, role.name)
        self.ctx.result.changed = True
        self.ctx.result.message = f"{what} of {self.server.display} added from {restored}"


@dataclass(frozen=True)
class _RoleInputs:
    """What a role script is given: the action, the role and where its settings go."""

    action: str
    name: str
    backup: str
    label: str

    @classmethod
    def of(cls, s: Script, server: _Server) -> _RoleInputs:
        m = s.find(r"\$label = '(?P<prefix>[^']*)' \+ \$server\.netbios\.ToLowerInvariant\(\)")
        if m is None:
            raise Unrecognized("no $label = '<prefix>' + $server.netbios")
        return cls(
            str(s.input("action")),
            str(s.input("roleName")),
            str(s.input("backupDir")),
            m["prefix"] + server.netbios.lower(),
        )


@OPERATIONS.add(
    "multicast/dp_multicast",
    lambda s: _scf_lib(s) and s.has("$roleName = ", "$label = 'multicast-role-'"),
)
def dp_multicast(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    server = _Server.of(s)
    role = _RoleInputs.of(s, server)
    blocks = action_blocks(s.body)
    removes = any(role.action in a and "Save-CmrbSiteRole" in b for a, b in blocks)
    adds = any(role.action in a and "Restore-CmrbSiteRole" in b for a, b in blocks)
    scf = _Scf(ctx, site, server)
    commit = False
    try:
        present = scf.roles(role.name)
        if removes:
            commit = scf.remove_one(role, "multicast role")
            present = []
        if (
            role.action == "toggle"
            and commit
            and s.has("Close-CmrbScf -Session $session -Commit $true $session = Open-CmrbScf")
        ):
            scf.close(True)
            scf.session = scf.open()
            commit = False
        if adds and not present:
            scf.add_saved(role, "multicast role")
            commit = True
    finally:
        scf.close(commit)


@OPERATIONS.add("multicast/pxe_role", lambda s: _scf_lib(s) and s.has("$label = 'pxe-role-'"))
def pxe_role(ctx: Context) -> None:
    server = _Server.of(ctx.script)
    role = _RoleInputs.of(ctx.script, server)
    scf = _Scf(ctx, provider_site(ctx), server)
    commit = False
    try:
        present = scf.roles(role.name)
        if role.action == "uninstall":
            commit = scf.remove_one(role, "PXE service point")
        elif not present:
            scf.add_saved(role, "PXE service point")
            commit = True
    finally:
        scf.close(commit)


@OPERATIONS.add(
    "multicast/pxe_boot_image",
    lambda s: s.has(
        '-Class SMS_DistributionPoint -Filter ("PackageID=\'" + $packageId + "\'")',
        "Test-CmrbNalPath -NalPath ([string]$record.ServerNALPath)",
        "SMS_SystemResourceList",
    ),
)
def pxe_boot_image(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    action, share = str(s.input("action")), str(s.input("share"))
    server = _Server.of(s)
    package_id = check_package_id(ctx)
    records = [
        r
        for r in site.dp_records
        if r["PackageID"] == package_id and server.nal(r["ServerNALPath"], share)
    ]
    if len(records) > 1:
        raise PSError(
            f"Refusing to change {package_id}: {len(records)} distribution point records name "
            f"{share} on {server.display}"
        )
    holder = ctx.lab.host_by_server(server.display)
    if action == "remove":
        if not records:
            raise PSError(
                f"Boot image {package_id} has no {share} distribution point record on "
                f"{server.display}: nothing was changed"
            )
        if not s.has("$records[0].Delete()"):
            raise Unrecognized("a boot image removal without $records[0].Delete()")
        site.dp_records.remove(records[0])
        ctx.lab.record_change(
            holder.name if holder else server.display,
            "distribution point record removed",
            package_id=package_id,
            nal_path=records[0]["ServerNALPath"],
        )
        ctx.result.changed = True
    elif not records:
        resources = [
            r
            for r in wmi.query(
                ctx.lab,
                site,
                "SELECT * FROM SMS_SystemResourceList WHERE RoleName='SMS Distribution Point'",
            )
            if server.nal(r["NALPath"], share)
        ]
        if len(resources) != 1:
            raise PSError(
                f"Expected one {share} distribution point on {server.display}, found "
                f"{len(resources)}; is the PXE service point installed?"
            )
        if s.has("[void]$new.Put()"):
            site.add_dp_record(package_id, resources[0]["NALPath"])
            ctx.lab.record_change(
                holder.name if holder else server.display,
                "distribution point record added",
                package_id=package_id,
                nal_path=resources[0]["NALPath"],
            )
        ctx.result.changed = True
    ctx.result.data = {"PackageID": package_id, "action": action}


# -- WDS -----------------------------------------------------------------------------------------

_SERVER_RANK = {"2008": 0, "2008r2": 1, "2012": 2, "2012r2": 3, "2016": 4, "2019": 5, "2022": 6}


def _rank(host: SimHost) -> int:
    return _SERVER_RANK.get(host.os_version, -1)


def _names(s: Script, var: str) -> list[str]:
    value = s.input(var)
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@OPERATIONS.add(
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


@OPERATIONS.add(
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
    entries = "".join(
        f'<En><S N="Key">{escape(str(k))}</S><S N="Value">{escape(str(v))}</S></En>'
        for k, v in record.items()
    )
    return (
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>'
        f"<DCT>{entries}</DCT></Obj></Objs>"
    )
