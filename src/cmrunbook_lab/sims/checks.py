"""Fleet and site checks (templates/checks/) in the lab: the KB2910552 client check, directly
and from the site's inventory, the KB2586709 site server files, the NT 4.0 pre-check.

A check changes nothing and reports `data.compliance` (lib/compliance.ps1.j2): only
'non-compliant' fails. Registry keys and value names, WMI classes and properties come from the
script, so a wrong one reads nothing (or fails as WMI does), as it would on a real client.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from cmrunbook_lab import psfiles as pf
from cmrunbook_lab import wmi
from cmrunbook_lab.scripts import Context, Operations, PSError, Script, Unrecognized
from cmrunbook_lab.sims.provider import provider_site

OPERATIONS = Operations()

_COMPLIANCE = "function Set-CmrbCompliance"


def _comply(ctx: Context, state: str, message: str) -> None:
    """Set-CmrbCompliance."""
    if not ctx.script.has(_COMPLIANCE, "$CmrbResult.ok = ($State -ne 'non-compliant')"):
        raise Unrecognized("Set-CmrbCompliance is not the function the lab simulates")
    if not isinstance(ctx.result.data, dict):
        ctx.result.data = {}
    ctx.result.data["compliance"] = state
    ctx.result.message = message
    ctx.result.ok = state != "non-compliant"


def _combine(folder: str, name: str) -> str:
    """[System.IO.Path]::Combine."""
    return folder + name if folder.endswith(("\\", "/")) else folder + "\\" + name


# -- client-hotfix-check, over WinRM ------------------------------------------------------------

_REG_CALL = re.compile(
    r"^\$(?P<out>\w+) = Get-CmrbRegistryText -Key \$(?P<key>\w+) -Name (?P<name>'[^']*'|\$\w+)\s*$",
    re.M,
)


def _registry_reads(ctx: Context) -> dict[str, str | None]:
    """Each `$x = Get-CmrbRegistryText -Key $k -Name ...` of the script, read from the registry."""
    s, reg = ctx.script, ctx.host.registry
    if not s.has(
        "function Get-CmrbRegistryText",
        "$item = Get-ItemProperty -LiteralPath $Key -ErrorAction SilentlyContinue",
        "if ($null -eq $item -or $item.PSObject.Properties.Match($Name).Count -eq 0) "
        "{ return $null }",
    ):
        raise Unrecognized("Get-CmrbRegistryText is not the function the lab simulates")
    out: dict[str, str | None] = {}
    for m in _REG_CALL.finditer(s.body):
        key = str(s.input(m["key"]))
        name = m["name"][1:-1] if m["name"].startswith("'") else str(s.input(m["name"][1:]))
        value = reg.get(key, name) if reg.key_exists(key) else None
        out[m["out"]] = None if value is None else str(value)
    return out


@OPERATIONS.add(
    "checks/client_tscore",
    lambda s: s.has("$registryDir = Get-CmrbRegistryText", "foreach ($candidate in $candidates)"),
)
def client_tscore(ctx: Context) -> None:
    s, host = ctx.script, ctx.host
    pf.require(s, pf.VERSION_LIB, *pf.VERSION_LIB)
    file_name = str(s.input("fileName"))
    required = pf.version_tuple(str(s.input("requiredText")))
    if required is None:
        raise PSError(f'Cannot convert value "{s.input("requiredText")}" to type "System.Version".')
    reads = _registry_reads(ctx)
    client_version, registry_dir = reads.get("clientVersion"), reads.get("registryDir")
    candidates = [(registry_dir, "registry")] if registry_dir else []
    candidates += [(host.expand_env(str(d)), "fallback") for d in s.input("clientDirs")]
    data: dict[str, Any] = {
        "compliance": "unknown",
        "file": file_name,
        "required": pf.vstr(required),
        "path": None,
        "version": None,
        "client_dir": None,
        "client_dir_source": None,
        "client_version": client_version,
        "searched": [],
    }
    ctx.result.data = data
    seen: set[str] = set()
    check = None
    for folder, source in candidates:
        key = folder.rstrip("\\").lower()
        if key in seen:
            continue
        seen.add(key)
        path = _combine(folder, file_name)
        data["searched"].append(path)
        result = pf.test_file_version(host.fs, path, required)
        if result["status"] != "missing":
            check = result
            data["client_dir"], data["client_dir_source"] = folder, source
            break
    note = f" (client version {client_version})" if client_version else ""
    req = pf.vstr(required)
    if check is None:
        _comply(
            ctx,
            "unknown",
            f"{file_name} was not found in {'; '.join(data['searched'])}"
            f"{note}: is the ConfigMgr client installed? Set client_dirs if it lives "
            "elsewhere.",
        )
        return
    data["path"], data["version"] = check["path"], check["version"]
    where = f"{file_name} is {check['version']} ({check['path']})"
    if check["status"] == "ok":
        _comply(
            ctx,
            "compliant",
            f"{where}, at least {req}: the KB2910552 client update is installed{note}.",
        )
    elif check["status"] == "older":
        _comply(
            ctx,
            "non-compliant",
            f"{where}, older than {req}: install the KB2910552 client update on this client{note}.",
        )
    else:
        _comply(
            ctx, "unknown", f"{file_name} at {check['path']} has no readable file version{note}."
        )


# -- client-hotfix-check, from the SMS Provider -------------------------------------------------


def _dmtf_text(value: str) -> str:
    """[Management.ManagementDateTimeConverter]::ToDateTime(...).ToString('yyyy-MM-dd HH:mm')."""
    try:
        return datetime.strptime(value[:14], "%Y%m%d%H%M%S").strftime("%Y-%m-%d %H:%M")
    except ValueError as exc:
        raise PSError("Specified argument was out of the range of valid values.") from exc


@OPERATIONS.add(
    "checks/client_tscore_inventory",
    lambda s: s.has(
        "$netbiosName = $clientName",
        "foreach ($system in $systems)",
        # The lines that decide, as client_tscore_inventory decides below.
        "if ($null -eq $lowest -or [version]$entry.version -lt [version]$lowest.version)",
        "if (Test-CmrbVersionAtLeast -Version $lowest.version -Required $required) {"
        " Set-CmrbCompliance -State 'compliant'",
    ),
)
def client_tscore_inventory(ctx: Context) -> None:
    s = ctx.script
    pf.require(s, pf.VERSION_LIB, "ConvertTo-CmrbVersion", "Test-CmrbVersionAtLeast")
    site = provider_site(ctx)
    client = str(s.input("clientName"))
    file_name = str(s.input("fileName"))
    required = pf.version_tuple(str(s.input("requiredText"))) or (0,)
    netbios = client
    if not re.fullmatch(r"\d+(\.\d+){3}", client) and "." in client:
        netbios = client.split(".")[0]
    data: dict[str, Any] = {
        "compliance": "unknown",
        "client": netbios,
        "site": site.code,
        "file": file_name,
        "required": pf.vstr(required),
        "source": "site inventory",
        "records": [],
        "client_version": None,
        "os": None,
        "files": [],
        "path": None,
        "version": None,
        "last_software_scan": None,
    }
    ctx.result.data = data
    systems = wmi.run_call(
        ctx.lab, site, s, wmi.call_after(s, "$systems = @("), {"$netbiosName": netbios}
    )
    current = [x for x in systems if x.get("Obsolete") != 1]
    systems = current or systems
    if not systems:
        _comply(
            ctx,
            "unknown",
            f"No SMS_R_System record named {netbios} in site {site.code}: the "
            "client is not discovered there, or has another name.",
        )
        return
    files_call = wmi.call_after(s, "foreach ($system in $systems)")
    scan_call = wmi.call_after(s, "$scan = @(")
    found: list[dict[str, Any]] = []
    for system in systems:
        rid = str(int(system.get("ResourceId") or 0))
        data["records"].append(
            {
                "resource_id": rid,
                "name": str(system.get("Name")),
                "client_version": str(system.get("ClientVersion") or ""),
                "os": str(system.get("OperatingSystemNameandVersion") or ""),
            }
        )
        if data["client_version"] is None and system.get("ClientVersion"):
            data["client_version"] = str(system["ClientVersion"])
            data["os"] = str(system.get("OperatingSystemNameandVersion") or "")
        env = {"$resourceId": rid, "$fileName": file_name}
        for f in wmi.run_call(ctx.lab, site, s, files_call, env):
            text = str(f.get("FileVersion") or "")
            parsed = pf.version_tuple(text)
            entry = {
                "path": str(f.get("FilePath") or "") + str(f.get("FileName") or ""),
                "folder": str(f.get("FilePath") or ""),
                "version_text": text,
                "version": pf.vstr(parsed) if parsed else None,
            }
            data["files"].append(entry)
            found.append(entry)
        try:
            scan = wmi.run_call(ctx.lab, site, s, scan_call, env)
            if scan:
                # The script reads `$lastScan.<Property>`: one the class lacks fails (StrictMode).
                wmi.check_reads(s.body, "lastScan", "SMS_G_System_LastSoftwareScan", site.version)
                if scan[0].get("LastScanDate"):
                    data["last_software_scan"] = _dmtf_text(str(scan[0]["LastScanDate"]))
        except PSError:
            data["last_software_scan"] = None  # the script's catch
    lowest = _deciding_copy(found)
    about = f" (client version {data['client_version']}, {data['os']})"
    scan_note = (
        f", software inventory of {data['last_software_scan']}"
        if data["last_software_scan"]
        else ""
    )
    req = pf.vstr(required)
    if not found:
        _comply(
            ctx,
            "unknown",
            f"{netbios}: {file_name} is not in the site's software inventory"
            f"{about}; the client version alone cannot prove the KB2910552 client update "
            f"(hotfixes often leave it unchanged). Inventory {file_name} or enable WinRM on "
            "the client.",
        )
    elif lowest is None:
        _comply(
            ctx,
            "unknown",
            f"{netbios}: the inventoried {file_name} has no readable file version{about}.",
        )
    else:
        data["path"], data["version"] = lowest["path"], lowest["version"]
        what = (
            f"{netbios}: inventoried {file_name} is {lowest['version']} "
            f"({lowest['path']}{scan_note})"
        )
        if pf.at_least(lowest["version"], required):
            _comply(
                ctx,
                "compliant",
                f"{what}, at least {req}: the KB2910552 client update is installed{about}.",
            )
        else:
            _comply(
                ctx,
                "non-compliant",
                f"{what}, older than {req}: install the KB2910552 "
                f"client update on this client{about}.",
            )


def _deciding_copy(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The inventoried copy that decides, as both site-side templates choose it: the lowest
    readable version in the client folder (...\\CCM\\), else the lowest readable anywhere."""
    readable = [e for e in found if e["version"] is not None]
    chosen = [e for e in readable if re.search(r"\\CCM\\?$", e["folder"], re.I)] or readable
    lowest = None
    for entry in chosen:
        if lowest is None or pf.text_key(entry["version"]) < pf.text_key(lowest["version"]):
            lowest = entry
    return lowest


_BLOCKS_CALL = re.compile(r"Get-CmrbWmiBlocks -Query (?=[('])")


def _block_queries(s: Script) -> list[str]:
    """The string expression of each `Get-CmrbWmiBlocks -Query ...` call, in script order."""
    out = []
    for m in _BLOCKS_CALL.finditer(s.body):
        if s.body[m.end()] == "(":
            out.append("(" + wmi.balanced(s.body, m.end()) + ")")
        else:
            quoted = re.match(r"'(?:[^']|'')*'", s.body[m.end() :])
            assert quoted is not None
            out.append(quoted.group())
    return out


@OPERATIONS.add(
    "checks/client_tscore_site",
    lambda s: s.has(
        "function Get-CmrbWmiBlocks",
        "$searcher.Options.BlockSize = $blockSize",
        "foreach ($key in $records.Keys)",
    ),
)
def client_tscore_site(ctx: Context) -> None:
    """Every client of the site in one command: SMS_R_System, the inventoried file and the
    baseline's compliance states, read in blocks (the block size must be a positive number, as
    EnumerationOptions.BlockSize). A name's records and its verdict are decided as the script's
    deciding lines say (checked first), then computed here."""
    s = ctx.script
    pf.require(s, pf.VERSION_LIB, "ConvertTo-CmrbVersion", "Test-CmrbVersionAtLeast")
    _needs(s, *_SITE_DECIDING_LINES)
    site = provider_site(ctx)
    file_name = str(s.input("fileName"))
    required = pf.version_tuple(str(s.input("requiredText"))) or (0,)
    baseline_id = str(s.input("baselineUniqueId") or "")
    block = s.input("blockSize")
    if not isinstance(block, int) or block < 1:
        raise PSError('Exception setting "BlockSize": the value must be greater than zero.')
    queries = _block_queries(s)
    if len(queries) != 3:
        raise Unrecognized("expected three Get-CmrbWmiBlocks queries")
    env = {"$fileName": file_name, "$baselineUniqueId": baseline_id}
    records: dict[str, list[dict[str, Any]]] = {}
    for system in wmi.query(ctx.lab, site, wmi.concat(queries[0], env)):
        records.setdefault(str(system.get("Name") or "").lower(), []).append(system)
    files: dict[int, list[dict[str, Any]]] = {}
    for f in wmi.query(ctx.lab, site, wmi.concat(queries[1], env)):
        parsed = pf.version_tuple(str(f.get("FileVersion") or ""))
        files.setdefault(int(f.get("ResourceID") or 0), []).append(
            {
                "folder": str(f.get("FilePath") or ""),
                "path": str(f.get("FilePath") or "") + str(f.get("FileName") or ""),
                "version": pf.vstr(parsed) if parsed else None,
            }
        )
    states: dict[int, str] = {}
    if baseline_id:
        for reported in wmi.query(ctx.lab, site, wmi.concat(queries[2], env)):
            rid = int(reported.get("ResourceID") or 0)
            value = int(reported.get("ComplianceState") or 0)
            if value == 2:
                states[rid] = "non-compliant"
            elif value == 1 and rid not in states:
                states[rid] = "compliant"
            elif value != 1 and states.get(rid) != "non-compliant":
                states[rid] = "other"
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, systems in records.items():
        systems = [x for x in systems if x.get("Obsolete") != 1] or systems
        ids = [int(x.get("ResourceId") or 0) for x in systems]
        lowest = _deciding_copy([e for i in ids for e in files.get(i, [])])
        client_version = next(
            (str(x["ClientVersion"]) for x in systems if x.get("ClientVersion")), ""
        )
        if lowest is None:
            row = ["unknown", "", ""]
        else:
            state = "compliant" if pf.at_least(lowest["version"], required) else "non-compliant"
            row = [state, lowest["version"], lowest["path"]]
        baseline = _baseline_state([states.get(i, "") for i in ids])
        decided_by = "software inventory"
        if baseline == "non-compliant":
            row[0], decided_by = baseline, "baseline compliance state"
        groups.setdefault((*row, client_version, decided_by, baseline), []).append(key)
    ctx.result.data = {
        "site": site.code,
        "file": file_name,
        "required": pf.vstr(required),
        "source": "site inventory",
        "baseline": baseline_id,
        "groups": [[*row, "\n".join(names)] for row, names in groups.items()],
    }
    ctx.result.message = f"site {site.code}: {len(records)} clients read from the SMS Provider"


#: The lines of client_tscore_site.ps1.j2 that decide, as `client_tscore_site` decides: a
#: name's current records over its obsolete ones, the lowest readable copy in the client folder
#: (else anywhere) over all of them, and the baseline's state deciding only towards
#: non-compliant (a compliant state never decides: it cannot show the file was found).
_SITE_DECIDING_LINES = (
    "[void]$records[$key].Add(@{ id = [string][uint32]$system.ResourceId; "
    "Obsolete = $system.Obsolete;",
    "$systems = @($records[$key]) $current = @($systems | Where-Object { $_.Obsolete -ne 1 }) "
    "if ($current.Count -gt 0) { $systems = $current }",
    "foreach ($system in $systems) { if ($files.ContainsKey($system.id)) { $found += "
    "@($files[$system.id] | Where-Object { $null -ne $_.version }) }",
    "$baselineStates += [string]$states[$system.id]",
    r"$chosen = @($found | Where-Object { $_.folder -match '\\CCM\\?$' })",
    "if ($null -eq $lowest -or $entry.version -lt $lowest.version)",
    "elseif (Test-CmrbVersionAtLeast -Version $lowest.version -Required $required) {"
    " $row = @('compliant'",
    "if ($value -eq 2) { $states[$id] = 'non-compliant' } elseif ($value -eq 1 -and -not "
    "$states.ContainsKey($id)) { $states[$id] = 'compliant' } elseif ($value -ne 1 -and "
    "$states[$id] -ne 'non-compliant') { $states[$id] = 'other' }",
    "if ($baselineStates -contains 'non-compliant') { $baseline = 'non-compliant' } elseif "
    "(@($baselineStates | Where-Object { $_ -ne 'compliant' }).Count -eq 0) { $baseline = "
    "'compliant' }",
    "if ($baseline -eq 'non-compliant') { $row[0] = $baseline $decidedBy = 'baseline "
    "compliance state' }",
    "$row += @($clientVersion, $decidedBy, $baseline)",
    "$groupKey = [string]::Join([char]10, $row)",
    "$CmrbResult.data.groups += ,($group.row + @([string]::Join([char]10, "
    "$group.names.ToArray())))",
)


def _baseline_state(states: list[str]) -> str:
    """A name's baseline state over its records: non-compliant if any is, compliant only if
    every one is, else '' (no verdict: the inventory decides)."""
    if "non-compliant" in states:
        return "non-compliant"
    return "compliant" if all(s == "compliant" for s in states) else ""


# -- site-hotfix-check ----------------------------------------------------------------------------


@OPERATIONS.add(
    "checks/site_ts_files",
    lambda s: s.has("foreach ($folder in $folders)", "foreach ($name in $files)"),
)
def site_ts_files(ctx: Context) -> None:
    s, host = ctx.script, ctx.host
    pf.require(s, pf.VERSION_LIB, *pf.VERSION_LIB)
    files = [str(f) for f in s.input("files")]
    required = pf.version_tuple(str(s.input("requiredText"))) or (0,)
    install_dir = str(s.input("installDir") or "")
    release = s.input("release")
    data: dict[str, Any] = {
        "compliance": "unknown",
        "required": pf.vstr(required),
        "release": release,
        "folders": [],
        "files": [],
    }
    ctx.result.data = data
    problems: list[str] = []
    present = 0
    for folder in s.input("folders"):
        folder_path = host.expand_env(pf.expand_path(folder, install_dir))
        data["folders"].append(folder_path)
        for name in files:
            check = pf.test_file_version(host.fs, _combine(folder_path, name), required)
            data["files"].append(check)
            if check["status"] != "missing":
                present += 1
            if check["status"] == "older":
                problems.append(f"{check['path']} is {check['version']}")
            elif check["status"] != "ok":
                problems.append(f"{check['path']} is {check['status']}")
    note = ""
    if release and not re.search("SP2", str(release), re.I):
        note = (
            f" The inventory gives this site release {release}: KB2586709 needs ConfigMgr 2007 "
            "SP2 first."
        )
    req = pf.vstr(required)
    if present == 0:
        _comply(
            ctx,
            "unknown",
            f"None of {', '.join(files)} is in {'; '.join(data['folders'])}: "
            f"set osd_bin_dirs to the OSD bin folders of this site server.{note}",
        )
    elif problems:
        _comply(
            ctx,
            "non-compliant",
            f"KB2586709 is not installed: {'; '.join(problems)} (need "
            f"{req} or later). Install SCCM2007-SP2-2586709-X86-ENU.msi on the primary site "
            f"server.{note}",
        )
    else:
        _comply(
            ctx,
            "compliant",
            f"{', '.join(files)} are {req} or later in "
            f"{' and '.join(data['folders'])}: KB2586709 is installed.",
        )


# -- nt4-precheck ------------------------------------------------------------------------------


def _nt4_add(
    data: dict[str, Any], found: dict[str, dict[str, Any]], system: dict[str, Any], matched_by: str
) -> None:
    """Add-CmrbNt4."""
    if system.get("Obsolete") == 1:
        data["obsolete_skipped"] += 1
        return
    rid = str(int(system.get("ResourceId") or 0))
    if rid in found:
        found[rid]["matched_by"].append(matched_by)
        return
    found[rid] = {
        "name": str(system.get("Name")),
        "resource_id": rid,
        "os": str(system.get("OperatingSystemNameandVersion") or ""),
        "client_version": str(system.get("ClientVersion") or ""),
        "matched_by": [matched_by],
    }


def _needs(s: Script, *snippets: str) -> None:
    """The script must hold these lines (whitespace aside), or it is not what the lab simulates."""
    if not s.has(*snippets):
        raise Unrecognized("the script's deciding lines are not the ones the lab simulates")


@OPERATIONS.add(
    "checks/nt4_clients",
    lambda s: s.has("function Add-CmrbNt4", "foreach ($pattern in $osPatterns)"),
)
def nt4_clients(ctx: Context) -> None:
    s = ctx.script
    _needs(s, "if ($System.Obsolete -eq 1)", "$found[$id] = @{")
    site = provider_site(ctx)
    patterns = [str(p) for p in s.input("osPatterns")]
    build = s.input("buildNumber")
    collection_id = s.input("collectionId")
    limit = int(s.input("listLimit"))
    data: dict[str, Any] = {
        "compliance": "unknown",
        "site": site.code,
        "collection_id": collection_id,
        "collection_name": None,
        "os_patterns": patterns,
        "build": build,
        "computers": [],
        "obsolete_skipped": 0,
    }
    ctx.result.data = data
    found: dict[str, dict[str, Any]] = {}
    by_pattern = wmi.call_after(s, "foreach ($pattern in $osPatterns)")
    for pattern in patterns:
        for system in wmi.run_call(ctx.lab, site, s, by_pattern, {"$pattern": pattern}):
            _nt4_add(data, found, system, f"OS like {pattern}")
    if build:
        os_call = wmi.call_after(s, "if ($buildNumber)")
        by_id = wmi.call_after(s, "$id = [string][uint32]$os.ResourceID")
        for os_row in wmi.run_call(ctx.lab, site, s, os_call, {"$buildNumber": build}):
            rid = str(int(os_row.get("ResourceID") or 0))
            for system in wmi.run_call(ctx.lab, site, s, by_id, {"$id": rid}):
                _nt4_add(data, found, system, f"build {build}")
    scope = f"site {site.code}"
    if collection_id:
        if not re.fullmatch(r"[A-Za-z0-9]{8}", str(collection_id)):
            raise PSError(f"Not a ConfigMgr collection ID: {collection_id}")
        env = {"$collectionId": collection_id}
        colls = wmi.run_call(ctx.lab, site, s, wmi.call_after(s, "$collection = @("), env)
        if not colls:
            raise PSError(f"No collection {collection_id} in site {site.code}")
        data["collection_name"] = str(colls[0].get("Name"))
        members = {
            str(int(m.get("ResourceID") or 0))
            for m in wmi.run_call(ctx.lab, site, s, wmi.call_after(s, "$members = @{}"), env)
        }
        found = {k: v for k, v in found.items() if k in members}
        scope = f"collection {collection_id} ({data['collection_name']}) of site {site.code}"
    computers = sorted(found.values(), key=lambda c: c["name"].lower())
    data["computers"] = computers
    if not computers:
        _comply(ctx, "compliant", f"No Windows NT 4.0 computer in {scope}.")
        return
    names = [c["name"] for c in computers]
    shown = ", ".join(names)
    if len(names) > limit:
        shown = ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    _comply(
        ctx,
        "non-compliant",
        f"{len(computers)} Windows NT 4.0 computer(s) in {scope}: "
        f"{shown}. The OSD Feature Pack cannot upgrade Windows NT 4.0 (KB930011, not "
        "supported): do not target them.",
    )
